"""How events move tasks: each event applied to a task in memory is a step of its state machine.

The table in ``transitions`` says what a step does to a task in each status; this module names
each event's step, looks it up, sets the status and applies the effects (``_apply`` says what
each one does). For a run event ``RunBook`` applies the run's side first: only a run that really
changed makes a step, so replays and stale attempts never reach the table.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from proto import events, runs
from proto.control import CancelRun
from proto.records import RunRecord, TaskRecord
from proto.runs import RunError
from proto.tasks import FINAL_STATUSES, TaskStatus
from services.common.clock import ms_between
from services.store import schedule_view, transitions
from services.store.effects import Effects
from services.store.run_book import NOT_STARTED
from services.store.transitions import OUTCOME_KINDS, Effect, Step

if TYPE_CHECKING:
    from services.store.state import StoreState

TOMBSTONES_KEPT = 100_000
NO_LONGER_ACTIVE = "task no longer active"
OUTCOME_STEPS = frozenset(OUTCOME_KINDS.values())


class TaskLifecycle:
    """Applies task, schedule and run events to a ``StoreState``: idempotent, counted once."""

    def __init__(self, state: StoreState) -> None:
        self.state = state

    def apply_task_event(self, event: events.TaskEvent, seq: int) -> Effects:
        """Apply a TASKS-stream event with stream sequence ``seq``."""
        effects = Effects()
        if isinstance(event, events.TaskSubmitted):
            self._submitted(event, seq)
            return effects
        task = self.state.tasks.get(event.task_id)
        if task is None:
            if isinstance(event, events.TaskDeleted) and self.state.is_retained(event.task_id):
                self._forget_written(event.task_id)  # finished and written: only KV and catalog have it
                effects.wake.add(event.task_id)
            return effects
        if task.event_seq >= seq:
            return effects
        task.event_seq = seq
        self._touch(task, event.occurred_at)
        self._step(task, transitions.task_event_step(event), effects)
        return effects

    def apply_schedule_event(self, event: events.ScheduleEvent) -> Effects:
        """Apply a scheduler bookkeeping event."""
        effects = Effects()
        task = self.state.tasks.get(event.task_id)
        if task is None:
            effects.unknown_task = not self._known_elsewhere(event.task_id)
            return effects
        match event:
            case events.ScheduleUpdated():
                view = (event.next_run_at, event.fired_count, event.missed_count, event.skipped_count)
                schedule_view.apply_view(task, *view, paused=event.state == "paused")
            case events.SlotSkipped():
                self.state.schedule_ledgers.add(task.id, schedule_view.skipped_entry(event))
            case events.SlotsMissed():
                self.state.schedule_ledgers.add(task.id, schedule_view.missed_entry(event))
        self._step(task, transitions.schedule_event_step(event), effects)
        self._touch(task, event.occurred_at)
        return effects

    def apply_run_event(self, event: runs.RunEvent) -> Effects:
        """Apply a run event; stale and repeated events change nothing."""
        effects = Effects()
        task = self.state.tasks.get(event.task_id)
        if task is None:
            effects.unknown_task = not self._known_elsewhere(event.task_id)
            if not effects.unknown_task and isinstance(event, (runs.RunQueued, runs.RunStarted)):
                # A finished (or deleted) task's run must not go on: whoever holds it stops.
                effects.cancels.append(CancelRun(task_id=event.task_id, run_id=event.run_id, reason=NO_LONGER_ACTIVE))
            return effects
        match event:
            case runs.RunQueued():
                step = self.state.run_book.queued(task, event, effects)
                self._queue_view(task, event)
            case runs.RunStarted():
                step = self.state.run_book.started(task, event, effects)
            case runs.RunFinished():
                step = self.state.run_book.finished(task, event)
            case runs.RunCancelRequested():
                step = self.state.run_book.cancel_requested(task, event, effects)
        if step is not None:
            self._run_step(task, step, effects)
            if step.kind in OUTCOME_STEPS:
                effects.wake.add(task.id)
        early = self.state.run_book.take_early_cancel(task.id, event.run_id)
        if early is not None:  # its run is known now: cancel it as if the events had come in order
            effects.merge(self.apply_run_event(early))
        return effects

    def _submitted(self, event: events.TaskSubmitted, seq: int) -> None:
        if event.task_id in self.state.tombstones or self.state.is_retained(event.task_id):
            return
        task = transitions.submitted_task(event, seq)
        self.state.tasks[task.id] = task
        self.state.uncatalogued[task.id] = task
        self.state.rowless.add(task.id)
        if event.idempotency_key:
            self.state.idempotency[event.idempotency_key] = task.id
        self.state.pending.tasks.add(task.id)

    def _queue_view(self, task: TaskRecord, event: runs.RunQueued) -> None:
        """What a queued event says of the task besides its run: flow control's hold, a cron fire's view,
        and the queue time a start that overtook this event did not carry."""
        run = self.state.run_book.of(task.id)[event.run_id]
        if task.queued_at is None and run.queued_at is not None:
            task.queued_at = run.queued_at
            self.state.pending.tasks.add(task.id)
        # The hold (or its release) is the run's only while it still waits at this attempt: a
        # repeat of it after the start, or one of an older attempt, is stale.
        waiting = run.status == "queued" and run.attempt == event.attempt
        if waiting and task.waiting_reason != event.waiting_reason and task.status not in FINAL_STATUSES:
            task.waiting_reason = event.waiting_reason  # flow control holds it back, or (None) let it go
            self.state.pending.tasks.add(task.id)
        if event.schedule is not None:
            view = event.schedule
            schedule_view.apply_view(task, view.next_run_at, view.fired_count, view.missed_count, view.skipped_count)

    def _run_step(self, task: TaskRecord, step: Step, effects: Effects) -> None:
        """A run of the task changed: step the task, then show it its latest run."""
        if step.kind == "run_started" or step.kind in OUTCOME_STEPS:
            task.waiting_reason = None  # started or ended: admitted, whatever came first
        self._step(task, step, effects)
        self.state.run_book.summarise(task)
        self._touch(task, step.at)

    def _step(self, task: TaskRecord, step: Step, effects: Effects) -> None:
        """Move the task as the transition table says, then apply the transition's effects in order."""
        transition = transitions.transition(task.status, step.kind)
        if transition.to is not None:
            self._set_status(task, transition.to)
        for effect in transition.effects:
            self._apply(effect, task, step, effects)

    def _apply(self, effect: Effect, task: TaskRecord, step: Step, effects: Effects) -> None:
        run = step.run
        match effect:
            case Effect.NOTE_QUEUED:
                assert run is not None  # only run steps note it: the run's queue time (a start carries it too)
                task.queued_at = task.queued_at or run.queued_at
            case Effect.NOTE_STARTED:
                task.started_at = task.started_at or step.at
            case Effect.CLEAR_RETRY:
                task.next_retry_at = None
            case Effect.AWAIT_RETRY:
                assert run is not None
                task.next_retry_at, task.error = run.next_retry_at, run.error
            case Effect.RECORD_OUTCOME:
                assert run is not None
                task.result, task.error, task.finished_at = run.result, run.error, run.finished_at
                task.next_run_at, task.next_retry_at = None, None
                task.duration_ms = ms_between(task.started_at, task.finished_at) if task.started_at else None
            case Effect.RECORD_CANCEL:
                task.finished_at, task.next_run_at, task.next_retry_at = step.at, None, None
                task.error = RunError(type="cancelled", message=step.reason)
            case Effect.RECORD_COMPLETION:
                task.finished_at, task.next_run_at = step.at, None
            case Effect.CLEAR_NEXT_RUN:
                task.next_run_at = None
            case Effect.STOP_RUNS:
                for other in self.state.run_book.of(task.id).values():
                    if other.status in NOT_STARTED:
                        # A queued run's runner will see the cancelled task and drop it; a retry's
                        # timer is dropped by the scheduler. Either way no outcome may follow.
                        self._cancel_now(task, other, step.at, step.reason, effects)
                    elif other.status == "running":
                        effects.cancels.append(CancelRun(task_id=task.id, run_id=other.run_id, reason=step.reason))
            case Effect.CANCEL_RUN:
                assert run is not None
                self._cancel_now(task, run, step.at, NO_LONGER_ACTIVE, effects)
            case Effect.KILL_RUN:
                assert run is not None
                effects.cancels.append(CancelRun(task_id=task.id, run_id=run.run_id, reason=NO_LONGER_ACTIVE))
            case Effect.KILL_RUNNING:
                if step.kill_running:
                    for other in self.state.run_book.of(task.id).values():
                        if other.status == "running":
                            effects.cancels.append(
                                CancelRun(task_id=task.id, run_id=other.run_id, reason="task deleted")
                            )
            case Effect.FORGET:
                self._forget(task)
            case Effect.WAKE:
                effects.wake.add(task.id)

    def _cancel_now(self, task: TaskRecord, run: RunRecord, at: datetime, reason: str, effects: Effects) -> None:
        """End a run no runner holds as cancelled (a final run is counted once, here)."""
        self._run_step(
            task, self.state.run_book.end(run, "cancelled", at, RunError(type="cancelled", message=reason)), effects
        )

    def _forget(self, task: TaskRecord) -> None:
        """A deleted task leaves memory; its records are removed from KV, not written."""
        self.state.run_book.forget(task.id)
        self.state.schedule_ledgers.forget(task.id)
        del self.state.tasks[task.id]
        if task.idempotency_key and self.state.idempotency.get(task.idempotency_key) == task.id:
            del self.state.idempotency[task.idempotency_key]
        self.state.pending.forget_task(task.id)
        self._forget_written(task.id)

    def _forget_written(self, task_id: str) -> None:
        """Forget a task that is no longer in memory: its records go from KV, its row from the catalog."""
        self.state.cache.pop(task_id)
        self.state.uncatalogued.pop(task_id, None)
        self.state.rowless.discard(task_id)
        self.state.uncatalogued_removals.add(task_id)
        self.state.tombstones[task_id] = None
        while len(self.state.tombstones) > TOMBSTONES_KEPT:
            self.state.tombstones.popitem(last=False)
        self.state.pending.removed_tasks.add(task_id)

    def _known_elsewhere(self, task_id: str) -> bool:
        """A task not in memory that was deleted, or finished and written (its events are stale)."""
        return task_id in self.state.tombstones or self.state.is_retained(task_id)

    def _set_status(self, task: TaskRecord, status: TaskStatus) -> None:
        task.status = status
        self.state.pending.tasks.add(task.id)
        self.state.uncatalogued[task.id] = task

    def _touch(self, task: TaskRecord, at: datetime) -> None:
        if at > task.updated_at:
            task.updated_at = at
        self.state.pending.tasks.add(task.id)
