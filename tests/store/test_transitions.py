"""The task's state machine, walked exhaustively: every status meets every kind of event.

Each case reaches a status with real events through the real apply methods, applies one more
event, and checks the status against the transition table *and* against the grid below, which
states the same machine independently (a wrong table entry fails here, not just in e2e tests).
Applying the event a second time must change nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

from proto import codec, events, runs
from proto.runs import RunError
from proto.tasks import FINAL_STATUSES, TaskSpec, TaskStatus
from services.store import transitions
from services.store.state import StoreState
from services.store.transitions import TRANSITIONS, Effect, EventKind, Transition

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TASK = "0195f3a2-7c41-7d3e-9a10-4b2c8e6f1a23"
RUN = runs.run_id_for(TASK, runs.ONCE_SLOT)
NEW_RUN = "run-under-test"
"""The run events under test name a run the task has not had: its run side always changes, so
the event always reaches the task's state machine."""
ONE_SHOT = TaskSpec(
    name="calc", task_type="immediate", function_code="def f():\n    return 7\n", function_name="f", max_retries=2
)
SCHEDULE = TaskSpec(name="hourly", task_type="scheduled", api_url="https://example.com/", cron_expression="0 * * * *")
SEQ_UNDER_TEST = 100
_ids = itertools.count()

# What each kind of event does to a task in each status: "." stays, "gone" is deleted.
GRID = """
kind                pending   queued    running   retrying  succeeded failed    timed_out cancelled expired   active    paused    completed
cancel              cancelled cancelled cancelled cancelled .         .         .         .         .         cancelled cancelled .
delete              gone      gone      gone      gone      gone      gone      gone      gone      gone      gone      gone      gone
pause               .         .         .         .         .         .         .         .         .         paused    .         .
resume              .         .         .         .         .         .         .         .         .         .         active    .
trigger             .         .         .         .         .         .         .         .         .         .         .         .
schedule_updated    .         .         .         .         .         .         .         .         .         .         .         .
schedule_completed  .         .         .         .         .         .         .         .         .         completed completed .
slot_skipped        .         .         .         .         .         .         .         .         .         .         .         .
slots_missed        .         .         .         .         .         .         .         .         .         .         .         .
run_queued          queued    .         .         queued    .         .         .         .         .         .         .         .
run_started         running   running   running   running   .         .         .         .         .         .         .         .
run_will_retry      retrying  retrying  retrying  retrying  .         .         .         .         .         .         .         .
run_succeeded       succeeded succeeded succeeded succeeded .         .         .         .         .         .         .         .
run_failed          failed    failed    failed    failed    .         .         .         .         .         .         .         .
run_timed_out       timed_out timed_out timed_out timed_out .         .         .         .         .         .         .         .
run_cancelled       cancelled cancelled cancelled cancelled .         .         .         .         .         .         .         .
run_expired         expired   expired   expired   expired   .         .         .         .         .         .         .         .
"""


def _grid() -> dict[tuple[str, str], str]:
    header, *rows = GRID.strip().splitlines()
    statuses = header.split()[1:]
    cells = {}
    for row in rows:
        kind, *outcomes = row.split()
        assert len(outcomes) == len(statuses), row
        cells.update({(status, kind): outcome for status, outcome in zip(statuses, outcomes, strict=True)})
    return cells


EXPECTED = _grid()
STATUSES: tuple[TaskStatus, ...] = get_args(TaskStatus)
KINDS: tuple[EventKind, ...] = get_args(EventKind)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def eid() -> str:
    return f"event-{next(_ids)}"


# --- reaching each status with real events --------------------------------------------------------


def _submitted(spec: TaskSpec) -> StoreState:
    state = StoreState()
    state.apply_task_event(events.TaskSubmitted(event_id=eid(), occurred_at=at(0), task_id=TASK, spec=spec), seq=1)
    return state


def _queued(run_id: str = RUN, when: float = 1, attempt: int = 1) -> runs.RunQueued:
    return runs.RunQueued(
        event_id=eid(),
        occurred_at=at(when),
        task_id=TASK,
        run_id=run_id,
        slot=runs.ONCE_SLOT if run_id == RUN else f"cron:{when}",
        scheduled_for=at(when - 1),
        attempt=attempt,
    )


def _started(run_id: str = RUN, when: float = 2) -> runs.RunStarted:
    return runs.RunStarted(event_id=eid(), occurred_at=at(when), task_id=TASK, run_id=run_id, attempt=1, runner_id="r")


