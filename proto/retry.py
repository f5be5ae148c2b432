"""Retry policy shared by the runner (which decides) and the scheduler (which waits)."""

from __future__ import annotations

import random
from datetime import timedelta

from proto import bounds
from proto.runs import RETRYABLE_STATUSES
from proto.tasks import TaskSpec


def should_retry(spec: TaskSpec, status: str, retries_used: int) -> bool:
    """A failed or timed-out attempt retries while ``max_retries`` allows; nothing else does."""
    return status in RETRYABLE_STATUSES and retries_used < spec.max_retries


def backoff(spec: TaskSpec, retry: int, rng: random.Random | None = None) -> timedelta:
    """Delay before retry number ``retry`` (1-based): exponential, capped, with full jitter
    in the upper half so retries of many tasks do not arrive together."""
    # bounded in proto.bounds; the exponent is capped too, so no float overflows on the way
    base = spec.retry_delay_seconds * spec.retry_backoff ** min(max(0, retry - 1), 64)
    capped = min(base, spec.retry_delay_max_seconds, bounds.MAX_RETRY_DELAY_SECONDS)
    jitter = (rng or random).uniform(0.5, 1.0)
    return timedelta(seconds=capped * jitter)
