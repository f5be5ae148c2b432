"""The runner against a real JetStream when reporting goes wrong: the user's work runs once."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import msgspec
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from proto import api, codec, runs, streams, subjects
from proto.runs import Execution, RunDue, RunFinished
from proto.tasks import TaskSpec
from services.common import natsio
from services.common.clock import utcnow
from services.runner.executor import RunExecutor
from services.runner.outcome import MAX_RETRY_WAIT, failed, retry_at
from services.runner.output import RunOutput
from services.runner.settings import RunnerSettings
from services.runner.verdicts import VerdictAsker

HOSTILE = TaskSpec(
    name="hostile",
    task_type="immediate",
    api_url="http://127.0.0.1:9/",
    max_retries=1,
    retry_delay_seconds=1e12,
    retry_delay_max_seconds=1e12,
    retry_backoff=1e6,
)
"""Numbers the edge may refuse: built here, they reach the runner's arithmetic without any decoding."""


class CountingHttp:
    """Stands in for the HTTP client: counts executions (the user's work) and returns ``outcome``."""

    def __init__(self, outcome: Execution) -> None:
        self.outcome = outcome
        self.calls = 0

    async def execute(self, spec: TaskSpec, output: RunOutput) -> Execution:
        self.calls += 1
        output.system("called")
        return self.outcome


class NoSandboxes:
    """The executor only asks an API task's sandboxes to reap orphans after a redelivery."""

    def reap_soon(self) -> None:
        pass


async def _executor(js: JetStreamContext, http: CountingHttp) -> RunExecutor:
    await natsio.setup_owned(js, "store", 1)
    await natsio.setup_owned(js, "scheduler", 1)
    await natsio.ensure_consumer(js, subjects.CONSUMER_RUNNER_API)
    return RunExecutor(js, "runner-test", RunnerSettings(), http, NoSandboxes())  # type: ignore[arg-type]


async def _publish_due(js: JetStreamContext, spec: TaskSpec, task_id: str = "task-1") -> RunDue:
    due = RunDue(
        task_id=task_id,
        run_id=runs.run_id_for(task_id, "once"),
        slot="once",
        spec=spec,
        scheduled_for=utcnow(),
        queued_at=utcnow(),
    )
    await js.publish(subjects.WORK_API, codec.encode(due))
    return due


async def _pull_until_done(js: JetStreamContext, executor: RunExecutor, timeout: float) -> None:
    """Pull and handle WORK messages like a runner until the work queue is empty (or ``timeout``)."""
    subscription = await js.pull_subscribe_bind(durable=subjects.CONSUMER_RUNNER_API, stream=subjects.STREAM_WORK)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if (await js.stream_info(subjects.STREAM_WORK)).state.messages == 0:
                return
            try:
                messages: list[Msg] = await subscription.fetch(1, timeout=1)
            except TimeoutError:
                continue
            for message in messages:
                try:
                    await executor.handle(message)
                except Exception:  # left unacknowledged, as a runner would: redelivered after the ack wait
                    logging.getLogger(__name__).exception("run not completed")
    finally:
        await subscription.unsubscribe()


async def _finished(js: JetStreamContext, due: RunDue) -> RunFinished:
    last = await js.get_last_msg(subjects.STREAM_EVENTS, subjects.run_event(due.task_id, due.run_id, "finished"))
    return codec.decode(RunFinished, last.data)


def test_a_retry_delay_too_large_for_any_date_is_clamped_not_raised() -> None:
    now = utcnow()
    assert now < retry_at(HOSTILE, 1, now) <= now + MAX_RETRY_WAIT
    assert now < retry_at(msgspec.structs.replace(HOSTILE, retry_backoff=1e300), 3, now) <= now + MAX_RETRY_WAIT
    ordinary = msgspec.structs.replace(HOSTILE, retry_delay_seconds=1, retry_backoff=1)
    assert retry_at(ordinary, 1, now) <= now + timedelta(seconds=1)


