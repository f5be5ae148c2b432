"""The store's state: applying events is idempotent, ordered by attempt, and counted once."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from proto import codec, events, runs
from proto.control import CancelRun
from proto.records import TaskRecord
from proto.runs import RunError
from proto.tasks import TaskSpec
from services.store.state import StoreState
from services.store.writes import Writes, ledger_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TASK = "0195f3a2-7c41-7d3e-9a10-4b2c8e6f1a23"
RUN = runs.run_id_for(TASK, runs.ONCE_SLOT)
CODE = TaskSpec(
    name="calc", task_type="immediate", function_code="def f():\n    return 7\n", function_name="f", max_retries=2
)
HOURLY = TaskSpec(name="hourly", task_type="scheduled", api_url="https://example.com/", cron_expression="0 * * * *")
_ids = itertools.count()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def eid() -> str:
    return f"event-{next(_ids)}"


# --- event builders ----------------------------------------------------------------------------------


def submitted(task_id: str = TASK, spec: TaskSpec = CODE, when: float = 0, key: str | None = None):
    return events.TaskSubmitted(event_id=eid(), occurred_at=at(when), task_id=task_id, spec=spec, idempotency_key=key)


def queued(
    run_id: str = RUN,
    attempt: int = 1,
    retry: int = 0,
    when: float = 1,
    task_id: str = TASK,
    slot: str = runs.ONCE_SLOT,
    scheduled_for: float = 0,
):
    return runs.RunQueued(
        event_id=eid(),
        occurred_at=at(when),
        task_id=task_id,
        run_id=run_id,
        slot=slot,
        scheduled_for=at(scheduled_for),
        attempt=attempt,
        retry=retry,
    )


def started(
    run_id: str = RUN,
    attempt: int = 1,
    when: float = 2,
    task_id: str = TASK,
    runner: str = "runner-a",
    queued_at: float | None = None,
):
    return runs.RunStarted(
        event_id=eid(),
        occurred_at=at(when),
        task_id=task_id,
        run_id=run_id,
        attempt=attempt,
        runner_id=runner,
        queued_at=None if queued_at is None else at(queued_at),
    )


def finished(
    run_id: str = RUN, attempt: int = 1, status: str = "succeeded", when: float = 3, task_id: str = TASK, **fields: Any
):
    if status != "succeeded" and "error" not in fields:
        fields["error"] = RunError(type="exception" if status == "failed" else status, message=status)
    return runs.RunFinished(
        event_id=eid(),
        occurred_at=at(when),
        task_id=task_id,
        run_id=run_id,
        attempt=attempt,
        runner_id="runner-a",
        status=status,
        started_at=at(when - 1),
        **fields,
    )


def cancelled(when: float = 5, task_id: str = TASK):
    return events.TaskCancelled(event_id=eid(), occurred_at=at(when), task_id=task_id, reason="user said stop")


def deleted(when: float = 6, task_id: str = TASK):
    return events.TaskDeleted(event_id=eid(), occurred_at=at(when), task_id=task_id)


def fresh(spec: TaskSpec = CODE, **limits: int) -> StoreState:
    """A state holding one just-submitted task (TASKS sequence 1)."""
    state = StoreState(**limits)
    state.apply_task_event(submitted(spec=spec), seq=1)
    return state


def apply_runs(state: StoreState, *run_events: Any) -> list:
    return [state.apply_run_event(event) for event in run_events]


async def flushed(state: StoreState) -> Writes:
    """A flush that succeeds: the changes taken, then (KV holding them) committed."""
    writes = state.take_writes()
    await state.commit_written(writes, {})
    return writes


def counts(state: StoreState) -> dict[str, int]:
    """Runs per status as stats report them: in progress from memory, finished from the aggregates."""
    return state.runs_by_status()


async def catalogued(state: StoreState) -> dict[str, int]:
    """Tasks per status as the catalog counts them, once it has caught up with memory."""
    await state.sync_catalog()
    return state.catalog.counts("status")


async def snapshot(state: StoreState) -> tuple:
    """Everything an apply may change, comparable."""
    return (
        {task_id: codec.encode(task) for task_id, task in state.tasks.items()},
        {
            task_id: {run_id: codec.encode(run) for run_id, run in task_runs.items()}
            for task_id, task_runs in state.runs.items()
        },
        {task_id: codec.encode(entries) for task_id, entries in state.ledgers.items()},
        counts(state),
        dict(state.metrics.outcomes),
        state.metrics.durations.count,
        state.metrics.lag.count,
        state.metrics.stale_outcomes_rejected,
        await catalogued(state),
    )


# --- submission -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "status", "next_run_at"),
    [
        pytest.param(CODE, "pending", at(0), id="immediate"),
        pytest.param(
            TaskSpec(name="later", task_type="delayed", delay_seconds=60, api_url="https://example.com/"),
            "pending",
            at(60),
            id="delayed",
        ),
        pytest.param(HOURLY, "active", at(3600), id="scheduled"),
    ],
)
async def test_a_submitted_task_is_recorded_with_its_first_status(
    spec: TaskSpec, status: str, next_run_at: Any
) -> None:
    state = fresh(spec)

    task = state.tasks[TASK]
    assert (task.status, task.kind, task.task_type, task.next_run_at) == (
        status,
        spec.kind,
        spec.task_type,
        next_run_at,
    )
    assert task.created_at == task.updated_at == at(0)
    assert await catalogued(state) == {status: 1}


async def test_a_submission_applied_twice_is_recorded_once() -> None:
    state = StoreState()
    event = submitted(key="order-42")

    state.apply_task_event(event, seq=1)
    before = await snapshot(state)
    state.apply_task_event(event, seq=1)

    assert await snapshot(state) == before
    assert state.idempotency == {"order-42": TASK}


# --- one run, start to finish -----------------------------------------------------------------------


def test_a_run_moves_the_task_through_queued_running_and_succeeded() -> None:
    state = fresh()

    state.apply_run_event(queued(when=1))
    assert state.tasks[TASK].status == "queued"
    assert state.runs[TASK][RUN].status == "queued"

    state.apply_run_event(started(when=2))
    assert state.tasks[TASK].status == "running"
    assert state.tasks[TASK].started_at == at(2)
    assert state.runs[TASK][RUN].runner_id == "runner-a"

    effects = state.apply_run_event(finished(when=3, result={"answer": 7}))
    task, run = state.tasks[TASK], state.runs[TASK][RUN]
    assert (task.status, task.result, task.finished_at, task.duration_ms) == ("succeeded", {"answer": 7}, at(3), 1000.0)
    assert (run.status, run.result, run.lag_ms) == ("succeeded", {"answer": 7}, 2000.0)
    assert task.last_run is not None and task.last_run.status == "succeeded"
    assert task.run_count == 1
    assert counts(state) == {"succeeded": 1}
    assert state.metrics.outcomes == {"succeeded": 1}
    assert effects.wake == {TASK}


@pytest.mark.parametrize("status", ["failed", "timed_out", "cancelled", "expired"])
def test_a_final_outcome_without_retry_ends_the_task_with_its_error(status: str) -> None:
    state = fresh()

    apply_runs(state, queued(), started(), finished(status=status))

    task = state.tasks[TASK]
    assert task.status == status
    assert task.error is not None and task.error.message == status
    assert state.metrics.outcomes == {status: 1}


async def test_the_same_run_events_applied_twice_change_nothing_and_count_once() -> None:
    state = fresh()
    sequence = [queued(), started(), finished(result=7)]
    apply_runs(state, *sequence)
    await flushed(state)
    before = await snapshot(state)

    apply_runs(state, *sequence)

    assert await snapshot(state) == before
    assert counts(state) == {"succeeded": 1}
    assert state.metrics.outcomes == {"succeeded": 1}
    assert state.metrics.durations.count == 1 and state.metrics.lag.count == 1
    assert TASK not in state.tasks, "a finished, written task leaves memory"
    assert state.get(TASK).run_count == 1


@pytest.mark.parametrize(
    "order", list(itertools.permutations(["queued", "started", "finished"])), ids=lambda order: "-then-".join(order)
)
def test_run_events_in_any_order_end_in_the_same_state(order: tuple[str, ...]) -> None:
    state = fresh()
    by_name = {"queued": queued(), "started": started(), "finished": finished(result=7)}

    apply_runs(state, *(by_name[name] for name in order))

    task, run = state.tasks[TASK], state.runs[TASK][RUN]
    assert (task.status, task.result, run.status, run.slot) == ("succeeded", 7, "succeeded", runs.ONCE_SLOT)
    assert counts(state) == {"succeeded": 1}
    assert state.metrics.outcomes == {"succeeded": 1}
    assert task.run_count == 1


def test_a_start_before_its_queued_event_still_runs_and_gets_its_slot() -> None:
    state = fresh()

    apply_runs(state, started(when=2), queued(when=1))

    task, run = state.tasks[TASK], state.runs[TASK][RUN]
    assert (task.status, run.status, run.slot, run.queued_at) == ("running", "running", runs.ONCE_SLOT, at(1))
    assert counts(state) == {"running": 1}


def test_a_task_that_ran_before_its_queued_event_arrived_shows_when_it_was_queued() -> None:
    # Given the scheduler's queued event is late (it reached the store before the submission did)
    state = fresh()

    # When the start, carrying the run's queue time, and the outcome are applied first
    apply_runs(state, started(when=2, queued_at=1), finished(when=3))

    # Then the finished task and its run already show when the run was queued
    task, run = state.tasks[TASK], state.runs[TASK][RUN]
    assert (task.status, task.queued_at, run.queued_at) == ("succeeded", at(1), at(1))

    # And the late queued event changes neither
    apply_runs(state, queued(when=1))
    assert (task.status, task.queued_at, state.runs[TASK][RUN].queued_at) == ("succeeded", at(1), at(1))


def test_a_start_without_a_queue_time_leaves_it_to_the_queued_event() -> None:
    state = fresh()

    apply_runs(state, started(when=2))
    assert state.tasks[TASK].queued_at is None, "a start is not its own queue time"

    apply_runs(state, queued(when=1))
    assert state.tasks[TASK].queued_at == at(1)


# --- fencing attempts ---------------------------------------------------------------------------------


def test_an_outcome_of_a_superseded_attempt_is_rejected() -> None:
    # Given attempt 1 started, then its message was redelivered and attempt 2 started
    state = fresh()
    apply_runs(state, queued(), started(attempt=1, when=2), started(attempt=2, when=12, runner="runner-b"))

    # When attempt 1's runner reports late that it failed
    state.apply_run_event(finished(attempt=1, status="failed", when=13))

    # Then that outcome is fenced off and the run stays with attempt 2
    assert state.metrics.stale_outcomes_rejected == 1
    assert (state.tasks[TASK].status, state.runs[TASK][RUN].status) == ("running", "running")
    assert state.runs[TASK][RUN].attempt == 2

    state.apply_run_event(finished(attempt=2, status="succeeded", when=14, result="from attempt 2"))

    task, run = state.tasks[TASK], state.runs[TASK][RUN]
    assert (task.status, task.result, run.attempt, run.runner_id) == ("succeeded", "from attempt 2", 2, "runner-a")
    assert state.metrics.outcomes == {"succeeded": 1}
    assert counts(state) == {"succeeded": 1}


def test_an_outcome_of_a_superseded_attempt_after_the_final_one_is_rejected() -> None:
    state = fresh()
    apply_runs(
        state,
        queued(),
        started(attempt=1),
        started(attempt=2, when=12),
        finished(attempt=2, status="succeeded", when=14, result="ok"),
    )

    state.apply_run_event(finished(attempt=1, status="failed", when=15))

    assert state.metrics.stale_outcomes_rejected == 1
    assert (state.tasks[TASK].status, state.tasks[TASK].result) == ("succeeded", "ok")
    assert state.metrics.outcomes == {"succeeded": 1}


# --- retries --------------------------------------------------------------------------------------------


def test_a_failed_attempt_that_will_retry_leaves_the_task_retrying_until_the_retry_succeeds() -> None:
    state = fresh()
    error = RunError(type="exception", message="ZeroDivisionError")
    apply_runs(
        state,
        queued(),
        started(),
        finished(status="failed", when=3, error=error, will_retry=True, retry=1, retry_at=at(5)),
    )

    task, run = state.tasks[TASK], state.runs[TASK][RUN]
    assert (task.status, task.next_retry_at, task.error) == ("retrying", at(5), error)
    assert (run.status, run.next_retry_at) == ("retrying", at(5))
    assert state.metrics.outcomes == {}  # not final yet
    assert counts(state) == {"retrying": 1}

    state.apply_run_event(queued(attempt=2, retry=1, when=5))
    assert (state.tasks[TASK].status, state.runs[TASK][RUN].status) == ("queued", "queued")
    assert state.tasks[TASK].next_retry_at is None

    state.apply_run_event(started(attempt=2, when=6))
    assert state.tasks[TASK].status == "running"

    state.apply_run_event(finished(attempt=2, when=7, result="second time lucky", retry=1))
    task, run = state.tasks[TASK], state.runs[TASK][RUN]
    assert (task.status, task.result, task.error) == ("succeeded", "second time lucky", None)
    assert (run.status, run.attempt, run.retry) == ("succeeded", 2, 1)
    assert [(a.attempt, a.status) for a in run.attempts] == [(1, "failed"), (2, "succeeded")]
    assert state.metrics.outcomes == {"succeeded": 1}
    assert counts(state) == {"succeeded": 1}
    assert task.run_count == 1


async def test_a_repeated_will_retry_outcome_changes_nothing() -> None:
    state = fresh()
    outcome = finished(status="failed", will_retry=True, retry=1, retry_at=at(5))
    apply_runs(state, queued(), started(), outcome)
    before = await snapshot(state)

    state.apply_run_event(outcome)

    assert await snapshot(state) == before


# --- cancel ----------------------------------------------------------------------------------------------


def test_cancelling_a_task_with_a_queued_run_cancels_both() -> None:
    state = fresh()
    state.apply_run_event(queued())

    effects = state.apply_task_event(cancelled(when=5), seq=2)

    task, run = state.tasks[TASK], state.runs[TASK][RUN]
    assert (task.status, task.finished_at, task.next_run_at) == ("cancelled", at(5), None)
    assert task.error is not None and task.error.type == "cancelled"
    assert run.status == "cancelled"
    assert effects.wake == {TASK}
    assert counts(state) == {"cancelled": 1}
    assert state.metrics.outcomes == {"cancelled": 1}


def test_cancelling_a_task_with_a_running_run_asks_the_runner_to_kill_it() -> None:
    state = fresh()
    apply_runs(state, queued(), started())

    effects = state.apply_task_event(cancelled(when=5), seq=2)

    assert effects.cancels == [CancelRun(task_id=TASK, run_id=RUN, reason="user said stop")]
    assert state.tasks[TASK].status == "cancelled"

    # When the runner reports the kill, the run ends cancelled and the task stays cancelled
    state.apply_run_event(finished(status="cancelled", when=6))
    assert (state.tasks[TASK].status, state.runs[TASK][RUN].status) == ("cancelled", "cancelled")
    assert state.metrics.outcomes == {"cancelled": 1}


async def test_a_cancel_applied_twice_changes_nothing() -> None:
    state = fresh()
    state.apply_run_event(queued())
    event = cancelled()
    state.apply_task_event(event, seq=2)
    before = await snapshot(state)

    effects = state.apply_task_event(event, seq=2)

    assert await snapshot(state) == before
    assert effects.cancels == []


def test_a_run_queued_after_the_cancel_is_cancelled_and_killed() -> None:
    state = fresh()
    state.apply_task_event(cancelled(when=5), seq=2)

    effects = state.apply_run_event(queued(when=6))

    assert state.runs[TASK][RUN].status == "cancelled"
    assert effects.cancels == [CancelRun(task_id=TASK, run_id=RUN, reason="task no longer active")]
    assert state.tasks[TASK].status == "cancelled"
    assert state.metrics.outcomes == {"cancelled": 1}


def test_a_cancelled_task_is_not_cancelled_again_after_it_succeeded() -> None:
    state = fresh()
    apply_runs(state, queued(), started(), finished(result=1))

    effects = state.apply_task_event(cancelled(when=9), seq=2)

    assert state.tasks[TASK].status == "succeeded"
    assert effects.cancels == []


# --- delete ---------------------------------------------------------------------------------------------


async def test_deleting_a_task_removes_everything_and_ignores_its_later_events() -> None:
    state = fresh()
    apply_runs(state, queued(), started())
    state.take_writes()

    effects = state.apply_task_event(deleted(), seq=2)

    assert effects.cancels == [CancelRun(task_id=TASK, run_id=RUN, reason="task deleted")]
    assert TASK not in state.tasks and TASK not in state.runs
    assert await catalogued(state) == {} and len(state.catalog) == 0
    assert counts(state) == {}
    writes = state.take_writes()
    assert writes.removed_tasks == {TASK}
    assert writes.tasks == [] and writes.runs == []

    # Later events of the deleted task are ignored, and known as belonging to a deleted task
    late = state.apply_run_event(finished(when=9))
    again = state.apply_task_event(submitted(), seq=3)
    schedule = state.apply_schedule_event(
        events.ScheduleUpdated(event_id=eid(), occurred_at=at(9), task_id=TASK, state="active")
    )
    assert not late.unknown_task and not schedule.unknown_task and again.cancels == []
    assert TASK not in state.tasks and TASK not in state.runs
    assert not state.take_writes()


def test_an_event_for_a_task_never_seen_is_reported_as_unknown() -> None:
    state = StoreState()

    effects = state.apply_run_event(queued(task_id="0195f3a2-0000-7000-8000-000000000000"))

    assert effects.unknown_task
    assert state.runs == {}


# --- task events are ordered by their stream sequence -----------------------------------------------


def test_pause_and_resume_move_a_schedule_and_a_replayed_pause_is_ignored() -> None:
    state = fresh(HOURLY)
    pause = events.SchedulePaused(event_id=eid(), occurred_at=at(1), task_id=TASK)
    resume = events.ScheduleResumed(event_id=eid(), occurred_at=at(2), task_id=TASK)

    state.apply_task_event(pause, seq=2)
    assert state.tasks[TASK].status == "paused"
    state.apply_task_event(resume, seq=3)
    assert state.tasks[TASK].status == "active"

    state.apply_task_event(pause, seq=2)  # replayed from the stream
    assert state.tasks[TASK].status == "active"
    assert state.tasks[TASK].event_seq == 3


# --- schedules ----------------------------------------------------------------------------------------


def test_schedule_updates_set_the_counters_and_never_move_them_back() -> None:
    state = fresh(HOURLY)
    newer = events.ScheduleUpdated(
        event_id=eid(),
        occurred_at=at(3600),
        task_id=TASK,
        state="active",
        next_run_at=at(7200),
        fired_count=5,
        missed_count=2,
        skipped_count=1,
        last_fire_at=at(3600),
    )
    older = events.ScheduleUpdated(
        event_id=eid(),
        occurred_at=at(1800),
        task_id=TASK,
        state="active",
        next_run_at=at(3600),
        fired_count=3,
        missed_count=1,
        skipped_count=0,
    )

    state.apply_schedule_event(newer)
    state.apply_schedule_event(older)

    task = state.tasks[TASK]
    assert (task.fired_count, task.missed_count, task.skipped_count) == (5, 2, 1)
    assert task.status == "active"


def hourly_fire(hour: int, fired: int) -> runs.RunQueued:
    """The RunQueued of an hourly schedule's fire, carrying where the schedule stands after it."""
    slot = runs.slot_for_fire(at(hour * 3600))
    return runs.RunQueued(
        event_id=eid(),
        occurred_at=at(hour * 3600),
        task_id=TASK,
        run_id=runs.run_id_for(TASK, slot),
        slot=slot,
        scheduled_for=at(hour * 3600),
        schedule=runs.ScheduleView(next_run_at=at((hour + 1) * 3600), fired_count=fired),
    )