def _finished(status: str, run_id: str = RUN, when: float = 3, will_retry: bool = False) -> runs.RunFinished:
    return runs.RunFinished(
        event_id=eid(),
        occurred_at=at(when),
        task_id=TASK,
        run_id=run_id,
        attempt=1,
        runner_id="r",
        status=status,  # type: ignore[arg-type]  # one of OutcomeStatus, from the grid
        started_at=at(when - 1),
        result=7 if status == "succeeded" else None,
        error=None if status == "succeeded" else RunError(type="exception", message=status),
        will_retry=will_retry,
        retry=1 if will_retry else 0,
        retry_at=at(when + 5) if will_retry else None,
    )


def _one_shot(*run_events: Any) -> Callable[[], StoreState]:
    def build() -> StoreState:
        state = _submitted(ONE_SHOT)
        for event in run_events:
            state.apply_run_event(event)
        return state

    return build


def _schedule(*task_events: Any, update: str | None = None) -> Callable[[], StoreState]:
    def build() -> StoreState:
        state = _submitted(SCHEDULE)
        for seq, event in enumerate(task_events, start=2):
            state.apply_task_event(event, seq=seq)
        if update is not None:
            state.apply_schedule_event(
                events.ScheduleUpdated(event_id=eid(), occurred_at=at(1), task_id=TASK, state=update)  # type: ignore[arg-type]
            )
        return state

    return build


def _cancelled_one_shot() -> StoreState:
    state = _one_shot(_queued())()
    state.apply_task_event(events.TaskCancelled(event_id=eid(), occurred_at=at(2), task_id=TASK), seq=2)
    return state


REACH: dict[str, tuple[TaskStatus, Callable[[], StoreState]]] = {
    "pending": ("pending", _one_shot()),
    "queued": ("queued", _one_shot(_queued())),
    "running": ("running", _one_shot(_queued(), _started())),
    "retrying": ("retrying", _one_shot(_queued(), _started(), _finished("failed", will_retry=True))),
    **{
        outcome: (outcome, _one_shot(_queued(), _started(), _finished(outcome)))
        for outcome in ("succeeded", "failed", "timed_out", "expired")
    },
    "cancelled-by-its-run": ("cancelled", _one_shot(_queued(), _started(), _finished("cancelled"))),
    "cancelled-one-shot": ("cancelled", _cancelled_one_shot),
    "cancelled-schedule": (
        "cancelled",
        _schedule(events.TaskCancelled(event_id=eid(), occurred_at=at(1), task_id=TASK)),
    ),
    "active": ("active", _schedule()),
    "paused": ("paused", _schedule(events.SchedulePaused(event_id=eid(), occurred_at=at(1), task_id=TASK))),
    "completed": ("completed", _schedule(update="completed")),
}
"""Ways to reach each status (cancelled three ways: by the user, by its run's outcome, as a schedule)."""


# --- one event of each kind ---------------------------------------------------------------------------


def _event_of(kind: EventKind) -> tuple[str, Any]:
    """The real event of ``kind`` (at 50 s, after everything that built the status)."""
    when = 50
    if kind in transitions.OUTCOME_KINDS.values():
        outcome = next(o for o, k in transitions.OUTCOME_KINDS.items() if k == kind)
        return "run", _finished(outcome, run_id=NEW_RUN, when=when)
    match kind:
        case "cancel":
            return "task", events.TaskCancelled(event_id=eid(), occurred_at=at(when), task_id=TASK, reason="stop")
        case "delete":
            return "task", events.TaskDeleted(event_id=eid(), occurred_at=at(when), task_id=TASK)
        case "pause":
            return "task", events.SchedulePaused(event_id=eid(), occurred_at=at(when), task_id=TASK)
        case "resume":
            return "task", events.ScheduleResumed(event_id=eid(), occurred_at=at(when), task_id=TASK)
        case "trigger":
            return "task", events.ScheduleTriggered(event_id=eid(), occurred_at=at(when), task_id=TASK)
        case "schedule_updated" | "schedule_completed":
            state = "completed" if kind == "schedule_completed" else "active"
            return "schedule", events.ScheduleUpdated(
                event_id=eid(), occurred_at=at(when), task_id=TASK, state=state, next_run_at=at(3600), fired_count=2
            )
        case "slot_skipped":
            return "schedule", events.SlotSkipped(
                event_id=eid(), occurred_at=at(when), task_id=TASK, scheduled_for=at(when), reason="overlap"
            )
        case "slots_missed":
            return "schedule", events.SlotsMissed(
                event_id=eid(), occurred_at=at(when), task_id=TASK, count=2, first=at(1), last=at(2), policy="skip"
            )
        case "run_queued":
            return "run", _queued(NEW_RUN, when=when)
        case "run_started":
            return "run", _started(NEW_RUN, when=when)
        case "run_will_retry":
            return "run", _finished("failed", run_id=NEW_RUN, when=when, will_retry=True)
    raise AssertionError(f"no event for {kind}")


