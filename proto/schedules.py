"""The scheduler's durable timers, as kept in the ``schedules`` bucket (one key per timer)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from msgspec import Struct

from proto.cron import CronSchedule
from proto.tasks import TaskSpec


class Timer(Struct, kw_only=True, tag_field="kind"):
    """Something due at ``due_at`` for task ``task_id``."""

    task_id: str
    spec: TaskSpec
    due_at: datetime


class OnceTimer(Timer, tag="once"):
    """The only run of a delayed task."""

    @property
    def key(self) -> str:
        return f"once.{self.task_id}"


class RetryTimer(Timer, tag="retry"):
    """The next attempt of a run that failed and has retries left."""

    run_id: str
    slot: str
    attempt: int
    retry: int
    scheduled_for: datetime

    @property
    def key(self) -> str:
        return f"retry.{self.task_id}.{self.run_id}"


class CronTimer(Timer, tag="cron"):
    """A schedule: ``due_at`` is its next fire time; counters say what became of past ones."""

    state: Literal["active", "paused"] = "active"
    fired_count: int = 0
    missed_count: int = 0
    skipped_count: int = 0
    last_fire_at: datetime | None = None
    active_runs: list[str] = []
    """Runs fired and not yet finished (for the overlap policy)."""

    @property
    def key(self) -> str:
        return f"cron.{self.task_id}"


AnyTimer = OnceTimer | RetryTimer | CronTimer


def next_due(spec: TaskSpec, after: datetime, schedule: CronSchedule | None = None) -> datetime | None:
    """The first fire strictly after ``after`` within ``start_at``..``end_at``; None when none is left."""
    schedule = schedule or CronSchedule(spec.cron_expression or "", spec.timezone)
    if spec.start_at is not None and spec.start_at > after:
        after = spec.start_at - timedelta(microseconds=1)
    found = schedule.next_after(after)
    if found is None or (spec.end_at is not None and found > spec.end_at):
        return None
    return found