def test_a_late_view_of_an_earlier_fire_does_not_move_the_next_fire_back() -> None:
    # Given a schedule planned (next fire 1h) that has since fired at 1h and 2h (next fire 3h)
    state = fresh(HOURLY)
    planned = events.ScheduleUpdated(
        event_id=eid(), occurred_at=at(0), task_id=TASK, state="active", next_run_at=at(3600)
    )
    first_fire, second_fire = hourly_fire(1, fired=1), hourly_fire(2, fired=2)
    state.apply_schedule_event(planned)
    apply_runs(state, first_fire, second_fire)
    assert state.tasks[TASK].next_run_at == at(3 * 3600)

    # When views of earlier moments arrive late (a redelivered update, a fire applied out of order)
    state.apply_schedule_event(planned)
    # Then the schedule still shows its next fire at 3h
    assert state.tasks[TASK].next_run_at == at(3 * 3600)

    state.apply_run_event(first_fire)
    task = state.tasks[TASK]
    assert (task.next_run_at, task.fired_count) == (at(3 * 3600), 2)


def test_a_resumed_schedule_shows_the_next_fire_planned_at_its_resume() -> None:
    # Given a schedule that fired once (next fire 2h), then was paused
    state = fresh(HOURLY)
    state.apply_run_event(hourly_fire(1, fired=1))
    state.apply_task_event(events.SchedulePaused(event_id=eid(), occurred_at=at(4000), task_id=TASK), seq=2)
    state.apply_schedule_event(
        events.ScheduleUpdated(event_id=eid(), occurred_at=at(4000), task_id=TASK, state="paused", fired_count=1)
    )
    assert state.tasks[TASK].next_run_at is None

    # When it is resumed: the scheduler's view counts no new fire, only a next one
    state.apply_task_event(events.ScheduleResumed(event_id=eid(), occurred_at=at(5000), task_id=TASK), seq=3)
    state.apply_schedule_event(
        events.ScheduleUpdated(
            event_id=eid(), occurred_at=at(5000), task_id=TASK, state="active", next_run_at=at(7200), fired_count=1
        )
    )

    # Then the next fire shows again
    assert (state.tasks[TASK].status, state.tasks[TASK].next_run_at) == ("active", at(7200))

    # And the pause's view, redelivered after the resume's, leaves the next fire alone
    state.apply_schedule_event(
        events.ScheduleUpdated(event_id=eid(), occurred_at=at(4000), task_id=TASK, state="paused", fired_count=1)
    )
    assert (state.tasks[TASK].status, state.tasks[TASK].next_run_at) == ("active", at(7200))


