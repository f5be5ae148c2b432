"""The store's pull loops against a real JetStream: nothing delivered is acknowledged unwritten."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from proto import codec, events, runs, streams, subjects
from proto.tasks import TaskSpec
from services.common import natsio
from services.common.clock import utcnow
from services.store import consumers as store_consumers
from services.store.consumers import Applied, EventConsumers
from services.store.persistence import Persistence
from services.store.state import Effects, StoreState

SPEC = TaskSpec(name="ping", task_type="immediate", api_url="http://127.0.0.1:9/")


async def _store_parts(
    nc: Client,
    js: JetStreamContext,
    after_apply: Callable[[Effects], None] = lambda _: None,
    state: StoreState | None = None,
) -> tuple[StoreState, EventConsumers]:
    buckets = await natsio.setup_owned(js, "store", 1)
    for name in (subjects.CONSUMER_STORE_TASKS, subjects.CONSUMER_STORE_EVENTS, subjects.CONSUMER_STORE_LOGS):
        await natsio.ensure_consumer(js, name)
    state = state or StoreState()
    consumers = EventConsumers(nc, js, state, Persistence(js, buckets), after_apply, log_cap_bytes=1 << 20)
    return state, consumers


async def test_submissions_delivered_to_a_killed_store_are_not_acknowledged_by_its_successor(
    nc: Client,
    js: JetStreamContext,
) -> None:
    state, consumers = await _store_parts(nc, js)
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


async def _wait(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.2)


async def _submit(js: JetStreamContext, task_id: str) -> None:
    event = events.TaskSubmitted(event_id=f"e-{task_id}", occurred_at=utcnow(), task_id=task_id, spec=SPEC)
    await js.publish(subjects.task_event(task_id, event.subject_kind), codec.encode(event))


async def _stored_tasks(js: JetStreamContext) -> set[str]:
    return {key async for key, _ in natsio.read_bucket(js, subjects.BUCKET_TASKS)}


async def test_an_event_whose_applying_raises_is_given_up_while_the_rest_of_its_batch_is_written(
    nc: Client,
    js: JetStreamContext,
) -> None:
    # Given a store whose applying raises for one task's events (a bug met by one message)
    def after_apply(effects: Effects) -> None:
        if state.tasks.get("task-bad") is not None:
            state.tasks.pop("task-bad", None)  # forgotten again, so that its redelivery raises again
            state.uncatalogued.pop("task-bad", None)
            raise RuntimeError("boom")

    state, consumers = await _store_parts(nc, js, after_apply)
    # When it is delivered in one batch with good ones
    for task_id in ("task-1", "task-bad", "task-2"):
        await _submit(js, task_id)
    stop = asyncio.Event()
    running = asyncio.create_task(consumers.run(stop))
    try:
        # Then the good ones are written and acknowledged at once
        await _wait(lambda: _has(js, {"task-1", "task-2"}), 10, "good tasks written")
        # And the bad one is redelivered a few times, then dead-lettered with its reason and its
        # run failed as internal (through an event on EVENTS)
        letters = await _wait_for_letters(js, 1, 30)
        assert letters[0].task_id == "task-bad" and letters[0].deliveries == streams.HANDLING_DELIVERIES
        assert "RuntimeError: boom" in letters[0].reason
        finished = codec.decode(
            runs.RunFinished,
            (
                await js.get_last_msg(
                    subjects.STREAM_EVENTS,
                    subjects.run_event("task-bad", runs.run_id_for("task-bad", "once"), "finished"),
                )
            ).data,
        )
        assert finished.status == "failed" and finished.error is not None and finished.error.type == "internal"
        info = await js.consumer_info(subjects.STREAM_TASKS, subjects.CONSUMER_STORE_TASKS)
        assert info.num_ack_pending == 0 and info.num_pending == 0
        assert not running.done() and consumers.restarts == {}
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)


async def test_a_kv_write_answered_by_an_api_error_is_retried_and_the_consumer_keeps_going(
    nc: Client,
    js: JetStreamContext,
) -> None:
    # Given the tasks bucket rejecting every write (its stream's max_msg_size is tiny)
    state, consumers = await _store_parts(nc, js)
    stream = f"KV_{subjects.BUCKET_TASKS}"
    config = (await js.stream_info(stream)).config
    await js.update_stream(replace(config, max_msg_size=16))
    stop = asyncio.Event()
    running = asyncio.create_task(consumers.run(stop))
    try:
        # When events arrive, their writes fail with a JetStream API error
        await _submit(js, "task-1")
        await _wait(lambda: _true(consumers.persistence.failed_writes > 0), 30, "a failed write")
        # Then the consumer keeps applying what comes next
        await _submit(js, "task-2")
        await _wait(lambda: _true("task-2" in state.tasks), 10, "task-2 applied")
        # And once the bucket takes writes again, the failed writes are written, and everything acknowledged
        await js.update_stream(replace(config, max_msg_size=-1))
        await _wait(lambda: _has(js, {"task-1", "task-2"}), 30, "both tasks written")

        async def all_acknowledged() -> bool:
            info = await js.consumer_info(subjects.STREAM_TASKS, subjects.CONSUMER_STORE_TASKS)
            return info.num_ack_pending == 0 and info.num_pending == 0

        await _wait(all_acknowledged, 30, "every task event acknowledged")
        assert not running.done()
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)


async def _has(js: JetStreamContext, task_ids: set[str]) -> bool:
    return task_ids <= await _stored_tasks(js)


async def _true(value: bool) -> bool:
    return value


async def _wait_for_letters(js: JetStreamContext, count: int, timeout: float) -> list[runs.DeadLetter]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = await js.stream_info(subjects.STREAM_DEAD_LETTERS)
            if info.state.messages >= count:
                return [
                    codec.decode(runs.DeadLetter, (await js.get_msg(subjects.STREAM_DEAD_LETTERS, seq)).data)
                    for seq in range(info.state.first_seq, info.state.last_seq + 1)
                ]
        except Exception:  # not created yet
            pass
        assert time.monotonic() < deadline, f"no {count} dead letters within {timeout} s"
        await asyncio.sleep(0.2)


async def test_a_consumer_loop_that_dies_is_restarted_and_counted(
    nc: Client, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a store whose log loop meets an error outside any one message (a bug in the loop itself)
    state, consumers = await _store_parts(nc, js)
    await _submit(js, "task-1")
    deaths = []

    def dies_once(messages: list[Msg]) -> Applied:
        if not deaths:
            deaths.append(len(messages))
            raise RuntimeError("loop bug")
        return Applied()

    monkeypatch.setattr(store_consumers, "_nothing_to_apply", dies_once)
    stop = asyncio.Event()
    running = asyncio.create_task(consumers.run(stop))
    try:
        await _wait(lambda: _true("task-1" in state.tasks), 10, "task-1 applied")
        # When a log chunk reaches it, the loop dies
        await _publish_chunk(js, "task-1", 0)
        # Then it is restarted, counted, and files what comes next
        await _wait(lambda: _true(consumers.restarts[subjects.CONSUMER_STORE_LOGS] == 1), 10, "a restart")
        await _publish_chunk(js, "task-1", 1)
        await _wait(lambda: _log_keys(js, 1), 10, "the next chunk filed")
        assert not running.done() and deaths == [1]
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)


async def _publish_chunk(js: JetStreamContext, task_id: str, seq: int) -> None:
    chunk = runs.LogChunk(
        task_id=task_id, run_id="run-1", attempt=1, seq=seq, stream="stdout", data=f"line {seq}", at=utcnow()
    )
    await js.publish(subjects.log_chunks(task_id, "run-1"), codec.encode(chunk))


async def _log_keys(js: JetStreamContext, seq: int) -> bool:
    keys = {key async for key, _ in natsio.read_bucket(js, subjects.BUCKET_LOGS)}
    return subjects.log_key("task-1", "run-1", 1, seq) in keys


async def test_a_run_event_that_arrives_before_its_task_is_applied_once_the_task_is(
    nc: Client, js: JetStreamContext
) -> None:
    # Given a submission a killed store took and never wrote (it comes back after the ack wait)
    state, consumers = await _store_parts(nc, js)
    await _submit(js, "task-early")
    dead = await js.pull_subscribe_bind(durable=subjects.CONSUMER_STORE_TASKS, stream=subjects.STREAM_TASKS)
    assert len(await dead.fetch(1, timeout=2)) == 1
    await dead.unsubscribe()
    await consumers.catch_up_tasks()
    assert "task-early" not in state.tasks
    # When the run of that task is queued meanwhile (the scheduler read the submission)
    queued = runs.RunQueued(
        event_id="q-early",
        occurred_at=utcnow(),
        task_id="task-early",
        run_id=runs.run_id_for("task-early", "once"),
        slot="once",
        scheduled_for=utcnow(),
    )
    await js.publish(subjects.run_event(queued.task_id, queued.run_id, queued.subject_kind), codec.encode(queued))
    stop = asyncio.Event()
    running = asyncio.create_task(consumers.run(stop))
    try:
        # Then the event waits for its task instead of being dropped: the task ends up queued
        def is_queued() -> bool:
            task = state.tasks.get("task-early")
            return task is not None and task.status == "queued"

        await _wait(lambda: _true(is_queued()), streams.STORE_ACK_WAIT.total_seconds() + 15, "task-early queued")
        assert consumers.unknown_task_events == 0
    finally:
        stop.set()
        await running


async def test_output_carried_by_an_outcome_is_filed_before_the_outcome_is_acknowledged(
    nc: Client, js: JetStreamContext
) -> None:
    # Given a task and the outcome of its run carrying the run's whole output (and, from a broken
    # or hostile publisher, a chunk of another task)
    state, consumers = await _store_parts(nc, js)
    await _submit(js, "task-1")
    await _submit(js, "task-2")
    run_id = runs.run_id_for("task-1", "once")
    lines = ["GET http://127.0.0.1:9/ (timeout 30 s)\n", "200 OK in 1.2 ms, 2 bytes\n"]
    log = [
        runs.LogChunk(task_id="task-1", run_id=run_id, attempt=1, seq=seq, stream="system", data=line, at=utcnow())
        for seq, line in enumerate(lines)
    ]
    log.append(
        msgspec.structs.replace(log[0], task_id="task-2", run_id=runs.run_id_for("task-2", "once"), data="not mine\n")
    )
    finished = runs.RunFinished(
        event_id="f-1",
        occurred_at=utcnow(),
        task_id="task-1",
        run_id=run_id,
        attempt=1,
        runner_id="runner-1",
        status="succeeded",
        slot="once",
        log_chunks=2,
        log=log,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumers.run(stop))
    try:
        await _wait(lambda: _true({"task-1", "task-2"} <= set(state.tasks)), 10, "the tasks applied")
        await js.publish(subjects.run_event("task-1", run_id, finished.subject_kind), codec.encode(finished))

        # When the store has acknowledged the outcome
        async def settled() -> bool:
            info = await js.consumer_info(subjects.STREAM_EVENTS, subjects.CONSUMER_STORE_EVENTS)
            return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq > 0

        await _wait(settled, 10, "the outcome acknowledged")
        # Then its output is in the logs bucket, in order, as if it had come on LOGS; nothing else is
        stored = sorted(
            [codec.log_chunk_decoder.decode(value) async for _, value in natsio.read_bucket(js, subjects.BUCKET_LOGS)],
            key=lambda chunk: chunk.seq,
        )
        assert [chunk.data for chunk in stored] == lines
    finally:
        stop.set()
        await running
