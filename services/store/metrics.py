"""Run statistics kept incrementally: each run's transition into a final state counts once.

They are aggregates that merge and persist (counts per minute and per outcome, histograms, a
bounded sample of recent durations), never a scan of tasks: the store saves them with its
catalog and reads them back at start, so a restart neither loses nor recounts them.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from datetime import datetime

import msgspec

from proto.api import Histogram, Percentiles

DURATION_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)
LAG_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000, 30000)


class CumulativeHistogram:
    """A Prometheus-style histogram (cumulative buckets, +Inf last)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def restore(self, buckets: list[int], total: float, count: int) -> None:
        """Take saved (non-cumulative) buckets back, if they have this histogram's shape."""
        if len(buckets) == len(self.buckets):
            self.buckets, self.total, self.count = list(buckets), total, count

    def snapshot(self) -> Histogram:
        cumulative, running = [], 0
        for bucket in self.buckets:
            running += bucket
            cumulative.append(running)
        return Histogram(
            bounds=[float(b) for b in self.bounds], counts=cumulative, sum=round(self.total, 3), count=self.count
        )


class _Saved(msgspec.Struct, kw_only=True):
    """RunMetrics as saved in the catalog."""

    finished_by_minute: dict[int, int] = {}
    outcomes: dict[str, int] = {}
    recent_durations: list[float] = []
    durations: tuple[list[int], float, int] = ([], 0.0, 0)
    lag: tuple[list[int], float, int] = ([], 0.0, 0)
    stale_outcomes_rejected: int = 0


class RunMetrics:
    """Finished runs per minute, outcome counts, durations and schedule lag."""

    def __init__(self, recent: int = 500) -> None:
        self.finished_by_minute: Counter[int] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.recent_durations: deque[float] = deque(maxlen=recent)
        self.durations = CumulativeHistogram(DURATION_BOUNDS_MS)
        self.lag = CumulativeHistogram(LAG_BOUNDS_MS)
        self.stale_outcomes_rejected = 0
        self.changes = 0
        """Counts every change, so a saver knows whether there is anything new to save."""

    def run_finished(self, status: str, finished_at: datetime | None, duration_ms: float | None) -> None:
        """Count one run reaching its final state."""
        self.changes += 1
        self.outcomes[status] += 1
        if finished_at is not None:
            self.finished_by_minute[int(finished_at.timestamp() // 60)] += 1
        if duration_ms is not None:
            self.recent_durations.append(duration_ms)
            self.durations.observe(duration_ms)

    def run_started(self, lag_ms: float | None) -> None:
        """Record how late a run started against its scheduled time."""
        self.changes += 1
        if lag_ms is not None:
            self.lag.observe(max(lag_ms, 0.0))

    def per_minute(self, now: datetime, minutes: int = 60) -> list[int]:
        """Finished runs in each of the last ``minutes`` minutes, oldest first."""
        current = int(now.timestamp() // 60)
        for old in [m for m in self.finished_by_minute if m <= current - minutes]:
            del self.finished_by_minute[old]
        return [self.finished_by_minute.get(m, 0) for m in range(current - minutes + 1, current + 1)]

    def percentiles(self) -> Percentiles:
        """p50 / p95 of recent run durations."""
        values = sorted(self.recent_durations)
        if not values:
            return Percentiles()

        def at(q: float) -> float:
            return round(values[min(len(values) - 1, int(q * len(values)))], 3)

        return Percentiles(p50=at(0.5), p95=at(0.95), count=len(values))

    def success_rate(self) -> float | None:
        """Succeeded / finished, over every run counted."""
        finished = sum(self.outcomes.values())
        return round(self.outcomes["succeeded"] / finished, 4) if finished else None

    def encode(self) -> bytes:
        """The aggregates as JSON (a few KB), to save."""
        return msgspec.json.encode(
            _Saved(
                finished_by_minute=dict(self.finished_by_minute),
                outcomes=dict(self.outcomes),
                recent_durations=list(self.recent_durations),
                durations=(self.durations.buckets, self.durations.total, self.durations.count),
                lag=(self.lag.buckets, self.lag.total, self.lag.count),
                stale_outcomes_rejected=self.stale_outcomes_rejected,
            )
        )

    def restore(self, saved: bytes) -> None:
        """Continue from aggregates saved by ``encode`` (unreadable ones are ignored: counts restart)."""
        try:
            data = msgspec.json.decode(saved, type=_Saved)
        except msgspec.MsgspecError:
            return
        self.finished_by_minute = Counter(data.finished_by_minute)
        self.outcomes = Counter(data.outcomes)
        self.recent_durations.extend(data.recent_durations)
        self.durations.restore(*data.durations)
        self.lag.restore(*data.lag)
        self.stale_outcomes_rejected = data.stale_outcomes_rejected