def test_a_schedule_update_to_completed_completes_the_task() -> None:
    state = fresh(HOURLY)

    effects = state.apply_schedule_event(
        events.ScheduleUpdated(event_id=eid(), occurred_at=at(10), task_id=TASK, state="completed", fired_count=3)
    )

    task = state.tasks[TASK]
    assert (task.status, task.finished_at, task.next_run_at, task.fired_count) == ("completed", at(10), None, 3)
    assert effects.wake == {TASK}


def test_skipped_and_missed_slots_go_to_the_ledger_once() -> None:
    state = fresh(HOURLY)
    skipped = events.SlotSkipped(
        event_id=eid(),
        occurred_at=at(3600),
        task_id=TASK,
        scheduled_for=at(3600),
        reason="previous run still running (overlap forbid)",
    )
    missed = events.SlotsMissed(
        event_id=eid(),
        occurred_at=at(4 * 3600),
        task_id=TASK,
        count=3,
        first=at(7200),
        last=at(3 * 3600),
        policy="run_once",
        caught_up=1,
    )
    state.take_writes()

    for event in (skipped, missed, skipped, missed):
        state.apply_schedule_event(event)

    ledger = state.ledgers[TASK]
    assert [(e.scheduled_for, e.state, e.count) for e in ledger] == [(at(3600), "skipped", 1), (at(7200), "missed", 3)]
    assert ledger_key(TASK) in dict(state.take_writes().runs)