async def test_the_outcome_of_a_run_with_hostile_retry_numbers_is_reported_with_its_retry_clamped(
    js: JetStreamContext,
) -> None:
    # Given a failed attempt of a run whose retry delay overflows any date
    executor = await _executor(js, CountingHttp(failed("http_status", "HTTP 500")))
    due = RunDue(
        task_id="task-1",
        run_id=runs.run_id_for("task-1", "once"),
        slot="once",
        spec=HOSTILE,
        scheduled_for=utcnow(),
        queued_at=utcnow(),
    )
    # When the runner reports it
    await executor._report(due, 1, failed("http_status", "HTTP 500"), None)
    # Then its outcome is recorded, its retry at the longest wait allowed
    finished = await _finished(js, due)
    assert finished.status == "failed" and finished.will_retry and finished.retry_at is not None
    assert timedelta(0) < finished.retry_at - finished.occurred_at <= MAX_RETRY_WAIT


async def test_a_run_whose_outcome_cannot_be_reported_runs_once_and_fails_as_internal(
    js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a runner that raises while building the outcome of a run that has executed
    http = CountingHttp(Execution(status="succeeded", result={"ok": True}))
    executor = await _executor(js, http)

    async def broken_report(*_: object, **__: object) -> None:
        raise RuntimeError("outcome cannot be built")

    monkeypatch.setattr(executor, "_report", broken_report)
    due = await _publish_due(js, TaskSpec(name="fine", task_type="immediate", api_url="http://127.0.0.1:9/"))
    # When a runner takes it (and takes it again if it is redelivered)
    await _pull_until_done(js, executor, timeout=25)
    # Then the work ran once, and exactly one outcome says why it failed
    assert http.calls == 1
    finished = await _finished(js, due)
    assert finished.status == "failed" and finished.error is not None and finished.error.type == "internal"
    assert "outcome cannot be built" in finished.error.message
    events = await js.stream_info(
        subjects.STREAM_EVENTS, subjects_filter=subjects.run_event(due.task_id, due.run_id, "finished")
    )
    assert events.state.subjects is None or sum(events.state.subjects.values()) == 1


async def test_a_run_whose_start_cannot_be_recorded_is_not_run_until_it_can_be_and_then_runs_once(
    js: JetStreamContext,
) -> None:
    # Given EVENTS rejecting every message (its max_msg_size is tiny)
    http = CountingHttp(Execution(status="succeeded", result={"ok": True}))
    executor = await _executor(js, http)
    config = (await js.stream_info(subjects.STREAM_EVENTS)).config
    await js.update_stream(replace(config, max_msg_size=16))
    due = await _publish_due(js, TaskSpec(name="fine", task_type="immediate", api_url="http://127.0.0.1:9/"))
    # When a runner takes the run, it does not start it: its start cannot be recorded
    pulling = asyncio.create_task(_pull_until_done(js, executor, timeout=60))
    await asyncio.sleep(0)
    deadline = time.monotonic() + 15
    while http.calls == 0 and time.monotonic() < deadline:
        info = await js.consumer_info(subjects.STREAM_WORK, subjects.CONSUMER_RUNNER_API)
        if info.num_redelivered or (info.delivered and info.delivered.consumer_seq >= 2):
            break  # handed back without running
        await asyncio.sleep(0.2)
    assert http.calls == 0
    # Then once EVENTS takes messages again, it runs exactly once and its outcome is recorded
    await js.update_stream(replace(config, max_msg_size=-1))
    await asyncio.wait_for(pulling, 70)
    assert http.calls == 1
    finished = await _finished(js, due)
    assert finished.status == "succeeded"


class SlowVerdicts:
    """Stands in for the store's run verdicts: answers ``verdict`` only once ``release`` is set."""

    def __init__(self, verdict: str = "run") -> None:
        self.verdict = verdict
        self.release = asyncio.Event()
        self.asked = asyncio.Event()

    async def answer(self, msg: Msg) -> None:
        self.asked.set()
        await self.release.wait()
        await msg.respond(codec.encode(api.RunVerdict(verdict=self.verdict)))  # type: ignore[arg-type]


async def _start_recorded(js: JetStreamContext, due: RunDue, seconds: float) -> runs.RunStarted:
    """The run's start on EVENTS, waited for up to ``seconds``."""
    subject = subjects.run_event(due.task_id, due.run_id, "started")
    deadline = time.monotonic() + seconds
    while True:
        try:
            return codec.decode(runs.RunStarted, (await js.get_last_msg(subjects.STREAM_EVENTS, subject)).data)
        except NotFoundError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@dataclass
class HeldForVerdict:
    """A runner that took a run and waits for the store's verdict on it (``store.release`` answers)."""

    executor: RunExecutor
    http: CountingHttp
    store: SlowVerdicts
    due: RunDue
    subscription: Any
    handling: asyncio.Task[None]


async def _held_for_verdict(nc: Client, js: JetStreamContext, verdict: str, name: str) -> HeldForVerdict:
    http = CountingHttp(Execution(status="succeeded", result={"ok": True}))
    executor = await _executor(js, http)
    executor.nc = nc
    executor.verdicts = VerdictAsker(nc, 5.0)
    store = SlowVerdicts(verdict)
    await nc.subscribe(subjects.RUN_VERDICT, cb=store.answer)
    due = await _publish_due(js, TaskSpec(name=name, task_type="immediate", api_url="http://127.0.0.1:9/"))
    subscription = await js.pull_subscribe_bind(durable=subjects.CONSUMER_RUNNER_API, stream=subjects.STREAM_WORK)
    (message,) = await subscription.fetch(1, timeout=5)
    handling = asyncio.create_task(executor.handle(message))
    await asyncio.wait_for(store.asked.wait(), 10)
    return HeldForVerdict(executor, http, store, due, subscription, handling)


async def test_a_first_start_is_recorded_while_the_store_is_asked_and_a_cancelled_run_still_never_runs(
    nc: Client, js: JetStreamContext
) -> None:
    # Given a runner whose store takes its time to say the run was cancelled
    held = await _held_for_verdict(nc, js, "cancelled", "cancelled")
    # When it takes the run: its start is recorded before the verdict comes, with the run's queue time
    started = await _start_recorded(js, held.due, 10)
    assert (started.runner_id, started.queued_at) == ("runner-test", held.due.queued_at)
    assert held.http.calls == 0
    held.store.release.set()
    await asyncio.wait_for(held.handling, 10)
    # Then the work never ran, the run ended cancelled, and the message is settled
    assert held.http.calls == 0
    finished = await _finished(js, held.due)
    assert finished.status == "cancelled" and finished.error is not None
    assert finished.error.message == "cancelled before it started"
    with pytest.raises(nats.errors.TimeoutError):
        await held.subscription.fetch(1, timeout=1)
    await held.subscription.unsubscribe()


async def test_a_run_handed_back_while_its_verdict_is_asked_is_neither_run_nor_reported(
    nc: Client, js: JetStreamContext
) -> None:
    # Given a runner waiting for the store's verdict on a run
    held = await _held_for_verdict(nc, js, "run", "handed back")
    # When the runner stops and hands its runs back, then the verdict comes
    assert held.executor.hand_back_all() == 1
    held.store.release.set()
    await asyncio.wait_for(held.handling, 10)
    # Then the work did not run, no outcome was reported, and the run is delivered again
    assert held.http.calls == 0
    with pytest.raises(NotFoundError):
        await _finished(js, held.due)
    (again,) = await held.subscription.fetch(1, timeout=10)
    assert codec.run_due_decoder.decode(again.data).run_id == held.due.run_id
    assert again.metadata.num_delivered == 2
    await again.ack()
    await held.subscription.unsubscribe()


class LoudHttp(CountingHttp):
    """Writes a long line of output before returning ``outcome``."""

    async def execute(self, spec: TaskSpec, output: RunOutput) -> Execution:
        self.calls += 1
        output.system("x" * 3000)
        return self.outcome


async def test_output_that_would_push_a_large_result_past_the_limit_goes_on_logs_and_the_result_stays(
    js: JetStreamContext,
) -> None:
    # Given a run whose result leaves too little room in its outcome for its output
    size = streams.MAX_PAYLOAD_BYTES - 4096 - 600 - 1500
    http = LoudHttp(Execution(status="succeeded", result="r" * size))
    executor = await _executor(js, http)
    due = await _publish_due(js, TaskSpec(name="big", task_type="immediate", api_url="http://127.0.0.1:9/"))
    # When a runner runs it
    await _pull_until_done(js, executor, timeout=25)
    # Then the outcome keeps the result, and the output is a chunk on LOGS the outcome counts
    finished = await _finished(js, due)
    assert finished.status == "succeeded" and finished.result == "r" * size
    assert finished.log == [] and finished.log_chunks == 1
    chunk = await js.get_last_msg(subjects.STREAM_LOGS, subjects.log_chunks(due.task_id, due.run_id))
    assert codec.log_chunk_decoder.decode(chunk.data).data == "x" * 3000 + "\n"
