"""Flushes are paced: what changes while a flush waits its turn is written by it, once."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from proto import events, runs, subjects
from proto.tasks import TaskSpec
from services.common import natsio
from services.common.clock import utcnow
from services.store.persistence import (
    FLUSH_INTERVAL_SECONDS,
    MAX_FLUSH_INTERVAL_SECONDS,
    RECORDS_PER_INTERVAL,
    Persistence,
    next_flush_interval,
)
from services.store.state import StoreState

SPEC = TaskSpec(name="ping", task_type="immediate", api_url="http://127.0.0.1:9/")


async def _writes_to_tasks_bucket(js: JetStreamContext) -> int:
    return (await js.stream_info(f"KV_{subjects.BUCKET_TASKS}")).state.last_seq


async def test_a_change_made_while_a_flush_waits_its_turn_is_written_by_that_flush_in_one_write(
    js: JetStreamContext,
) -> None:
    persistence = Persistence(js, await natsio.setup_owned(js, "store", 1))
    state = StoreState()
    submitted = events.TaskSubmitted(event_id="e-1", occurred_at=utcnow(), task_id="task-1", spec=SPEC)
    state.apply_task_event(submitted, 1)
    assert await persistence.flush(state) == 1  # the first flush goes at once
    before = await _writes_to_tasks_bucket(js)

    # A run event changes the task, and its flush starts, but must wait for its turn
    run_id = runs.run_id_for("task-1", runs.ONCE_SLOT)
    at = utcnow()
    queued = runs.RunQueued(
        event_id="q-1", occurred_at=at, task_id="task-1", run_id=run_id, slot=runs.ONCE_SLOT, scheduled_for=at
    )
    state.apply_run_event(queued)
    flushing = asyncio.create_task(persistence.flush(state))
    await asyncio.sleep(0)
    # Meanwhile the run starts
    started = runs.RunStarted(
        event_id="s-1", occurred_at=utcnow(), task_id="task-1", run_id=run_id, attempt=1, runner_id="r"
    )
    state.apply_run_event(started)
    await flushing

    # Then that flush wrote the task once, as it is now: running
    assert await _writes_to_tasks_bucket(js) == before + 1
    record = await persistence.get_task("task-1")
    assert record is not None and record.status == "running"
    assert not state.pending


async def test_callers_that_come_while_a_flush_waits_its_turn_share_it(js: JetStreamContext) -> None:
    persistence = Persistence(js, await natsio.setup_owned(js, "store", 1))
    state = StoreState()
    state.apply_task_event(events.TaskSubmitted(event_id="e-0", occurred_at=utcnow(), task_id="task-0", spec=SPEC), 1)
    await persistence.flush(state)

    # Two batches are applied, each asking for a flush, while the next flush waits its turn
    callers = []
    for number in (1, 2):
        submitted = events.TaskSubmitted(
            event_id=f"e-{number}", occurred_at=utcnow(), task_id=f"task-{number}", spec=SPEC
        )
        state.apply_task_event(submitted, number + 1)
        callers.append(asyncio.create_task(persistence.flush(state)))
        await asyncio.sleep(0)

    # Then one flush writes both, and both callers learn of it from that flush
    assert await asyncio.gather(*callers) == [2, 2]
    assert {key async for key, _ in natsio.read_bucket(js, subjects.BUCKET_TASKS)} == {"task-0", "task-1", "task-2"}


def test_the_wait_before_a_flush_grows_with_what_the_last_one_wrote_up_to_its_ceiling() -> None:
    # a task alone (a few records a flush) keeps the shortest wait: its acknowledgements are not held
    assert next_flush_interval(0) == next_flush_interval(RECORDS_PER_INTERVAL) == FLUSH_INTERVAL_SECONDS
    assert FLUSH_INTERVAL_SECONDS < next_flush_interval(2 * RECORDS_PER_INTERVAL) < MAX_FLUSH_INTERVAL_SECONDS
    assert next_flush_interval(100_000) == MAX_FLUSH_INTERVAL_SECONDS