def test_the_ledger_keeps_only_its_latest_entries() -> None:
    state = fresh(HOURLY, ledger_limit=3)

    for hour in range(1, 6):
        state.apply_schedule_event(
            events.SlotSkipped(
                event_id=eid(),
                occurred_at=at(hour * 3600),
                task_id=TASK,
                scheduled_for=at(hour * 3600),
                reason="overlap",
            )
        )

    assert [e.scheduled_for for e in state.ledgers[TASK]] == [at(3 * 3600), at(4 * 3600), at(5 * 3600)]


def test_a_scheduled_task_stays_active_while_its_runs_come_and_go() -> None:
    state = fresh(HOURLY)
    slot = runs.slot_for_fire(at(3600))
    run_id = runs.run_id_for(TASK, slot)

    apply_runs(
        state,
        queued(run_id, slot=slot, scheduled_for=3600, when=3600),
        started(run_id, when=3601),
        finished(run_id, when=3602, result="tick"),
    )

    task = state.tasks[TASK]
    assert (task.status, task.result, task.run_count) == ("active", "tick", 1)
    assert task.last_run is not None and task.last_run.run_id == run_id


# --- bounded history, writes -------------------------------------------------------------------------


def test_run_history_keeps_only_the_latest_finished_runs() -> None:
    state = fresh(HOURLY, run_history_limit=3)
    run_ids = []
    for hour in range(1, 6):
        slot = runs.slot_for_fire(at(hour * 3600))
        run_id = runs.run_id_for(TASK, slot)
        run_ids.append(run_id)
        apply_runs(
            state,
            queued(run_id, slot=slot, scheduled_for=hour * 3600, when=hour * 3600),
            started(run_id, when=hour * 3600 + 1),
            finished(run_id, when=hour * 3600 + 2),
        )

    assert list(state.runs[TASK]) == run_ids[-3:]
    assert state.tasks[TASK].run_count == 5
    assert {s: n for s, n in state.run_counts.items() if n} == {"succeeded": 3}, "held in memory"
    assert counts(state) == {"succeeded": 5}, "finished runs are counted for all time"
    assert state.metrics.outcomes == {"succeeded": 5}
    assert {key for key in state.take_writes().removed_runs} == {f"{TASK}.{r}" for r in run_ids[:2]}