def _apply(state: StoreState, family: str, event: Any) -> Any:
    if family == "task":
        return state.apply_task_event(event, seq=SEQ_UNDER_TEST)
    if family == "schedule":
        return state.apply_schedule_event(event)
    return state.apply_run_event(event)


async def _everything(state: StoreState) -> tuple:
    """All an apply may change, comparable."""
    await state.sync_catalog()
    return (
        {task_id: codec.encode(task) for task_id, task in state.tasks.items()},
        {t: {r: codec.encode(run) for r, run in rs.items()} for t, rs in state.runs.items()},
        {task_id: codec.encode(entries) for task_id, entries in state.ledgers.items()},
        {status: n for status, n in state.run_counts.items() if n},
        codec.encode(state.metrics.encode()),
        state.metrics.changes,
        dict(state.idempotency),
        list(state.tombstones),
        state.catalog.counts("status"),
    )


# --- the walk -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reached", list(REACH))
async def test_each_event_moves_each_status_as_the_table_says_and_once_only(reached: str, kind: EventKind) -> None:
    # Given a task in the status
    status, build = REACH[reached]
    state = build()
    assert state.tasks[TASK].status == status, "the status under test was reached"
    expected = EXPECTED[(status, kind)]
    transition = transitions.transition(status, kind)
    assert (transition.to or ("gone" if Effect.FORGET in transition.effects else ".")) == expected, (
        f"the table disagrees with the grid for ({status}, {kind})"
    )

    # When the event is applied
    family, event = _event_of(kind)
    effects = _apply(state, family, event)

    # Then the task is where the grid (and the table) says, with the transition's effects
    if expected == "gone":
        assert TASK not in state.tasks and not state.is_retained(TASK)
        assert TASK in effects.wake
    else:
        assert state.tasks[TASK].status == (status if expected == "." else expected)
    if Effect.WAKE in transition.effects:
        assert TASK in effects.wake
    if Effect.KILL_RUN in transition.effects:
        assert [c.run_id for c in effects.cancels] == [NEW_RUN]
    if Effect.CANCEL_RUN in transition.effects:
        assert state.runs[TASK][NEW_RUN].status == "cancelled"
    if Effect.STOP_RUNS in transition.effects:
        assert not [r for r in state.runs.get(TASK, {}).values() if r.status in ("queued", "retrying")]

    # And applying it again (a redelivery, or a replay with its sequence) changes nothing
    before = await _everything(state)
    again = _apply(state, family, event)
    assert await _everything(state) == before
    assert (again.cancels, again.wake) == ([], set())


def test_every_status_and_event_kind_is_walked() -> None:
    assert {status for status, _ in REACH.values()} == set(STATUSES)
    assert set(EXPECTED) == {(status, kind) for status in STATUSES for kind in KINDS}


def test_the_table_names_only_statuses_and_kinds_proto_and_the_store_know() -> None:
    for (status, kind), transition in TRANSITIONS.items():
        assert status in STATUSES and kind in KINDS
        assert transition.to is None or transition.to in STATUSES
    assert set(transitions.INITIAL_STATUS.values()) <= set(STATUSES)
    assert set(transitions.OUTCOME_KINDS) <= set(STATUSES)


def test_a_final_task_never_changes_status_and_only_deletes_and_late_runs_reach_it() -> None:
    from_final = {(status, kind): t for (status, kind), t in TRANSITIONS.items() if status in FINAL_STATUSES}

    assert all(t.to is None for t in from_final.values())
    assert from_final == {
        **{
            (status, "delete"): Transition(None, (Effect.KILL_RUNNING, Effect.FORGET, Effect.WAKE))
            for status in FINAL_STATUSES
        },
        **{
            (status, "run_queued"): Transition(None, (Effect.NOTE_QUEUED,)) for status in FINAL_STATUSES - {"cancelled"}
        },
        ("cancelled", "run_queued"): Transition(None, (Effect.CANCEL_RUN, Effect.KILL_RUN)),
        ("cancelled", "run_started"): Transition(None, (Effect.KILL_RUN,)),
    }


@pytest.mark.parametrize("reached", list(REACH))
async def test_a_repeated_submission_changes_nothing_in_any_status(reached: str) -> None:
    state = REACH[reached][1]()
    before = await _everything(state)

    state.apply_task_event(
        events.TaskSubmitted(event_id=eid(), occurred_at=at(60), task_id=TASK, spec=ONE_SHOT), seq=SEQ_UNDER_TEST
    )

    assert await _everything(state) == before


@pytest.mark.parametrize(("spec", "status"), [(ONE_SHOT, "pending"), (SCHEDULE, "active")])
def test_a_task_starts_where_the_table_says(spec: TaskSpec, status: str) -> None:
    assert transitions.INITIAL_STATUS[spec.task_type] == status
    assert _submitted(spec).tasks[TASK].status == status
