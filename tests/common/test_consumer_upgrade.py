"""A durable consumer made by an older version with another ack policy is carried over, not stalled."""

from __future__ import annotations

from dataclasses import replace

from nats.js import JetStreamContext
from nats.js import api as js_api

from proto import streams, subjects
from services.common.natsio import ensure_consumer, ensure_stream


async def test_an_ack_all_store_consumer_becomes_explicit_from_its_ack_floor(js: JetStreamContext) -> None:
    await ensure_stream(js, streams.streams()[subjects.STREAM_TASKS])
    spec = streams.CONSUMERS[subjects.CONSUMER_STORE_TASKS]
    assert spec.config.ack_policy == js_api.AckPolicy.EXPLICIT
    # What an earlier version created: the same durable acknowledging all up to each ack.
    await js.add_consumer(spec.stream, replace(spec.config, ack_policy=js_api.AckPolicy.ALL))
    for n in range(5):
        await js.publish(subjects.task_event(f"t{n}", "submitted"), str(n).encode())
    old = await js.pull_subscribe_bind(durable=subjects.CONSUMER_STORE_TASKS, stream=spec.stream)
    taken = await old.fetch(3, timeout=2)
    await taken[1].ack_sync()  # covers the first too; the third stays delivered but unacknowledged
    await old.unsubscribe()

    await ensure_consumer(js, subjects.CONSUMER_STORE_TASKS)

    info = await js.consumer_info(spec.stream, subjects.CONSUMER_STORE_TASKS)
    assert info.config.ack_policy == js_api.AckPolicy.EXPLICIT
    new = await js.pull_subscribe_bind(durable=subjects.CONSUMER_STORE_TASKS, stream=spec.stream)
    again = await new.fetch(10, timeout=2)
    assert [m.data for m in again] == [b"2", b"3", b"4"]  # acknowledged ones stay done
    for message in again:
        await message.ack_sync()
    info = await js.consumer_info(spec.stream, subjects.CONSUMER_STORE_TASKS)
    assert info.num_ack_pending == 0 and info.num_pending == 0
    await new.unsubscribe()

    await ensure_consumer(js, subjects.CONSUMER_STORE_TASKS)  # already right: left alone
    assert (await js.consumer_info(spec.stream, subjects.CONSUMER_STORE_TASKS)).num_pending == 0