def test_run_history_never_drops_an_active_run() -> None:
    state = fresh(HOURLY, run_history_limit=2)
    run_ids = [runs.run_id_for(TASK, runs.slot_for_fire(at(hour * 3600))) for hour in range(1, 4)]

    for hour, run_id in enumerate(run_ids, start=1):
        apply_runs(
            state,
            queued(run_id, slot=runs.slot_for_fire(at(hour * 3600)), when=hour * 3600),
            started(run_id, when=hour * 3600 + 1),
        )

    assert list(state.runs[TASK]) == run_ids
    assert counts(state) == {"running": 3}


def test_take_writes_returns_each_changed_record_once() -> None:
    state = fresh()
    apply_runs(state, queued(), started())

    first = state.take_writes()
    second = state.take_writes()

    assert [key for key, _ in first.tasks] == [TASK]
    assert [key for key, _ in first.runs] == [f"{TASK}.{RUN}"]
    assert codec.decode(type(state.tasks[TASK]), first.tasks[0][1]) == state.tasks[TASK]
    assert not second


def test_take_writes_is_a_snapshot_of_the_moment_it_was_taken() -> None:
    state = fresh()
    state.apply_run_event(queued())
    writes = state.take_writes()

    state.apply_run_event(started())

    assert b'"status":"queued"' in writes.tasks[0][1]
    assert [key for key, _ in state.take_writes().tasks] == [TASK]


