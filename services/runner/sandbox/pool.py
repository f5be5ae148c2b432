"""The warm pool: containers already started and blocked on their one payload, per shape.

Starting a container costs ~170 ms of runc/containerd work; pre-creating alone saves ~7 ms. So
the pool keeps containers *started*, each waiting on stdin for exactly one run, then removed.
A shape (image, requirement set, network, limits) stays hot while it is used; the default shape
is always hot. Containers that waited longer than ``max_idle`` are replaced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.runner.sandbox.channel import Channel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shape:
    """Everything a sandbox is created with; runs of one shape can use each other's warm containers."""

    image: str
    network: str = "none"
    memory_mb: int = 512
    cpus: float = 0.5
    deps_key: str | None = None
    deps_host_path: str | None = None
    deps_in_sandbox: str | None = None


@dataclass
class Sandbox:
    """A started container waiting for its payload."""

    container_id: str
    channel: Channel
    shape: Shape
    started: float = field(default_factory=time.monotonic)
    start_ms: float = 0.0


class WarmPool:
    """Started containers by shape, refilled in the background one at a time."""

    def __init__(self, create: Callable[[Shape], Awaitable[Sandbox]], remove: Callable[[str], Awaitable[None]],
                 size: int, max_idle_seconds: float, default_shape: Shape | None) -> None:
        self.create = create
        self.remove = remove
        self.size = size
        self.max_idle = max_idle_seconds
        self.ready: dict[Shape, deque[Sandbox]] = {}
        self.hot: dict[Shape, float] = {}
        self.default_shape = default_shape
        self._wake = asyncio.Event()
        self.hits = 0
        self.misses = 0

    def take(self, shape: Shape) -> Sandbox | None:
        """A warm container of this shape, or None (the caller starts one cold)."""
        self.hot[shape] = time.monotonic()
        self._wake.set()
        waiting = self.ready.get(shape)
        while waiting:
            sandbox = waiting.popleft()
            if time.monotonic() - sandbox.started < self.max_idle:
                self.hits += 1
                return sandbox
            self._discard(sandbox)
        self.misses += 1
        return None

    def count(self) -> int:
        return sum(len(q) for q in self.ready.values())

    def _discard(self, sandbox: Sandbox) -> None:
        sandbox.channel.close()
        asyncio.get_running_loop().create_task(self._quietly_remove(sandbox.container_id))

    async def _quietly_remove(self, container_id: str) -> None:
        try:
            await self.remove(container_id)
        except Exception as exc:  # the reaper gets it later
            log.debug("pool removal of %s failed: %s", container_id[:12], exc)

    async def run(self, stop: asyncio.Event, usable: Callable[[], bool]) -> None:
        """Keep hot shapes filled until ``stop``."""
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            now = time.monotonic()
            if self.default_shape is not None:
                self.hot[self.default_shape] = now
            for shape in [s for s, used in self.hot.items() if now - used > self.max_idle]:
                del self.hot[shape]
                for sandbox in self.ready.pop(shape, deque()):
                    self._discard(sandbox)
            for queue in self.ready.values():
                while queue and now - queue[0].started >= self.max_idle:
                    self._discard(queue.popleft())
            wanted = [s for s in self.hot if len(self.ready.get(s, ())) < self.size] if usable() else []
            if wanted:
                try:
                    sandbox = await self.create(wanted[0])
                    self.ready.setdefault(wanted[0], deque()).append(sandbox)
                    failures = 0
                except Exception as exc:  # engine hiccup: back off, the runs start cold meanwhile
                    failures += 1
                    log.warning("warm pool refill failed: %s", exc)
                    await _sleep_or(self._wake, stop, min(30.0, 0.5 * 2 ** failures))
                continue
            await _sleep_or(self._wake, stop, 5.0)

    async def close(self) -> None:
        for queue in self.ready.values():
            for sandbox in queue:
                sandbox.channel.close()
                await self._quietly_remove(sandbox.container_id)
        self.ready.clear()


async def _sleep_or(wake: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
