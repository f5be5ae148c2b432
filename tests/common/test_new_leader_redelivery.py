"""A new leader gets at once what its dead predecessor took and never acknowledged, not after
the consumer's ack wait (reads would trail what the dead leader had already answered)."""

from __future__ import annotations

import logging

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from proto import streams, subjects
from services.common.natsio import ensure_consumer, ensure_stream, redeliver_unacknowledged

PATIENCE_SECONDS = 3.0
"""Well inside every leader consumer's ack wait: a message seen again this soon was not waited out."""


@pytest.mark.parametrize(
    "name",
    [subjects.CONSUMER_STORE_TASKS, subjects.CONSUMER_STORE_EVENTS, subjects.CONSUMER_SCHEDULER_TASKS],
)
async def test_what_a_dead_leader_held_is_delivered_to_the_next_at_once(
    nc: Client, js: JetStreamContext, name: str
) -> None:
    spec = streams.CONSUMERS[name]
    assert spec.config.ack_wait is not None and spec.config.ack_wait > 2 * PATIENCE_SECONDS
    await ensure_stream(js, streams.streams()[spec.stream])
    await ensure_consumer(js, name)
    subject = (
        subjects.task_event("t1", "submitted")
        if spec.stream == subjects.STREAM_TASKS
        else subjects.run_event("t1", "r1", "queued")
    )
    for n in range(4):
        await js.publish(subject, str(n).encode())

    dead = await js.pull_subscribe_bind(durable=name, stream=spec.stream)
    taken = await dead.fetch(4, timeout=2)
    await taken[0].ack_sync()  # the rest: taken, never acknowledged (the leader was killed)
    await dead.unsubscribe()

    await redeliver_unacknowledged(nc, name)

    successor = await js.pull_subscribe_bind(durable=name, stream=spec.stream)
    again = await successor.fetch(4, timeout=PATIENCE_SECONDS)
    assert [m.data for m in again] == [b"1", b"2", b"3"]  # the acknowledged one stays done
    await successor.unsubscribe()


async def test_a_reset_that_fails_is_logged_and_leading_goes_on(
    nc: Client, js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    # No LOGS stream, so no consumer to reset: the failure is a warning, not an exception.
    with caplog.at_level(logging.WARNING, logger="services.common.natsio"):
        await redeliver_unacknowledged(nc, subjects.CONSUMER_STORE_LOGS)
    assert any("store-logs not reset" in r.getMessage() for r in caplog.records), caplog.text
