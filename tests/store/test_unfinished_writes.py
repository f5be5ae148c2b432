"""A one-shot task not at its end is written to KV only once it has gone unwritten for a while; the events
that changed it are acknowledged only once a flush has written it."""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client
from nats.js import JetStreamContext

from proto import codec, subjects
from proto.records import TaskRecord
from services.common import natsio
from services.store.consumers import EventConsumers
from services.store.persistence import Persistence
from services.store.state import StoreState
from tests.store.test_state import TASK, finished, queued, started, submitted

HOLD = 0.5


def test_a_task_not_at_its_end_is_held_until_it_has_gone_unwritten_for_the_hold() -> None:
    state = StoreState(hold_seconds=HOLD)
    state.apply_task_event(submitted(), 1)

    first = state.write_back.take(state.catalog_row_due, now=100.0)
    assert not first.tasks and first.held_back == {TASK}
    assert not state.write_back.take(state.catalog_row_due, now=100.0 + HOLD / 2).tasks

    due = state.write_back.take(state.catalog_row_due, now=100.0 + HOLD)
    assert [key for key, _ in due.tasks] == [TASK] and not due.held_back
    assert not state.pending  # nothing left over once written


def test_a_task_that_ends_within_the_hold_is_written_once_in_its_final_state() -> None:
    state = StoreState(hold_seconds=HOLD)
    state.apply_task_event(submitted(), 1)
    assert not state.write_back.take(state.catalog_row_due, now=100.0).tasks

    for event in (queued(), started(), finished()):
        state.apply_run_event(event)
    writes = state.write_back.take(state.catalog_row_due, now=100.0 + HOLD / 10)

    [(key, encoded)] = writes.tasks
    assert key == TASK and codec.decode(TaskRecord, encoded).status == "succeeded"
    assert len(writes.runs) == 1 and not writes.held_back


def test_without_a_hold_every_state_is_written_by_the_next_take() -> None:
    state = StoreState(hold_seconds=0)
    state.apply_task_event(submitted(), 1)
    assert [key for key, _ in state.write_back.take(state.catalog_row_due, now=100.0).tasks] == [TASK]


async def _task_writes(js: JetStreamContext) -> int:
    return (await js.stream_info(f"KV_{subjects.BUCKET_TASKS}")).state.messages


async def test_a_submission_is_acknowledged_only_once_its_held_record_is_written(
    nc: Client, js: JetStreamContext
) -> None:
    # Given a store that holds records of tasks not at their end for a while
    buckets = await natsio.setup_owned(js, "store", 1)
    for name in (subjects.CONSUMER_STORE_TASKS, subjects.CONSUMER_STORE_EVENTS, subjects.CONSUMER_STORE_LOGS):
        await natsio.ensure_consumer(js, name)
    state = StoreState(hold_seconds=HOLD)
    consumers = EventConsumers(nc, js, state, Persistence(js, buckets), lambda _: None, log_cap_bytes=1 << 20)
    stop = asyncio.Event()
    running = asyncio.create_task(consumers.run(stop))
    try:
        # When a submission arrives and nothing else happens to its task
        submission = submitted()
        await js.publish(subjects.task_event(TASK, submission.subject_kind), codec.encode(submission))
        deadline = time.monotonic() + 10
        while TASK not in state.tasks:
            assert time.monotonic() < deadline, "submission not applied"
            await asyncio.sleep(0.01)

        # Then while its record is held, KV does not have it and its event stays unacknowledged
        info = await js.consumer_info(subjects.STREAM_TASKS, subjects.CONSUMER_STORE_TASKS)
        assert info.num_ack_pending == 1 and await _task_writes(js) == 0

        # And once the hold has passed, the record is written, then the event acknowledged
        deadline = time.monotonic() + HOLD + 10
        while (await js.consumer_info(subjects.STREAM_TASKS, subjects.CONSUMER_STORE_TASKS)).num_ack_pending:
            assert time.monotonic() < deadline, "submission never acknowledged"
            await asyncio.sleep(0.05)
        stored = codec.decode(TaskRecord, (await buckets[subjects.BUCKET_TASKS].get(TASK)).value or b"")
        assert stored.id == TASK and stored.status == "pending"
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)
