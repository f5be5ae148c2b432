"""One run handed to two runners (or twice to one) executes once: its start is a compare-and-set.

JetStream hands a run out twice when a runner's progress reports are lost until the ack wait
passes, or when a consumer's new leader does not know of a delivery its dead predecessor made.
These tests make both happen on a real JetStream and count the user's work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from proto import codec, runs, subjects
from proto.runs import Execution, RunDue, RunFinished, RunStarted
from proto.tasks import TaskSpec
from services.common import natsio
from services.common.clock import utcnow
from services.runner import pings
from services.runner.executor import RunExecutor
from services.runner.identity import RunnerIdentity
from services.runner.output import RunOutput
from services.runner.settings import RunnerSettings
from taskmesh.processes import NatsServer

SPEC = TaskSpec(name="once", task_type="immediate", api_url="http://127.0.0.1:9/")
TEST_CONSUMER = "runner-test"
ACK_WAIT_SECONDS = 1.0
"""Shorter than the runner's progress reports (every few seconds): a held run is handed out again."""


class HeldHttp:
    """Stands in for the HTTP client: counts executions (the user's work); each waits for ``release``."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def execute(self, spec: TaskSpec, output: RunOutput) -> Execution:
        self.calls += 1
        await self.release.wait()
        return Execution(status="succeeded", result={"calls": self.calls})


class NoSandboxes:
    def reap_soon(self) -> None:
        pass


class Runner:
    """A runner's executor on its own connection, answering pings as a runner does."""

    def __init__(self, nc: Client, identity: RunnerIdentity, executor: RunExecutor) -> None:
        self.nc = nc
        self.runner_id = identity.runner_id
        self.executor = executor
        self.asked: list[str] = []
        """Run ids other runners asked about while this one held them."""

    def holds(self, run_id: str) -> bool:
        held = self.executor.holds(run_id)
        if held:
            self.asked.append(run_id)
        return held


@pytest.fixture
async def connect(nats_server: NatsServer) -> AsyncIterator[Callable[[], Awaitable[Client]]]:
    clients: list[Client] = []

    async def open_one() -> Client:
        client = await nats.connect(nats_server.url)
        clients.append(client)
        return client

    yield open_one
    for client in clients:
        await client.close()


@pytest.fixture
async def work(js: JetStreamContext) -> JetStreamContext:
    await natsio.setup_owned(js, "store", 1)
    await natsio.setup_owned(js, "scheduler", 1)
    await js.add_consumer(
        subjects.STREAM_WORK,
        js_api.ConsumerConfig(
            durable_name=TEST_CONSUMER,
            filter_subject=subjects.WORK_API,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_SECONDS,
        ),
    )
    return js


async def _runner(connect: Callable[[], Awaitable[Client]], http: HeldHttp) -> Runner:
    nc = await connect()
    js = nc.jetstream()
    identity = RunnerIdentity.generate()
    executor = RunExecutor(
        js,
        identity.runner_id,
        RunnerSettings(),
        http,  # type: ignore[arg-type]
        NoSandboxes(),  # type: ignore[arg-type]
        nc=nc,
    )
    runner = Runner(nc, identity, executor)
    await pings.answer_pings(nc, identity, runner.holds)
    return runner


async def _publish_due(js: JetStreamContext, copies: int = 1) -> RunDue:
    due = RunDue(
        task_id="task-1",
        run_id=runs.run_id_for("task-1", "once"),
        slot="once",
        spec=SPEC,
        scheduled_for=utcnow(),
        queued_at=utcnow(),
    )
    for _ in range(copies):  # copies: the same run delivered as new, as after a lost delivery record
        await js.publish(subjects.WORK_API, codec.encode(due))
    return due


async def _fetch_one(js: JetStreamContext, timeout: float = 10) -> Msg:
    subscription = await js.pull_subscribe_bind(durable=TEST_CONSUMER, stream=subjects.STREAM_WORK)
    try:
        messages = await subscription.fetch(1, timeout=timeout)
    finally:
        await subscription.unsubscribe()
    return messages[0]


async def _until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


async def _starts(js: JetStreamContext, due: RunDue) -> list[RunStarted]:
    subject = subjects.run_event(due.task_id, due.run_id, "started")
    info = await js.stream_info(subjects.STREAM_EVENTS)
    found = []
    for seq in range(1, (info.state.last_seq or 0) + 1):
        message = await js.get_msg(subjects.STREAM_EVENTS, seq)
        if message.subject == subject:
            found.append(codec.decode(RunStarted, message.data))
    return found


