"""Wall-clock time, always aware and in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)


def ms_between(start: datetime | None, end: datetime | None) -> float | None:
    """Milliseconds from ``start`` to ``end``, or None if either is unknown."""
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)
