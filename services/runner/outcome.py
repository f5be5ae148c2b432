"""The outcome of executing one attempt, before it becomes a ``RunFinished`` event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proto.runs import OutcomeStatus, RunError, RunTimings


@dataclass
class Outcome:
    """Status, result or error, and the facts of the execution."""

    status: OutcomeStatus
    result: Any = None
    error: RunError | None = None
    exit_code: int | None = None
    deps_cache_hit: bool | None = None
    timings: RunTimings | None = None
    output_truncated: bool = False


def failed(error_type: str, message: str, **details: Any) -> Outcome:
    """A failed outcome with an error of ``error_type``."""
    return Outcome(status="failed", error=RunError(type=error_type, message=message, **details))  # type: ignore[arg-type]