async def _finished(js: JetStreamContext, due: RunDue) -> RunFinished:
    last = await js.get_last_msg(subjects.STREAM_EVENTS, subjects.run_event(due.task_id, due.run_id, "finished"))
    return codec.decode(RunFinished, last.data)


async def _work_left(js: JetStreamContext) -> int:
    return (await js.stream_info(subjects.STREAM_WORK)).state.messages


async def test_a_run_handed_out_again_while_its_runner_holds_it_waits_and_runs_once(
    work: JetStreamContext, connect: Callable[[], Awaitable[Client]]
) -> None:
    # Given runner A running a run whose ack wait passes before A reports progress
    http = HeldHttp()
    a, b = await _runner(connect, http), await _runner(connect, http)
    due = await _publish_due(work)
    first = asyncio.create_task(a.executor.handle(await _fetch_one(work)))
    await _until(lambda: http.calls == 1, "A runs the user's work")
    # When the run is handed out again, to runner B
    again = await _fetch_one(work)
    assert again.metadata.num_delivered == 2
    second = asyncio.create_task(b.executor.handle(again))
    # Then B asks A, and waits while A holds the run
    await _until(lambda: due.run_id in a.asked, "B asks whether A still holds the run")
    assert http.calls == 1
    http.release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 20)
    # and the work ran once, started once, finished by A, and nothing is left to deliver
    assert http.calls == 1
    assert [start.runner_id for start in await _starts(work, due)] == [a.runner_id]
    assert (await _finished(work, due)).status == "succeeded"
    assert await _work_left(work) == 0


async def test_a_run_delivered_as_new_twice_to_two_runners_runs_once(
    work: JetStreamContext, connect: Callable[[], Awaitable[Client]]
) -> None:
    # Given one run in the queue twice, each copy a first delivery (a consumer leader's lost record)
    http = HeldHttp()
    a, b = await _runner(connect, http), await _runner(connect, http)
    due = await _publish_due(work, copies=2)
    first = asyncio.create_task(a.executor.handle(await _fetch_one(work)))
    await _until(lambda: http.calls == 1, "A runs the user's work")
    # When runner B gets the other copy: its start has the same id as A's
    second = asyncio.create_task(b.executor.handle(await _fetch_one(work)))
    await _until(lambda: due.run_id in a.asked, "B asks whether A still holds the run")
    http.release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 20)
    # Then the work ran once and both copies are settled
    assert http.calls == 1
    assert [start.runner_id for start in await _starts(work, due)] == [a.runner_id]
    assert await _work_left(work) == 0


async def test_a_run_handed_to_the_same_runner_twice_runs_once(
    work: JetStreamContext, connect: Callable[[], Awaitable[Client]]
) -> None:
    http = HeldHttp()
    a = await _runner(connect, http)
    due = await _publish_due(work, copies=2)
    first = asyncio.create_task(a.executor.handle(await _fetch_one(work)))
    await _until(lambda: http.calls == 1, "A runs the user's work")
    second = asyncio.create_task(a.executor.handle(await _fetch_one(work)))
    await asyncio.sleep(0)  # the second delivery is taken in before the first ends
    http.release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 20)
    assert http.calls == 1
    assert len(await _starts(work, due)) == 1
    assert await _work_left(work) == 0


async def test_a_run_started_by_a_runner_that_is_gone_is_started_again_and_runs(
    work: JetStreamContext, connect: Callable[[], Awaitable[Client]]
) -> None:
    # Given a start recorded by a runner that no longer answers (killed after starting)
    http = HeldHttp()
    http.release.set()
    a = await _runner(connect, http)
    due = await _publish_due(work)
    gone = RunStarted(
        event_id="s:gone",
        occurred_at=utcnow(),
        task_id=due.task_id,
        run_id=due.run_id,
        attempt=1,
        runner_id=RunnerIdentity.generate().runner_id,
    )
    await work.publish(subjects.run_event(due.task_id, due.run_id, "started"), codec.encode(gone))
    # When its run is delivered
    await asyncio.wait_for(a.executor.handle(await _fetch_one(work)), 20)
    # Then it runs: the gone runner's start does not block it
    assert http.calls == 1
    assert [start.runner_id for start in await _starts(work, due)] == [gone.runner_id, a.runner_id]
    assert (await _finished(work, due)).status == "succeeded"
    assert await _work_left(work) == 0
