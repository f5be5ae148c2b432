"""Slots: how many runs of one kind a runner holds at once; it pulls only as many as are free."""

from __future__ import annotations

import asyncio

from proto.control import SlotUsage


class Slots:
    """A counter of busy slots with a way to wait for one to free up."""

    def __init__(self, name: str, total: int) -> None:
        self.name = name
        self.total = total
        self.busy = 0
        self._freed = asyncio.Event()

    @property
    def free(self) -> int:
        return max(0, self.total - self.busy)

    def take(self) -> None:
        self.busy += 1

    def release(self) -> None:
        self.busy -= 1
        self._freed.set()

    async def wait_free(self, stop: asyncio.Event) -> None:
        """Return when a slot is free or ``stop`` is set."""
        while self.free == 0 and not stop.is_set():
            self._freed.clear()
            stopper = asyncio.ensure_future(stop.wait())
            freed = asyncio.ensure_future(self._freed.wait())
            try:
                await asyncio.wait({stopper, freed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                freed.cancel()

    async def drained(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every slot to be free; True if they are."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.busy > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._freed.clear()
            try:
                await asyncio.wait_for(self._freed.wait(), remaining)
            except TimeoutError:
                return self.busy == 0
        return True

    def usage(self) -> SlotUsage:
        return SlotUsage(total=self.total, busy=self.busy)
