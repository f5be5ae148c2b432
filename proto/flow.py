"""Flow control: limits per key, the scheduler's durable permits and waiting runs, the limits API."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Final, Literal

from msgspec import Meta, Struct

from proto import bounds
from proto.rates import FlowKey, RateLimit
from proto.runs import ScheduleView
from proto.tasks import TaskSpec

WAIT_PREFIX: Final = "wait."
"""Schedules-bucket keys ``wait.<task>.<run>``: a run waiting for a permit (survives a failover)."""
PERMIT_PREFIX: Final = "permit."
"""Schedules-bucket keys ``permit.<run>``: a run admitted and not finished (its permits)."""
LIMIT_PREFIX: Final = "limit."
"""Schedules-bucket keys ``limit.<encoded key>``: a limit an operator set on a key."""
AGING_SECONDS_PER_PRIORITY: Final = 60.0
"""A run one priority higher ranks as if it had waited this much longer (so low ones still go)."""


def bucket_token(key: str) -> str:
    """A flow key as one KV key token (base64url without padding: any key, no separators)."""
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def wait_key(task_id: str, run_id: str) -> str:
    """Key of a waiting run in the schedules bucket."""
    return f"{WAIT_PREFIX}{task_id}.{run_id}"


def permit_key(run_id: str) -> str:
    """Key of an admitted run's permits in the schedules bucket."""
    return f"{PERMIT_PREFIX}{run_id}"


def limit_key(key: str) -> str:
    """Key of an operator's limit in the schedules bucket."""
    return f"{LIMIT_PREFIX}{bucket_token(key)}"


class WaitingRun(Struct, kw_only=True):
    """A fire the scheduler holds back until every key it names has room."""

    task_id: str
    run_id: str
    spec: TaskSpec
    slot: str
    scheduled_for: datetime
    since: datetime
    attempt: int = 1
    retry: int = 0
    schedule: ScheduleView | None = None


class Permit(Struct, kw_only=True):
    """An admitted run: it counts against its keys until its attempt's outcome is seen."""

    task_id: str
    run_id: str
    attempt: int
    keys: list[str]
    granted_at: datetime


class KeyLimit(Struct, kw_only=True, omit_defaults=True):
    """A limit an operator set on a key; it overrides what tasks of that key say."""

    key: str
    max_concurrency: int | None = None
    rate_limit: str | None = None


class SetLimitRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of ``PUT /api/limits/{key}`` (and ``FLOW_SET_LIMIT`` with ``key``); null clears a field."""

    key: FlowKey = ""
    max_concurrency: Annotated[int, Meta(ge=1, le=bounds.MAX_CONCURRENCY)] | None = None
    rate_limit: RateLimit | None = None


class LimitView(Struct, kw_only=True):
    """One key as ``GET /api/limits`` shows it."""

    key: str
    max_concurrency: int | None
    rate_limit: str | None
    source: Literal["operator", "task", "none"]
    running: int
    waiting: int
    admitted_total: int
    rate_waits_total: int


class LimitsReply(Struct, kw_only=True):
    """The answer of ``FLOW_LIST_LIMITS``."""

    limits: list[LimitView]
