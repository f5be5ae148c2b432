"""The store's pull loops against a real JetStream: nothing delivered is acknowledged unwritten."""

from __future__ import annotations

import asyncio
import time

from nats.js import JetStreamContext

from proto import codec, events, streams, subjects
from proto.tasks import TaskSpec
from services.common import natsio
from services.common.clock import utcnow
from services.store.consumers import EventConsumers
from services.store.persistence import Persistence
from services.store.state import StoreState

SPEC = TaskSpec(name="ping", task_type="immediate", api_url="http://127.0.0.1:9/")


async def _store_parts(js: JetStreamContext) -> tuple[StoreState, EventConsumers]:
    buckets = await natsio.setup_owned(js, "store", 1)
    for name in (subjects.CONSUMER_STORE_TASKS, subjects.CONSUMER_STORE_EVENTS, subjects.CONSUMER_STORE_LOGS):
        await natsio.ensure_consumer(js, name)
    state = StoreState()
    consumers = EventConsumers(js, state, Persistence(js, buckets), lambda _: None, log_cap_bytes=1 << 20)
    return state, consumers


async def test_submissions_delivered_to_a_killed_store_are_not_acknowledged_by_its_successor(
        js: JetStreamContext) -> None:
    state, consumers = await _store_parts(js)
    ids = [f"task-{n}" for n in range(5)]
    for task_id in ids:
        event = events.TaskSubmitted(event_id=f"e-{task_id}", occurred_at=utcnow(), task_id=task_id, spec=SPEC)
        await js.publish(subjects.task_event(task_id, event.subject_kind), codec.encode(event))

    # A store that took the first three and was killed before writing them.
    dead = await js.pull_subscribe_bind(durable=subjects.CONSUMER_STORE_TASKS, stream=subjects.STREAM_TASKS)
    assert len(await dead.fetch(3, timeout=2)) == 3
    await dead.unsubscribe()

    # Its successor is given the rest first; writing and acknowledging them must not cover the three.
    await consumers.catch_up_tasks()
    assert set(state.tasks) == set(ids[3:])
    info = await js.consumer_info(subjects.STREAM_TASKS, subjects.CONSUMER_STORE_TASKS)
    assert info.num_ack_pending == 3

    # After the ack wait the three come back and are materialised too.
    deadline = time.monotonic() + streams.STORE_ACK_WAIT.total_seconds() + 10
    while set(state.tasks) != set(ids):
        assert time.monotonic() < deadline, sorted(state.tasks)
        await consumers.catch_up_tasks()
        await asyncio.sleep(0.2)
    stored = {key async for key, _ in natsio.read_bucket(js, subjects.BUCKET_TASKS)}
    assert stored == set(ids)
