"""The scheduler's durable timers, as kept in the ``schedules`` bucket (one key per timer)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Literal

from msgspec import Struct

from proto.cron import CronSchedule
from proto.runs import slot_for_fire
from proto.tasks import TaskSpec


class Timer(Struct, kw_only=True, tag_field="kind"):
    """Something due at ``due_at`` for task ``task_id``."""

    task_id: str
    spec: TaskSpec
    due_at: datetime

    @property
    def fire_at(self) -> datetime:
        """When the timer goes off."""
        return self.due_at


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
    """A schedule: ``due_at`` is its next slot (the cron time); counters say what became of past ones."""

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

    @property
    def fire_at(self) -> datetime:
        """The next slot with the task's jitter applied."""
        return jittered(self.task_id, self.spec, self.due_at)


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


def jitter_offset(task_id: str, slot_at: datetime, jitter_seconds: float) -> timedelta:
    """A fixed delay in [0, ``jitter_seconds``) for one slot of one task, to the millisecond.

    A hash, not a random draw: every scheduler (after a restart or a failover) delays a slot
    the same, so a repeated fire is the same message and lands once.
    """
    span_ms = int(jitter_seconds * 1000)
    if span_ms <= 0:
        return timedelta(0)
    digest = hashlib.blake2b(f"{task_id}:{slot_for_fire(slot_at)}".encode(), digest_size=8).digest()
    return timedelta(milliseconds=int.from_bytes(digest, "big") % span_ms)


def jittered(task_id: str, spec: TaskSpec, slot_at: datetime) -> datetime:
    """When the slot ``slot_at`` of a task fires: its cron time plus the task's jitter offset."""
    return slot_at + jitter_offset(task_id, slot_at, spec.jitter_seconds)


def next_fire(task_id: str, spec: TaskSpec, after: datetime) -> datetime | None:
    """When the first slot after ``after`` fires, jitter applied (what ``next_run_at`` shows)."""
    slot_at = next_due(spec, after)
    return None if slot_at is None else jittered(task_id, spec, slot_at)
