"""Helpers for an attempt's ``Execution``: a failed one, and when its retry is due."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from proto import bounds
from proto.retry import backoff
from proto.runs import Execution, RunError
from proto.tasks import TaskSpec

MAX_RETRY_WAIT = timedelta(seconds=bounds.MAX_RETRY_DELAY_SECONDS)
"""Longest wait before a retry (proto's bound); larger (or overflowing) delays are clamped to it."""


def failed(error_type: str, message: str, **details: Any) -> Execution:
    """A failed outcome with an error of ``error_type``."""
    return Execution(status="failed", error=RunError(type=error_type, message=message, **details))  # type: ignore[arg-type]  # callers pass known error types; RunError's Literal checks them on decode


def retry_at(spec: TaskSpec, retry: int, now: datetime) -> datetime:
    """When retry number ``retry`` is due: ``now`` plus its backoff, clamped so no number can overflow."""
    try:
        wait = min(backoff(spec, retry), MAX_RETRY_WAIT)
    except (OverflowError, ValueError):  # a hostile delay or factor: wait the longest we allow
        wait = MAX_RETRY_WAIT
    return now + wait
