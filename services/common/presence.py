"""Presence: every service announces itself by heartbeat; the registry remembers who is alive."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from datetime import timedelta

from nats.aio.client import Client

from proto import codec, subjects
from proto.control import Heartbeat

log = logging.getLogger(__name__)


def hostname() -> str:
    """This machine's (or container's) name."""
    return socket.gethostname()


async def announce_forever(
    nc: Client,
    make: Callable[[], Heartbeat],
    interval: timedelta,
    stop: asyncio.Event,
    nudge: asyncio.Event | None = None,
) -> None:
    """Publish ``make()`` every ``interval`` until ``stop``, and at once whenever ``nudge`` is set
    (a change others should hear about now, such as becoming leader); quiet while NATS is away."""
    nudge = nudge or asyncio.Event()

    async def on_probe(_: object) -> None:
        nudge.set()

    probes = await nc.subscribe(subjects.PRESENCE_PROBE, cb=on_probe)
    while not stop.is_set():
        nudge.clear()
        beat = make()
        try:
            await nc.publish(subjects.heartbeat(beat.service, beat.instance_id), codec.encode(beat))
        except Exception as exc:  # disconnected: the next beat will do
            log.debug("heartbeat not sent: %s", exc)
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(nudge.wait())]
        try:
            await asyncio.wait(waiters, timeout=interval.total_seconds(), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
    try:
        await probes.unsubscribe()
    except Exception:  # connection closing
        pass


class ServiceRegistry:
    """The latest heartbeat of every instance, and which of them are alive."""

    def __init__(self, stale_after: timedelta = timedelta(seconds=7)) -> None:
        self.stale_after = stale_after.total_seconds()
        self._beats: dict[str, tuple[float, Heartbeat]] = {}

    def observe(self, beat: Heartbeat) -> None:
        """Remember ``beat`` as received now."""
        self._beats[beat.instance_id] = (time.monotonic(), beat)

    def alive(self, service: str | None = None) -> list[Heartbeat]:
        """Instances heard from recently, optionally of one service, sorted by service and id."""
        now = time.monotonic()
        for key in [k for k, (seen, _) in self._beats.items() if now - seen > self.stale_after * 10]:
            del self._beats[key]  # forget long-gone instances
        found = [
            beat
            for seen, beat in self._beats.values()
            if now - seen <= self.stale_after and (service is None or beat.service == service)
        ]
        return sorted(found, key=lambda b: (b.service, b.instance_id))

    async def follow(self, nc: Client) -> object:
        """Subscribe to every heartbeat; returns the subscription."""

        async def on_beat(msg: object) -> None:
            try:
                self.observe(codec.heartbeat_decoder.decode(msg.data))  # type: ignore[attr-defined]  # the decoder is built once in proto.codec
            except Exception:  # a foreign or newer message: ignore it
                log.debug("undecodable heartbeat on %s", getattr(msg, "subject", "?"))

        subscription = await nc.subscribe(subjects.HEARTBEATS_ALL, cb=on_beat)
        await nc.publish(subjects.PRESENCE_PROBE, b"")  # a roll call, instead of waiting a whole interval
        return subscription
