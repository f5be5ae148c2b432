"""A task's state machine in one table: (status, what happened) → new status and effects.

Every event the store applies to a task in memory is first named as a ``Step`` of one
``EventKind``; ``transition`` looks the pair up, and the store sets the new status (if any) and
applies the effects in order. A pair missing from the table changes no status and has no effect.

Run events reach this table only when they changed their run (``RunBook`` fences off stale
attempts and repeats first), so a replayed or redelivered event never makes a step twice.

One-shot tasks only ever hold one-shot statuses and scheduled tasks only schedule statuses (plus
``cancelled``), so the status alone says which kind of task it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal, NamedTuple, get_args

from proto import cron, events, schedules
from proto.records import RunRecord, TaskRecord
from proto.runs import OutcomeStatus
from proto.tasks import FINAL_STATUSES, TaskStatus, TaskType

EventKind = Literal[
    # the TASKS stream (user commands)
    "cancel",
    "delete",
    "pause",
    "resume",
    "trigger",
    # the scheduler's bookkeeping
    "schedule_updated",
    "schedule_completed",
    "slot_skipped",
    "slots_missed",
    # a run of the task changed
    "run_queued",
    "run_started",
    "run_will_retry",
    "run_succeeded",
    "run_failed",
    "run_timed_out",
    "run_cancelled",
    "run_expired",
]

INITIAL_STATUS: dict[TaskType, TaskStatus] = {"immediate": "pending", "delayed": "pending", "scheduled": "active"}
"""Where a submitted task starts (a repeated submission of a known task changes nothing)."""


def submitted_task(event: events.TaskSubmitted, seq: int) -> TaskRecord:
    """The record of a task just submitted: its first status, and when it first runs."""
    spec = event.spec
    task = TaskRecord(
        id=event.task_id,
        name=spec.name,
        kind=spec.kind,
        task_type=spec.task_type,
        status=INITIAL_STATUS[spec.task_type],
        spec=spec,
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
        idempotency_key=event.idempotency_key,
        event_seq=seq,
    )
    if spec.task_type == "delayed" and spec.delay_seconds is not None:
        task.next_run_at = event.occurred_at + timedelta(seconds=spec.delay_seconds)
    elif spec.task_type == "immediate":
        task.next_run_at = event.occurred_at
    else:  # what the scheduler will compute too: the 201 already says when the first fire is
        try:
            task.next_run_at = schedules.next_fire(task.id, spec, event.occurred_at)
        except cron.CronError:  # accepted by an older version: the scheduler will say
            pass
    return task


OUTCOME_KINDS: dict[OutcomeStatus, EventKind] = {
    "succeeded": "run_succeeded",
    "failed": "run_failed",
    "timed_out": "run_timed_out",
    "cancelled": "run_cancelled",
    "expired": "run_expired",
}
"""The step of a run ending with each outcome."""


class Effect(StrEnum):
    """What a transition does besides setting the status (some add follow-ups to the caller's ``Effects``)."""

    NOTE_QUEUED = "note_queued"  # the task's first queue time (its run's, if known)
    NOTE_STARTED = "note_started"  # the task's first start time
    CLEAR_RETRY = "clear_retry"  # no retry is due any more
    AWAIT_RETRY = "await_retry"  # the run's retry time and error show on the task
    RECORD_OUTCOME = "record_outcome"  # the run's result, error, finish time and duration; no timers left
    RECORD_CANCEL = "record_cancel"  # finished now, error "cancelled" with the reason; no timers left
    RECORD_COMPLETION = "record_completion"  # finished now; no next fire
    CLEAR_NEXT_RUN = "clear_next_run"  # no next fire while paused
    STOP_RUNS = "stop_runs"  # runs not started end cancelled now; running ones are asked to stop
    CANCEL_RUN = "cancel_run"  # the step's run ends cancelled now: it must never run
    KILL_RUN = "kill_run"  # whoever holds the step's run is asked to stop
    KILL_RUNNING = "kill_running"  # running runs are asked to stop (unless the delete says not to)
    FORGET = "forget"  # memory, KV and the catalog drop the task; a tombstone remembers it
    WAKE = "wake"  # waiters on the task look again


class Transition(NamedTuple):
    """The new status (None: it stays) and the effects, applied in order after it is set."""

    to: TaskStatus | None
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class Step:
    """One event as the task's state machine sees it, with what its effects need."""

    kind: EventKind
    at: datetime
    run: RunRecord | None = None
    """The run that changed (run steps)."""
    reason: str = ""
    """Why the task is cancelled (``cancel``)."""
    kill_running: bool = True
    """Whether running runs are asked to stop (``delete``)."""


STATUSES: frozenset[TaskStatus] = frozenset(get_args(TaskStatus))
ONE_SHOT_WAITING: frozenset[TaskStatus] = frozenset({"pending", "retrying"})
"""A one-shot task between runs: a queued run moves it on."""
ONE_SHOT_IN_PROGRESS: frozenset[TaskStatus] = ONE_SHOT_WAITING | {"queued", "running"}
SCHEDULE_LIVE: frozenset[TaskStatus] = frozenset({"active", "paused"})
NOT_FINAL: frozenset[TaskStatus] = STATUSES - FINAL_STATUSES


def _each(statuses: frozenset[TaskStatus], kind: EventKind, transition: Transition) -> dict:
    return {(status, kind): transition for status in statuses}


TRANSITIONS: dict[tuple[TaskStatus, EventKind], Transition] = {
    # A one-shot task: pending → queued → running → its run's outcome, retrying between attempts.
    **_each(ONE_SHOT_WAITING, "run_queued", Transition("queued", (Effect.CLEAR_RETRY, Effect.NOTE_QUEUED))),
    # A start notes the queue time too: the scheduler's queued event can reach the store after it.
    **_each(ONE_SHOT_IN_PROGRESS, "run_started", Transition("running", (Effect.NOTE_QUEUED, Effect.NOTE_STARTED))),
    **_each(ONE_SHOT_IN_PROGRESS, "run_will_retry", Transition("retrying", (Effect.AWAIT_RETRY,))),
    **{
        (status, kind): Transition(outcome, (Effect.RECORD_OUTCOME,))
        for status in ONE_SHOT_IN_PROGRESS
        for outcome, kind in OUTCOME_KINDS.items()
    },
    # Anywhere else a queued run only notes the first queue time (a schedule's fires run on
    # after it completed: completing means no more fires, not fewer runs).
    **_each(STATUSES - ONE_SHOT_WAITING - {"cancelled"}, "run_queued", Transition(None, (Effect.NOTE_QUEUED,))),
    **_each(SCHEDULE_LIVE, "run_started", Transition(None, (Effect.NOTE_QUEUED,))),  # (a start overtook it)
    # A schedule: active ⇄ paused, until the scheduler completes it.
    ("active", "pause"): Transition("paused", (Effect.CLEAR_NEXT_RUN,)),
    ("paused", "resume"): Transition("active"),
    **_each(SCHEDULE_LIVE, "schedule_completed", Transition("completed", (Effect.RECORD_COMPLETION, Effect.WAKE))),
    # Cancelling ends whatever is not final; a final task stays as it ended.
    **_each(NOT_FINAL, "cancel", Transition("cancelled", (Effect.RECORD_CANCEL, Effect.WAKE, Effect.STOP_RUNS))),
    # A cancelled task lets no run go on: one queued just before the cancel reached the
    # scheduler ends at once; one whose runner checked just before the cancel is killed.
    ("cancelled", "run_queued"): Transition(None, (Effect.CANCEL_RUN, Effect.KILL_RUN)),
    ("cancelled", "run_started"): Transition(None, (Effect.KILL_RUN,)),
    # Deleting forgets a task in any status.
    **_each(STATUSES, "delete", Transition(None, (Effect.KILL_RUNNING, Effect.FORGET, Effect.WAKE))),
}

STAY = Transition(None)
"""A pair the table does not list: nothing changes."""


def transition(status: TaskStatus, kind: EventKind) -> Transition:
    """What a step of ``kind`` does to a task in ``status``."""
    return TRANSITIONS.get((status, kind), STAY)


def task_event_step(
    event: events.TaskCancelled
    | events.TaskDeleted
    | events.SchedulePaused
    | events.ScheduleResumed
    | events.ScheduleTriggered,
) -> Step:
    """The step of a TASKS-stream event (other than the submission, which creates the task)."""
    match event:
        case events.TaskCancelled():
            return Step("cancel", event.occurred_at, reason=event.reason)
        case events.TaskDeleted():
            return Step("delete", event.occurred_at, kill_running=event.cancel_running)
        case events.SchedulePaused():
            return Step("pause", event.occurred_at)
        case events.ScheduleResumed():
            return Step("resume", event.occurred_at)
        case events.ScheduleTriggered():
            return Step("trigger", event.occurred_at)


def schedule_event_step(event: events.ScheduleEvent) -> Step:
    """The step of a scheduler bookkeeping event."""
    match event:
        case events.ScheduleUpdated():
            return Step("schedule_completed" if event.state == "completed" else "schedule_updated", event.occurred_at)
        case events.SlotSkipped():
            return Step("slot_skipped", event.occurred_at)
        case events.SlotsMissed():
            return Step("slots_missed", event.occurred_at)
