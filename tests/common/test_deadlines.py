"""within_deadline: a NATS call that never completes gives up; the acks of a batch all arrive."""

from __future__ import annotations

import asyncio

import pytest
from nats.js import JetStreamContext
from nats.js import api as js_api

from services.common.poison import within_deadline


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
