"""ContinuousPull against a real nats-server: requests stay open, a batch bounds what is held, and
requests lost to a restart or ended by the server are asked again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from services.common.pulling import ContinuousPull
from taskmesh.processes import NatsServer


async def _consumer(js: JetStreamContext) -> None:
    await js.add_stream(js_api.StreamConfig(name="P", subjects=["p.>"]))
    await js.add_consumer(
        "P", js_api.ConsumerConfig(durable_name="d", ack_policy=js_api.AckPolicy.EXPLICIT, ack_wait=30.0)
    )


async def _stream_of(js: JetStreamContext, count: int) -> None:
    """The consumer, with ``count`` messages "0", "1", … waiting for it."""
    await _consumer(js)
    for i in range(count):
        await js.publish("p.x", str(i).encode())


async def _pull_requests(nc: Client) -> list[Msg]:
    """Every pull request the server is sent for the consumer, as a client would see it."""
    seen: list[Msg] = []

    async def on_request(message: Msg) -> None:
        seen.append(message)

    await nc.subscribe("$JS.API.CONSUMER.MSG.NEXT.P.d", cb=on_request)
    await nc.flush()
    return seen


async def _until(condition: Callable[[], bool | Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_messages_published_one_at_a_time_flow_through_the_open_request(nc: Client, js: JetStreamContext) -> None:
    await _consumer(js)
    requests = await _pull_requests(nc)
    pull = await ContinuousPull(nc, "P", "d", 64).start()
    try:
        for i in range(40):
            await js.publish("p.x", str(i).encode())
            taken = await pull.next_batch(5.0)
            assert [m.data for m in taken] == [str(i).encode()]
            await taken[0].ack()
        # nats-py's fetch sends two requests for each of these 40 messages; the open request
        # asked for 64 and is topped up once half of it is used.
        assert 1 <= len(requests) <= 3
    finally:
        await pull.close()


async def test_no_more_than_a_batch_is_delivered_before_it_is_taken(nc: Client, js: JetStreamContext) -> None:
    await _stream_of(js, 50)
    pull = await ContinuousPull(nc, "P", "d", 8).start()
    try:
        await _until(lambda: pull.held == 8)
        info = await js.consumer_info("P", "d")
        assert info.num_ack_pending == 8 and info.num_pending == 42
        got: list[bytes] = []
        while len(got) < 50:
            batch = await pull.next_batch(5.0)
            assert 1 <= len(batch) <= 8
            assert pull.held + pull.owed <= 8
            for message in batch:
                got.append(message.data)
                await message.ack()
        assert got == [str(i).encode() for i in range(50)]  # in stream order
    finally:
        await pull.close()


async def test_requests_the_server_lets_expire_are_asked_again(nc: Client, js: JetStreamContext) -> None:
    await _consumer(js)
    requests = await _pull_requests(nc)
    pull = await ContinuousPull(nc, "P", "d", 16, expires=0.3, heartbeat=0.1).start()
    try:
        await _until(lambda: len(requests) >= 3)  # each expiry is answered with a new request
        await js.publish("p.x", b"late")
        assert [m.data for m in await pull.next_batch(5.0)] == [b"late"]
    finally:
        await pull.close()


async def test_requests_lost_with_a_server_restart_are_asked_again(
    nc: Client, js: JetStreamContext, nats_server: NatsServer
) -> None:
    await _consumer(js)
    pull = await ContinuousPull(nc, "P", "d", 16, heartbeat=0.2).start()
    try:
        await asyncio.to_thread(nats_server.stop)
        await asyncio.to_thread(nats_server.start)  # same port and store: the consumer survives, its requests do not
        await _until(lambda: nc.is_connected)
        await _until(lambda: _published(js))
        taken = await pull.next_batch(10.0)
        assert [m.data for m in taken] == [b"after"]
    finally:
        await pull.close()


async def _published(js: JetStreamContext) -> bool:
    try:
        await js.publish(
            "p.x", b"after", timeout=1.0, headers={"Nats-Msg-Id": "after"}
        )  # a repeat is no second message
    except Exception:  # JetStream still recovering
        return False
    return True


async def test_a_stop_returns_a_waiting_next_batch_at_once(nc: Client, js: JetStreamContext) -> None:
    await _consumer(js)
    stop = asyncio.Event()
    pull = await ContinuousPull(nc, "P", "d", 16).start(stop)
    try:
        waiting = asyncio.create_task(pull.next_batch(60.0))
        done, _ = await asyncio.wait({waiting}, timeout=0.1)
        assert not done  # nothing to take: it waits
        stop.set()
        assert await asyncio.wait_for(waiting, 2.0) == []
    finally:
        await pull.close()


async def test_with_a_capacity_no_more_is_asked_for_than_can_be_taken_on(nc: Client, js: JetStreamContext) -> None:
    await _stream_of(js, 10)
    free = [3]
    pull = await ContinuousPull(nc, "P", "d", 8, capacity=lambda: free[0]).start()
    try:
        await _until(lambda: pull.held == 3)
        taken = await pull.next_batch(5.0, limit=free[0])
        free[0] = 0  # every slot busy: nothing more may be delivered here
        assert [m.data for m in taken] == [b"0", b"1", b"2"]
        assert await pull.next_batch(0.3) == []
        assert (await js.consumer_info("P", "d")).num_ack_pending == 3
        free[0] = 2
        taken += await pull.next_batch(5.0)
        assert [m.data for m in taken] == [str(i).encode() for i in range(len(taken))] and len(taken) <= 5
    finally:
        await pull.close()


async def test_messages_held_but_not_taken_are_handed_back_on_close(nc: Client, js: JetStreamContext) -> None:
    await _stream_of(js, 5)
    pull = await ContinuousPull(nc, "P", "d", 8).start()
    await _until(lambda: pull.held == 5)
    await pull.close()
    # Redelivered now, not after the 30 s ack wait.
    again = await ContinuousPull(nc, "P", "d", 8).start()
    try:
        taken = await again.next_batch(5.0)
        assert sorted(m.data for m in taken) == [str(i).encode() for i in range(5)]
        assert all(m.metadata.num_delivered == 2 for m in taken)
    finally:
        await again.close()


async def test_a_stored_message_that_looks_like_a_status_is_delivered_like_any_other(
    nc: Client, js: JetStreamContext
) -> None:
    await _consumer(js)
    await js.publish("p.x", b"", headers={"Status": "408", "Nats-Pending-Messages": "5"})
    await js.publish("p.x", b"next")
    pull = await ContinuousPull(nc, "P", "d", 8).start()
    try:
        taken = await pull.next_batch(5.0)
        while len(taken) < 2:
            taken += await pull.next_batch(5.0)
        assert [m.data for m in taken] == [b"", b"next"]
        assert taken[0].headers is not None and taken[0].headers.get("Status") == "408"
    finally:
        await pull.close()
