"""publish_durably against a real nats-server that is stopped and started again mid-retry; publish_async's
acknowledgements, refusals and window."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, NoStreamResponseError

from proto import streams
from services.common.publishing import (
    AckedPublishes,
    PublishFailed,
    RetryPolicy,
    abandon,
    acknowledged,
    publish,
    publish_async,
    publish_durably,
)
from taskmesh.processes import NatsServer

QUICK = RetryPolicy(within=timedelta(seconds=12), attempt_timeout=timedelta(seconds=1))


async def _stream(js: JetStreamContext) -> None:
    await js.add_stream(js_api.StreamConfig(name="T", subjects=["t.>"], duplicate_window=120.0))


async def test_a_publish_repeated_while_the_server_restarts_is_acknowledged_and_stored_once(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    await _stream(js)
    await asyncio.to_thread(nats_server.stop)
    publishing = asyncio.create_task(publish_durably(js, "t.one", b"x", "id-1", policy=QUICK))
    await asyncio.sleep(1.5)
    assert not publishing.done()
    await asyncio.to_thread(nats_server.start)  # same port, same store directory
    ack = await asyncio.wait_for(publishing, 15)
    assert ack.stream == "T"
    again = await publish_durably(js, "t.one", b"x", "id-1", policy=QUICK)
    assert again.duplicate and again.seq == ack.seq
    assert (await js.stream_info("T")).state.messages == 1


async def test_a_repeat_of_an_id_that_already_landed_is_a_duplicate_not_a_second_message(js: JetStreamContext) -> None:
    await _stream(js)
    first = await js.publish("t.two", b"x", headers={"Nats-Msg-Id": "id-2"})
    ack = await publish_durably(js, "t.two", b"x", "id-2", policy=QUICK)
    assert ack.duplicate and ack.seq == first.seq
    assert (await js.stream_info("T")).state.messages == 1


async def test_a_publish_gives_up_after_its_window_with_a_clear_error_and_no_hang(
    nc: Client, js: JetStreamContext, nats_server: NatsServer
) -> None:
    await _stream(js)
    await asyncio.to_thread(nats_server.stop)
    started = time.monotonic()
    with pytest.raises(PublishFailed) as failed:
        await publish_durably(
            js,
            "t.three",
            b"x",
            "id-3",
            policy=RetryPolicy(within=timedelta(seconds=2), attempt_timeout=timedelta(seconds=1)),
        )
    assert 2 <= time.monotonic() - started < 4
    assert failed.value.attempts >= 2
    await asyncio.to_thread(nats_server.start)  # so the client closes as usual
    deadline = time.monotonic() + 10
    while not nc.is_connected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def test_an_error_a_repeat_cannot_fix_is_raised_at_once(js: JetStreamContext) -> None:
    await _stream(js)
    started = time.monotonic()
    with pytest.raises(BadRequestError):
        await publish_durably(js, "t.four", b"x", "id-4", headers={"Nats-Expected-Stream": "OTHER"}, policy=QUICK)
    assert time.monotonic() - started < 1


async def test_a_publish_without_an_id_is_refused() -> None:
    with pytest.raises(ValueError, match="Nats-Msg-Id"):
        await publish_durably(None, "t.five", b"x", "")  # type: ignore[arg-type]


def test_the_retry_window_is_shorter_than_every_duplicate_window_and_at_least_one_election() -> None:
    window = streams.PUBLISH_RETRY_WINDOW.total_seconds()
    assert window >= 10
    for spec in streams.streams().values():
        assert window < (spec.config.duplicate_window or 120.0), spec.config.name


async def test_publishes_made_back_to_back_never_yield_and_are_all_acknowledged_in_order(js: JetStreamContext) -> None:
    await _stream(js)
    turned: list[bool] = []
    asyncio.get_running_loop().call_soon(turned.append, True)
    futures = [await publish_async(js, f"t.{number}", b"x", seconds=5) for number in range(300)]
    # Not one publish gave the loop a turn, so nats-py's flusher writes all of them at once.
    assert not turned
    acks = await acknowledged(futures, 10)
    assert [ack.seq for ack in acks] == list(range(1, 301))
    assert (await js.stream_info("T")).state.messages == 300


async def test_no_room_for_a_publish_within_its_deadline_raises_and_abandoned_publishes_free_their_room(
    nc: Client,
) -> None:
    await nc.subscribe("silent.>", cb=_never_answer)  # a responder that never acknowledges
    publishes = AckedPublishes(nc, max_pending=1)
    held = await publishes.publish("silent.one", b"x", seconds=1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await publishes.publish("silent.two", b"x", seconds=0.2)
    with pytest.raises(TimeoutError):
        await acknowledged([held], 0.2)
    assert time.monotonic() - started < 5
    assert held.cancelled()  # given up: its room is free again
    again = await publishes.publish("silent.three", b"x", seconds=1)
    abandon([again])
    assert again.cancelled()
    abandon([await publishes.publish("silent.four", b"x", seconds=1)])  # its room came back too


async def test_a_publish_the_stream_refuses_fails_with_the_error_at_once_and_never_hangs(js: JetStreamContext) -> None:
    await _stream(js)
    refused = await publish_async(js, "t.refused", b"x", seconds=5, headers={"Nats-Expected-Stream": "OTHER"})
    taken = await publish_async(js, "t.taken", b"x", seconds=5)
    started = time.monotonic()
    with pytest.raises(BadRequestError, match="expected stream"):
        await acknowledged([refused, taken], 10)
    assert time.monotonic() - started < 5  # the refusal is an answer, not a wait for the deadline
    assert (await taken).seq == 1 and (await js.stream_info("T")).state.messages == 1


async def test_a_publish_to_a_subject_no_stream_takes_fails_as_no_responders(js: JetStreamContext) -> None:
    with pytest.raises(NoStreamResponseError):
        await acknowledged([await publish_async(js, "nowhere.at.all", b"x", seconds=5)], 10)


async def test_a_publish_never_acknowledged_fails_at_its_deadline(nc: Client) -> None:
    await nc.subscribe("silent.>", cb=_never_answer)
    js = nc.jetstream()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await publish(js, "silent.one", b"x", seconds=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    await _stream(js)
    assert (await publish(js, "t.after", b"x", seconds=5)).seq == 1  # the connection's publishing goes on


async def _never_answer(_: object) -> None:
    return None
