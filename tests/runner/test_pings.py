"""A runner's liveness ping is answered only by that runner: answers are signed with the key its id
names, and whatever else arrives on its subject (another runner's answer, a forged "no responders")
does not count. On a real nats-server; the impostor is a second connection, as another runner is."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from proto import codec, control, subjects
from services.runner import claim, pings
from services.runner.identity import RunnerIdentity, signed_by
from taskmesh.processes import NatsServer

RUN = "run-1"
DEADLINE = 5.0
"""The asker's deadline where the runner answers 0.3 s late: far beyond it, so that a test process
stalled late in a long run (a CI run once took over 1 s here) still sees the signed answer in time."""


@pytest.fixture
async def other(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A second connection: another runner, the one asking."""
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def impostor(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A third: a runner (or whoever holds the runners' shared password) answering for another."""
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


PROBE_RUN = "probe"
"""The run asked about by ``_until_routed``: the test doubles answer it at once, and so does a runner."""


async def _until_routed(asker: Client, runner_id: str, subscribers: int = 1) -> None:
    """Wait until what ``asker`` sends on the runner's ping subject reaches ``subscribers`` subscribers.

    A subscriber's flush is not enough: on nats-server 2.15.1 here, about one request in 40 sent
    by another connection right after it was still answered "no responders" (a retry a moment
    later reached the subscriber).
    """
    deadline = time.monotonic() + DEADLINE
    inbox = asker.new_inbox()
    replies = await asker.subscribe(inbox)
    try:
        while True:
            probe = control.RunnerPing(nonce=b"\0" * control.PING_NONCE_BYTES, run_id=PROBE_RUN)
            await asker.publish(subjects.runner_ping(runner_id), codec.encode(probe), reply=inbox)
            answered = 0
            try:
                while answered < subscribers:
                    reply = await replies.next_msg(timeout=0.2)
                    if not (reply.headers and reply.headers.get("Status") == "503"):  # the server's "nobody"
                        answered += 1
                return
            except nats.errors.TimeoutError:
                assert time.monotonic() < deadline, f"{answered} of {subscribers} subscribers reached"
    finally:
        await replies.unsubscribe()


def _is_probe(msg: Msg) -> bool:
    return PROBE_RUN.encode() in msg.data


async def _impostor(nc: Client, runner_id: str, reply: bytes, headers: dict[str, str] | None = None) -> None:
    """Answers ``runner_id``'s pings at once with ``reply``, as a runner holding the shared user can."""

    async def answer(msg: Msg) -> None:
        await nc.publish(msg.reply, b"probed" if _is_probe(msg) else reply, headers=None if _is_probe(msg) else headers)

    await nc.subscribe(subjects.runner_ping(runner_id), cb=answer)
    await nc.flush()


async def _slow_runner(nc: Client, runner: RunnerIdentity, answer: control.PingAnswer, delay: float) -> None:
    """``runner`` answering its pings ``delay`` seconds late, so that an impostor's answer comes first."""
    subject = subjects.runner_ping(runner.runner_id)

    async def pong(msg: Msg) -> None:
        if _is_probe(msg):
            await nc.publish(msg.reply, b"probed")
            return
        ping = codec.decode(control.RunnerPing, msg.data)
        await asyncio.sleep(delay)
        signature = runner.sign(control.pong_statement(subject, ping, answer))
        await nc.publish(msg.reply, codec.encode(control.RunnerPong(answer=answer, signature=signature)))

    await nc.subscribe(subject, cb=pong)
    await nc.flush()


def _signed_by_impostor(answer: control.PingAnswer) -> bytes:
    """A well-formed answer, signed by a key that is not the addressed runner's."""
    own = RunnerIdentity.generate()
    return codec.encode(control.RunnerPong(answer=answer, signature=own.sign(b"anything")))


async def test_a_runner_answers_whether_it_holds_a_run_and_the_asker_accepts_it(nc: Client, other: Client) -> None:
    runner = RunnerIdentity.generate()
    held = {RUN}
    await pings.answer_pings(nc, runner, lambda run_id: run_id in held)
    await _until_routed(other, runner.runner_id)

    assert await pings.ask(other, runner.runner_id) == "alive"
    assert await pings.ask(other, runner.runner_id, RUN) == "holding"
    assert await claim.holder_busy(other, runner.runner_id, RUN)
    held.clear()
    assert await pings.ask(other, runner.runner_id, RUN) == "free"
    assert not await claim.holder_busy(other, runner.runner_id, RUN)


async def test_a_runner_nobody_answers_for_is_gone(nc: Client) -> None:
    assert await pings.ask(nc, RunnerIdentity.generate().runner_id, RUN) == "gone"


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(b"free", id="the old plain answer"),
        pytest.param(_signed_by_impostor("free"), id="signed by another key"),
        pytest.param(b"{not json", id="garbage"),
    ],
)
async def test_an_impostor_cannot_answer_free_for_a_runner_that_holds_the_run(
    nc: Client, other: Client, impostor: Client, forged: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a runner holding a run, and an impostor who answers its pings with "free", first
    runner = RunnerIdentity.generate()
    await _impostor(impostor, runner.runner_id, forged)
    await _slow_runner(nc, runner, "holding", delay=0.3)
    await _until_routed(other, runner.runner_id, subscribers=2)
    # When another runner asks whether it still holds the run
    with caplog.at_level(logging.WARNING, logger=pings.__name__):
        busy = await claim.holder_busy(other, runner.runner_id, RUN)
        answer = await pings.ask(other, runner.runner_id, RUN, timeout=DEADLINE)
    # Then the runner's own answer counts, and the impostor's is logged and ignored
    assert busy
    assert answer == "holding"
    assert "not signed by it" in caplog.text


async def test_an_impostor_on_a_gone_runners_subject_leaves_the_asker_unsure_not_told_free(
    other: Client, impostor: Client
) -> None:
    gone = RunnerIdentity.generate()
    await _impostor(impostor, gone.runner_id, _signed_by_impostor("free"))
    await _until_routed(other, gone.runner_id)

    assert await pings.ask(other, gone.runner_id, RUN, timeout=0.5) == "unsure"
    assert await claim.holder_busy(other, gone.runner_id, RUN)  # so no second start of a run it may hold


async def test_a_forged_no_responders_status_does_not_make_a_live_runner_gone(
    nc: Client, other: Client, impostor: Client
) -> None:
    # Given an impostor sending the server's "no responders" status to every ping of a live runner
    runner = RunnerIdentity.generate()
    await _impostor(impostor, runner.runner_id, b"", headers={"Status": "503"})
    await _slow_runner(nc, runner, "alive", delay=0.3)
    await _until_routed(other, runner.runner_id, subscribers=2)
    # When the runner is asked whether it is alive (the reaper's question), Then its signed answer wins
    assert await pings.ask(other, runner.runner_id, timeout=DEADLINE) == "alive"


async def test_a_ping_that_does_not_decode_gets_no_answer_and_the_next_one_does(nc: Client, other: Client) -> None:
    runner = RunnerIdentity.generate()
    await pings.answer_pings(nc, runner, lambda run_id: False)
    await _until_routed(other, runner.runner_id)

    with pytest.raises(nats.errors.TimeoutError):
        await other.request(subjects.runner_ping(runner.runner_id), b"\xff" * 64, timeout=0.5)
    assert await pings.ask(other, runner.runner_id) == "alive"


def test_a_signature_counts_only_for_the_id_of_its_key_and_the_statement_signed() -> None:
    runner, someone = RunnerIdentity.generate(), RunnerIdentity.generate()
    statement = b"statement"
    signature = runner.sign(statement)

    assert signed_by(runner.runner_id, statement, signature)
    assert not signed_by(someone.runner_id, statement, signature)
    assert not signed_by(runner.runner_id, b"another statement", signature)
    assert not signed_by("0123456789ab", statement, signature)  # an id that is no key (an older runner's)
    assert not signed_by(runner.runner_id.upper() + "!", statement, signature)
