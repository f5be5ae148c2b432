"""The warm pool: containers already started and blocked on their one payload, per shape.

Starting a container costs ~170 ms of runc/containerd work; pre-creating alone saves ~7 ms. So
the pool keeps containers *started*, each waiting on stdin for exactly one run, then removed.
A shape (image, requirement set, network, limits) becomes hot on its second use within
``max_idle`` and stays hot while it is used; the default shape is always hot. Containers that
waited longer than ``max_idle`` are replaced. All shapes together keep at most ``max_ready``
containers waiting (the default shape first, then the most recently used), so runs of many
distinct shapes cost cold starts, never hundreds of idle containers.
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

    def __init__(
        self,
        create: Callable[[Shape], Awaitable[Sandbox]],
        remove: Callable[[str], Awaitable[None]],
        size: int,
        max_idle_seconds: float,
        default_shape: Shape | None,
        max_ready: int,
    ) -> None:
        self.create = create
        self.remove = remove
        self.size = size
        self.max_idle = max_idle_seconds
        self.max_ready = max_ready
        self.ready: dict[Shape, deque[Sandbox]] = {}
        self.hot: dict[Shape, float] = {}
        self.seen: dict[Shape, float] = {}  # shapes used once lately: hot at their next use
        self.default_shape = default_shape
        self.settled = asyncio.Event()
        """Set while nothing is being created or removed and every hot shape has its share."""
        self._wake = asyncio.Event()
        self._removals: set[asyncio.Task[None]] = set()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return (
            f"WarmPool(ready={self.count()}/{self.max_ready}, hot={len(self.hot)}, hits={self.hits}, "
            f"misses={self.misses})"
        )

    def take(self, shape: Shape) -> Sandbox | None:
        """A warm container of this shape, or None (the caller starts one cold)."""
        now = time.monotonic()
        if shape in self.hot or now - self.seen.pop(shape, -self.max_idle) < self.max_idle:
            self.hot[shape] = now
            self.settled.clear()
            self._wake.set()
        else:
            self.seen[shape] = now
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
        task = asyncio.get_running_loop().create_task(self._quietly_remove(sandbox.container_id))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    def _plan(self) -> dict[Shape, int]:
        """Containers each hot shape may keep: the default shape first, then by latest use, to the cap."""
        plan, left = {}, self.max_ready
        for shape in sorted(self.hot, key=lambda s: (s != self.default_shape, -self.hot[s])):
            plan[shape] = min(self.size, left)
            left -= plan[shape]
        return plan

    async def _quietly_remove(self, container_id: str) -> None:
        try:
            await self.remove(container_id)
        except Exception as exc:  # the reaper gets it later
            log.debug("pool removal of %s failed: %s", container_id[:12], exc)

    async def run(self, stop: asyncio.Event, usable: Callable[[], bool]) -> None:
        """Keep hot shapes filled, within the cap, until ``stop``."""
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            self._expire(time.monotonic())
            plan = self._plan()
            for shape, queue in list(self.ready.items()):
                while len(queue) > plan.get(shape, 0):
                    self._discard(queue.popleft())
                if not queue:
                    del self.ready[shape]
            wanted = [s for s, n in plan.items() if len(self.ready.get(s, ())) < n] if usable() else []
            if wanted:
                self.settled.clear()
                try:
                    sandbox = await self.create(wanted[0])
                    failures = 0
                except Exception as exc:  # engine hiccup: back off, the runs start cold meanwhile
                    failures += 1
                    log.warning("warm pool refill failed: %s", exc)
                    await _sleep_or(self._wake, stop, min(30.0, 0.5 * 2**failures))
                    continue
                if self.count() < self.max_ready and len(self.ready.get(wanted[0], ())) < self._plan().get(
                    wanted[0], 0
                ):
                    self.ready.setdefault(wanted[0], deque()).append(sandbox)
                else:  # the cap was reached, or the shape cooled, while it started
                    self._discard(sandbox)
                continue
            if self._removals:
                await asyncio.wait(set(self._removals), timeout=5.0)
                continue
            self.settled.set()
            await _sleep_or(self._wake, stop, 5.0)

    def _expire(self, now: float) -> None:
        """Forget shapes unused for ``max_idle``; replace containers that waited that long."""
        if self.default_shape is not None:
            self.hot[self.default_shape] = now
        for shape in [s for s, used in self.hot.items() if now - used > self.max_idle]:
            del self.hot[shape]
        for shape in [s for s, used in self.seen.items() if now - used > self.max_idle]:
            del self.seen[shape]
        for queue in self.ready.values():
            while queue and now - queue[0].started >= self.max_idle:
                self._discard(queue.popleft())

    async def close(self) -> None:
        for queue in self.ready.values():
            for sandbox in queue:
                sandbox.channel.close()
                await self._quietly_remove(sandbox.container_id)
        self.ready.clear()
        if self._removals:
            await asyncio.gather(*self._removals, return_exceptions=True)


async def _sleep_or(wake: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