async def test_a_flush_writes_a_tasks_catalog_row_when_it_is_new_and_when_it_ends_not_for_the_steps_between() -> None:
    state = fresh()
    assert list((await flushed(state)).catalog_rows) == [TASK]  # new: a start finds it by its row
    apply_runs(state, queued())
    assert (await flushed(state)).catalog_rows == {}
    apply_runs(state, started())
    assert (await flushed(state)).catalog_rows == {}
    assert state.catalog.status_of(TASK) == "pending"  # behind memory, until a list or a count syncs it
    assert await catalogued(state) == {"running": 1}
    apply_runs(state, finished())
    assert [row.status for row in (await flushed(state)).catalog_rows.values()] == ["succeeded"]
    assert state.catalog.status_of(TASK) == "succeeded" and TASK not in state.uncatalogued


def test_a_failed_write_is_requeued_and_written_again() -> None:
    state = fresh(HOURLY)
    state.apply_schedule_event(
        events.SlotSkipped(event_id=eid(), occurred_at=at(1), task_id=TASK, scheduled_for=at(1), reason="overlap")
    )
    apply_runs(state, queued())
    writes = state.take_writes()

    state.requeue(writes)

    again = state.take_writes()
    assert sorted(k for k, _ in again.tasks) == sorted(k for k, _ in writes.tasks)
    assert sorted(k for k, _ in again.runs) == sorted(k for k, _ in writes.runs)


async def test_a_failed_write_of_a_finished_task_writes_its_last_run_again() -> None:
    # Given a task whose run finished: the flush takes its records (it stays in memory until they are written)
    state = fresh()
    apply_runs(state, queued(), started(), finished())
    writes = state.take_writes()
    assert TASK in state.tasks

    # When that write fails and is requeued
    state.requeue(writes)

    # Then the next flush writes the finished run again, not only the task
    again = state.take_writes()
    assert sorted(k for k, _ in again.tasks) == [TASK]
    assert dict(again.runs) == dict(writes.runs)
    assert b'"status":"succeeded"' in dict(again.runs)[f"{TASK}.{RUN}"]
    await state.commit_written(again, {})
    assert TASK not in state.tasks and state.get(TASK) is not None
    assert not state.take_writes()


