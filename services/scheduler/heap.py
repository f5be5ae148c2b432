"""Pending timers ordered by due time: a binary heap with lazy removal (O(log n) per change)."""

from __future__ import annotations

import heapq
import itertools


class TimerHeap:
    """Keys ordered by due time (epoch seconds). Re-adding a key supersedes its older entry."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._due)

    def put(self, key: str, due: float) -> bool:
        """Schedule ``key`` at ``due``; True if it is now the earliest timer."""
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._order), key))
        self._drop_stale()
        return self._heap[0][2] == key

    def discard(self, key: str) -> None:
        """Forget ``key`` (its heap entry is skipped when reached)."""
        self._due.pop(key, None)

    def next_due(self) -> float | None:
        """Due time of the earliest live timer."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float, limit: int = 10_000) -> list[str]:
        """Remove and return up to ``limit`` keys due at or before ``now``, earliest first."""
        found: list[str] = []
        while self._heap and len(found) < limit:
            due, _, key = self._heap[0]
            if self._due.get(key) != due:
                heapq.heappop(self._heap)
                continue
            if due > now:
                break
            heapq.heappop(self._heap)
            del self._due[key]
            found.append(key)
        return found

    def _drop_stale(self) -> None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
