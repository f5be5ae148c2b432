"""What the store keeps and the API returns: task records, run records, attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from msgspec import Struct

from proto.runs import RunError, RunStatus, RunTimings
from proto.tasks import TaskKind, TaskSpec, TaskStatus, TaskType


class RunSummary(Struct, kw_only=True, omit_defaults=True):
    """The latest run of a task, as shown on the task."""

    run_id: str
    attempt: int = 1
    status: str
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None


class TaskRecord(Struct, kw_only=True, omit_defaults=False):
    """A task as the store keeps it and the API returns it."""

    id: str
    name: str
    kind: TaskKind
    task_type: TaskType
    status: TaskStatus
    spec: TaskSpec
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    result: Any = None
    error: RunError | None = None
    last_run: RunSummary | None = None
    next_run_at: datetime | None = None
    next_retry_at: datetime | None = None
    run_count: int = 0
    fired_count: int = 0
    missed_count: int = 0
    skipped_count: int = 0
    idempotency_key: str | None = None
    waiting_reason: str | None = None
    """Why a queued run is held back by flow control: ``concurrency:<key>`` or ``rate:<key>``."""
    event_seq: int = 0
    """Sequence in the TASKS stream of the last lifecycle event applied (idempotent replays)."""


class AttemptRecord(Struct, kw_only=True, omit_defaults=True):
    """One attempt of a run."""

    attempt: int
    runner_id: str | None = None
    status: str = "running"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_type: str | None = None
    log_bytes: int = 0
    log_chunks: int = 0


class RunRecord(Struct, kw_only=True):
    """A run as the store keeps it and ``GET /api/tasks/{id}/runs/{run_id}`` returns it."""

    task_id: str
    run_id: str
    slot: str
    status: RunStatus
    attempt: int = 1
    retry: int = 0
    scheduled_for: datetime | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lag_ms: float | None = None
    duration_ms: float | None = None
    runner_id: str | None = None
    result: Any = None
    error: RunError | None = None
    exit_code: int | None = None
    deps_cache_hit: bool | None = None
    timings: RunTimings | None = None
    output_truncated: bool = False
    log_bytes: int = 0
    log_chunks: int = 0
    next_retry_at: datetime | None = None
    attempts: list[AttemptRecord] = []