async def test_a_finished_task_keeps_its_runs_in_memory_until_its_records_are_written() -> None:
    # Given a task whose run finished, written once while it ran
    state = fresh()
    apply_runs(state, queued(), started())
    await flushed(state)
    apply_runs(state, finished(result=7))

    # When the flush takes its final records, and their write is still on its way
    writes = state.take_writes()

    # Then its runs are still read from memory, as they ended (KV holds them as running)
    assert TASK in state.tasks and state.runs[TASK][RUN].status == "succeeded"

    # And once the write is done, the task leaves memory for the cache
    await state.commit_written(writes, {})
    assert TASK not in state.tasks and TASK not in state.runs
    assert state.get(TASK).status == "succeeded"  # type: ignore[union-attr]


async def test_a_finished_task_that_changed_while_its_write_was_on_its_way_leaves_memory_with_the_next_one() -> None:
    # Given a task whose run finished before its queued event came, and a flush taking its records
    state = fresh()
    apply_runs(state, started(queued_at=1), finished())
    writes = state.take_writes()

    # When the late queued event changes its run while that write is on its way
    apply_runs(state, queued(when=1, scheduled_for=0.5))
    await state.commit_written(writes, {})

    # Then it stays in memory (its newer run is not written yet), and leaves with the next write
    assert TASK in state.tasks
    assert [key for key, _ in (await flushed(state)).runs] == [f"{TASK}.{RUN}"]
    assert TASK not in state.tasks


def test_a_requeued_record_of_a_task_deleted_meanwhile_is_not_written() -> None:
    state = fresh()
    apply_runs(state, queued(), started(), finished())
    writes = state.take_writes()
    state.requeue(writes)

    state.apply_task_event(events.TaskDeleted(event_id=eid(), occurred_at=at(9), task_id=TASK), seq=3)

    again = state.take_writes()
    assert again.runs == [] and again.tasks == []
    assert again.removed_tasks == {TASK}


def test_a_task_deleted_while_its_write_was_failing_is_removed_not_written_again() -> None:
    # Given a flush that took a finished task's records, and the task deleted while that write was on its way
    state = fresh()
    apply_runs(state, queued(), started(), finished())
    writes = state.take_writes()
    state.apply_task_event(events.TaskDeleted(event_id=eid(), occurred_at=at(9), task_id=TASK), seq=3)

    # When the write fails
    state.requeue(writes)

    # Then the next flush removes the task and writes none of its records
    again = state.take_writes()
    assert again.runs == [] and again.tasks == []
    assert again.removed_tasks == {TASK}


# --- races between a cancel and a run that is already on its way ------------------------------------


def test_a_run_that_starts_after_its_task_was_cancelled_is_killed() -> None:
    # Given the runner took the run (and found the task still wanted) just before the cancel was applied
    state = fresh()
    state.apply_run_event(queued())
    state.apply_task_event(cancelled(when=5), seq=2)

    # When its start arrives, the store must ask for it to be killed: nobody else will
    effects = state.apply_run_event(started(when=6))

    assert [(c.task_id, c.run_id) for c in effects.cancels] == [(TASK, RUN)]
    assert state.tasks[TASK].status == "cancelled"


def test_a_retry_queued_after_the_cancel_is_killed() -> None:
    # Given a run waiting for its retry when the task is cancelled
    state = fresh()
    apply_runs(state, queued(), started(), finished(status="failed", will_retry=True, retry=1, retry_at=at(10)))
    state.apply_task_event(cancelled(when=5), seq=2)
    assert state.runs[TASK][RUN].status == "cancelled"

    # When the retry timer fired before the scheduler saw the cancel
    effects = state.apply_run_event(queued(attempt=2, retry=1, when=10))

    assert [(c.task_id, c.run_id) for c in effects.cancels] == [(TASK, RUN)]
    assert state.runs[TASK][RUN].status == "cancelled"
    assert state.metrics.outcomes == {"cancelled": 1}


def cancel_requested(run_id: str, when: float = 7200):
    return runs.RunCancelRequested(
        event_id=eid(), occurred_at=at(when), task_id=TASK, run_id=run_id, reason="replaced (overlap_policy replace)"
    )


def test_a_cancel_of_a_run_never_seen_counts_no_run() -> None:
    # Given a schedule with no runs in memory
    state = fresh(HOURLY)

    # When the scheduler asks to cancel a run the store has not seen
    effects = state.apply_run_event(cancel_requested("run-never-seen"))

    # Then no run appears and nothing is counted; a runner that holds it is still asked to stop
    task = state.tasks[TASK]
    assert (task.run_count, task.last_run, state.runs.get(TASK, {})) == (0, None, {})
    assert counts(state) == {} and state.metrics.outcomes == {}
    assert [(c.task_id, c.run_id) for c in effects.cancels] == [(TASK, "run-never-seen")]


