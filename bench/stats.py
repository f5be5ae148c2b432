"""Percentiles and summaries of samples."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values (``fraction`` in 0..1)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(values: Iterable[float]) -> dict[str, float | int | None]:
    """count, min, p50, p90, p99, max and mean of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "min": None, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "count": len(ordered),
        "min": ordered[0],
        "p50": percentile(ordered, 0.50),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
    }


def lateness_summary(lateness_ms: list[float]) -> dict[str, float | int | None]:
    """A summary of start lateness with the counts the goals name: early, > 100 ms, > 1 s."""
    summary = summarize(lateness_ms)
    summary["early"] = sum(1 for value in lateness_ms if value < 0)
    summary["over_100ms"] = sum(1 for value in lateness_ms if value > 100)
    summary["over_1s"] = sum(1 for value in lateness_ms if value > 1000)
    return summary
