"""within_deadline and settle_each: a NATS call that never completes gives up; the acks of a batch
all arrive, and one that fails or hangs holds back no other."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from services.common.poison import settle_each, within_deadline


async def test_a_call_that_never_completes_gives_up_with_a_timeout_and_is_cancelled() -> None:
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await within_deadline(never, seconds=0.05)
    assert never.cancelled()


async def test_every_ack_of_a_batch_settled_one_by_one_reaches_the_server(js: JetStreamContext) -> None:
    await js.add_stream(js_api.StreamConfig(name="D", subjects=["d.>"]))
    for number in range(300):
        await js.publish("d.x", str(number).encode())
    subscription = await js.pull_subscribe("d.x", durable="settle", config=js_api.ConsumerConfig(ack_wait=60))
    messages = await subscription.fetch(300, timeout=5)
    assert len(messages) == 300
    for message in messages:
        await within_deadline(message.ack())  # buffers only: nothing is written until the loop turns
    async with asyncio.timeout(10):
        while (info := await subscription.consumer_info()).num_ack_pending:
            await asyncio.sleep(0.05)
    assert info.num_pending == 0 and info.delivered.consumer_seq == 300


async def test_a_batch_settled_under_one_deadline_reaches_the_server_and_a_failing_ack_costs_only_itself(
    js: JetStreamContext,
) -> None:
    await js.add_stream(js_api.StreamConfig(name="E", subjects=["e.>"]))
    for number in range(300):
        await js.publish("e.x", str(number).encode())
    subscription = await js.pull_subscribe("e.x", durable="batch", config=js_api.ConsumerConfig(ack_wait=60))
    messages = await subscription.fetch(300, timeout=5)
    refused = messages[7]

    async def ack(message: Msg) -> None:
        if message is refused:
            raise RuntimeError("this one fails")
        await message.ack()

    assert await settle_each(messages, ack) == 299
    async with asyncio.timeout(10):
        while (info := await subscription.consumer_info()).num_ack_pending != 1:
            await asyncio.sleep(0.05)
    assert info.num_pending == 0


async def test_settling_that_hangs_leaves_the_rest_unsettled_at_the_deadline() -> None:
    settled: list[int] = []
    never = asyncio.get_running_loop().create_future()

    async def settle(number: int) -> None:
        if number == 2:
            await never
        settled.append(number)

    assert await settle_each([1, 2, 3], settle, seconds=0.05) == 1  # type: ignore[list-item, arg-type]
    assert settled == [1]
    assert never.cancelled()