async def test_a_run_queued_after_its_own_cancel_ends_cancelled_and_is_killed() -> None:
    # Given a fire's cancel applied before the fire's RunQueued (that one was redelivered later)
    state = fresh(HOURLY)
    fire = hourly_fire(1, fired=1)
    state.apply_run_event(cancel_requested(fire.run_id))

    # When the RunQueued arrives
    effects = state.apply_run_event(fire)

    # Then its run is counted once, ends cancelled, and whoever picked it up is asked to stop
    task, run = state.tasks[TASK], state.runs[TASK][fire.run_id]
    assert (run.status, task.run_count, task.status) == ("cancelled", 1, "active")
    assert run.error is not None and run.error.message == "replaced (overlap_policy replace)"
    assert state.metrics.outcomes == {"cancelled": 1}
    assert [(c.task_id, c.run_id) for c in effects.cancels] == [(TASK, fire.run_id)]

    # And the RunQueued applied again changes nothing
    before = await snapshot(state)
    assert state.apply_run_event(fire).cancels == []
    assert await snapshot(state) == before


def test_a_cron_fire_carries_the_schedules_next_fire_and_counters() -> None:
    state = fresh(spec=HOURLY)
    fire = runs.RunQueued(
        event_id=eid(),
        occurred_at=at(1),
        task_id=TASK,
        run_id="r1",
        slot="cron:1000",
        scheduled_for=at(1),
        schedule=runs.ScheduleView(next_run_at=at(3601), fired_count=3, missed_count=1, skipped_count=2),
    )
    state.apply_run_event(fire)
    task = state.tasks[TASK]
    assert (task.next_run_at, task.fired_count, task.missed_count, task.skipped_count) == (at(3601), 3, 1, 2)
    # an older view arriving late never lowers the counters
    late = msgspec.structs.replace(
        fire, event_id=eid(), run_id="r0", schedule=runs.ScheduleView(next_run_at=at(1), fired_count=2)
    )
    state.apply_run_event(late)
    assert task.fired_count == 3 and task.skipped_count == 2


def test_a_run_held_back_by_flow_control_shows_why_until_it_is_admitted_and_starts() -> None:
    state = fresh()
    held = msgspec.structs.replace(queued(when=1), waiting_reason="concurrency:partner")
    state.apply_run_event(held)
    assert (state.tasks[TASK].status, state.tasks[TASK].waiting_reason) == ("queued", "concurrency:partner")
    assert TASK in state.dirty_tasks
    state.apply_run_event(queued(when=2))  # admitted: queued again, without a reason
    assert (state.tasks[TASK].status, state.tasks[TASK].waiting_reason) == ("queued", None)
    state.apply_run_event(msgspec.structs.replace(queued(when=3), waiting_reason="rate:partner"))
    state.apply_run_event(started(when=4))  # started before its admission's event was applied
    assert (state.tasks[TASK].status, state.tasks[TASK].waiting_reason) == ("running", None)


def test_a_redelivered_hold_shows_no_hold_on_a_run_already_under_way() -> None:
    # Given a run held back by a rate limit, then admitted and started
    state = fresh()
    held = msgspec.structs.replace(queued(when=1), waiting_reason="rate:partner")
    apply_runs(state, held, queued(when=2), started(when=3))

    # When the held RunQueued is delivered again
    state.apply_run_event(held)

    # Then the running task shows no hold
    assert (state.tasks[TASK].status, state.tasks[TASK].waiting_reason) == ("running", None)


def test_a_hold_of_an_older_attempt_does_not_show_on_its_retry() -> None:
    # Given a run held back at attempt 1 that failed, and whose retry (attempt 2) is queued
    state = fresh()
    held = msgspec.structs.replace(queued(when=1), waiting_reason="rate:partner")
    apply_runs(
        state,
        held,
        queued(when=2),
        started(when=3),
        finished(status="failed", when=4, will_retry=True, retry=1, retry_at=at(5)),
        queued(attempt=2, retry=1, when=5),
    )

    # When attempt 1's held RunQueued is delivered again
    state.apply_run_event(held)

    # Then the retry shows no hold
    assert (state.tasks[TASK].status, state.tasks[TASK].waiting_reason) == ("queued", None)


def test_a_run_whose_record_was_lost_in_a_kill_is_counted_once_when_its_events_replay() -> None:
    # the task's record (run_count 1) reached KV, its run's record did not: the store was killed between
    before = fresh()
    apply_runs(before, queued())
    written = codec.decode(TaskRecord, codec.encode(before.tasks[TASK]))
    assert written.run_count == 1

    restarted = StoreState()
    restarted.load_task(written)
    restarted.finish_loading()
    apply_runs(restarted, queued(), started(), finished())  # replayed from EVENTS
    task = restarted.tasks.get(TASK) or restarted.get(TASK)
    assert task is not None and (task.status, task.run_count) == ("succeeded", 1)


def test_a_run_whose_task_record_trailed_it_is_counted_after_a_restart() -> None:
    before = fresh()
    apply_runs(before, queued(), started())
    stale = codec.decode(TaskRecord, codec.encode(before.tasks[TASK]))
    stale.run_count = 0  # the task's record as written before its run was queued
    run = before.runs[TASK][RUN]

    restarted = StoreState()
    restarted.load_task(stale)
    restarted.load_run(run)
    restarted.finish_loading()
    assert restarted.tasks[TASK].run_count == 1
    apply_runs(restarted, started(), finished())
    task = restarted.tasks.get(TASK) or restarted.get(TASK)
    assert task is not None and task.run_count == 1
