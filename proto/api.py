"""Requests the store answers over NATS request/reply, and their replies.

A reply is the payload below on success, or ``proto.errors.ErrorBody`` (``{"error": {...}}``).
Request bodies forbid unknown fields so a typo is an error, not a silently ignored filter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from msgspec import Meta, Struct

from proto.control import Heartbeat
from proto.records import RunRecord, TaskRecord
from proto.runs import DeadLetter, LogChunk
from proto.tasks import TaskKind, TaskStatus, TaskType

PageLimit = Annotated[int, Meta(ge=1, le=500)]


class Request(Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every request body."""


class TaskRef(Request):
    """Names one task (get, cancel, pause, resume, trigger)."""

    id: str


class SubmitAccepted(Struct, kw_only=True):
    """Reply to ``SUBMIT_TASK``: the task as stored; ``replayed`` when the idempotency key matched;
    with a ``Taskmesh-Wait`` header, ``done`` says whether it finished within the wait."""

    id: str
    status: str
    task: TaskRecord
    replayed: bool = False
    done: bool = False


class ListTasksRequest(Request):
    """Filters and a page of ``GET /api/tasks``, newest first."""

    status: TaskStatus | None = None
    kind: TaskKind | None = None
    task_type: TaskType | None = None
    name: str | None = None
    """Name prefix."""
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: PageLimit = 50
    cursor: str | None = None


class TaskPage(Struct, kw_only=True):
    """A page of tasks; pass ``next_cursor`` back for the next one."""

    tasks: list[TaskRecord]
    next_cursor: str | None = None


class WaitTaskRequest(Request):
    """Wait until the task ends (or, for a schedule, until a run ends) or the timeout passes."""

    id: str
    timeout_seconds: Annotated[float, Meta(ge=0, le=300)] = 30.0


class WaitReply(Struct, kw_only=True):
    """The task when the wait ended; ``done`` False means the timeout came first."""

    done: bool
    task: TaskRecord


class CancelTaskRequest(Request):
    """Cancel a task (idempotent)."""

    id: str
    reason: str = "cancelled by user"


class DeleteTaskRequest(Request):
    """Delete a task; running runs are cancelled unless ``cancel_running`` is False."""

    id: str
    cancel_running: bool = True


class DeleteReply(Struct, kw_only=True):
    """What a delete removed."""

    id: str
    deleted: bool
    runs_removed: int = 0


class ListRunsRequest(Request):
    """Run history of one task, newest first."""

    id: str
    limit: PageLimit = 50
    cursor: str | None = None


class RunPage(Struct, kw_only=True):
    """A page of runs."""

    runs: list[RunRecord]
    next_cursor: str | None = None


class RunRef(Request):
    """Names one run of one task."""

    id: str
    run_id: str


class RunVerdict(Struct, kw_only=True):
    """Whether a run about to start should: ``run``, or ``cancelled`` (the task or this run was
    cancelled: report it so) or ``deleted`` (the task is gone: drop the run without a trace)."""

    verdict: Literal["run", "cancelled", "deleted"]


MAX_VERDICTS_PER_REQUEST: Final = 256
"""Runs one ``RUN_VERDICTS`` request may name (a runner's pulled batch is at most its free slots)."""


class RunVerdictsRequest(Request):
    """Several runs about to start, asked at once: a runner asks for a pulled batch together."""

    runs: Annotated[list[RunRef], Meta(min_length=1, max_length=MAX_VERDICTS_PER_REQUEST)]


class RunVerdicts(Struct, kw_only=True):
    """One verdict per run of a ``RunVerdictsRequest``, in its order."""

    verdicts: list[RunVerdict]


class GetLogsRequest(Request):
    """Log of one run (default: the latest run), optionally only chunks after ``after``."""

    id: str
    run_id: str | None = None
    attempt: int | None = None
    after: int = -1
    """Return only chunks whose ``seq`` is greater than this."""


class LogsReply(Struct, kw_only=True):
    """Stored output of a run attempt, in order; ``finished`` when no more will come."""

    task_id: str
    run_id: str | None
    attempt: int | None
    chunks: list[LogChunk]
    finished: bool
    truncated: bool = False
    more: bool = False
    """More stored chunks follow: ask again with ``after`` = the last ``seq`` here."""


class ScheduleSummary(Struct, kw_only=True):
    """A scheduled task in ``GET /api/scheduled-tasks``."""

    id: str
    name: str
    kind: TaskKind
    status: TaskStatus
    cron_expression: str
    timezone: str
    next_run_at: datetime | None
    last_run: Any
    fired_count: int
    missed_count: int
    skipped_count: int
    created_at: datetime


class ScheduleList(Struct, kw_only=True):
    """Every scheduled task."""

    schedules: list[ScheduleSummary]


class LedgerRequest(Request):
    """The slot ledger of one scheduled task, newest first."""

    id: str
    limit: PageLimit = 100


class LedgerEntry(Struct, kw_only=True, omit_defaults=True):
    """One fire slot: when it was due and what became of it."""

    scheduled_for: datetime
    state: str
    """run states, or ``skipped`` / ``missed``."""
    run_id: str | None = None
    lag_ms: float | None = None
    reason: str | None = None
    count: int = 1


class Ledger(Struct, kw_only=True):
    """Slots of a schedule, and its counters."""

    id: str
    entries: list[LedgerEntry]
    fired_count: int
    missed_count: int
    skipped_count: int


class StatsRequest(Request):
    """No parameters."""


class Percentiles(Struct, kw_only=True):
    """Run durations in milliseconds."""

    p50: float | None = None
    p95: float | None = None
    count: int = 0


class Histogram(Struct, kw_only=True):
    """Cumulative histogram: ``counts[i]`` observations ≤ ``bounds[i]``; one more count, last, for +Inf."""

    bounds: list[float]
    counts: list[int]
    sum: float = 0.0
    count: int = 0


class QueueDepth(Struct, kw_only=True):
    """Runs waiting on the work queue, and runs handed to runners but not yet acknowledged."""

    code_pending: int = 0
    api_pending: int = 0
    code_in_flight: int = 0
    api_in_flight: int = 0


class Stats(Struct, kw_only=True):
    """``GET /api/stats``."""

    tasks_total: int
    tasks_by_status: dict[str, int]
    tasks_by_kind: dict[str, int]
    tasks_by_trigger: dict[str, int]
    runs_total: int
    runs_by_status: dict[str, int]
    runs_per_minute: list[int]
    """Finished runs per minute over the last hour, oldest minute first."""
    success_rate: float | None
    duration_ms: Percentiles
    duration_histogram: Histogram
    schedule_lag_histogram: Histogram
    queue: QueueDepth
    runners: list[Heartbeat]
    services: list[Heartbeat]
    stale_outcomes_rejected: int = 0
    dead_letters: int = 0


class DeadLetterList(Struct, kw_only=True):
    """Dead letters, newest first."""

    dead_letters: list[DeadLetter]


class StoreHealth(Struct, kw_only=True):
    """The store's own view: ready when its state is loaded; services seen by heartbeat."""

    ready: bool
    tasks: int
    services: list[Heartbeat]


class TriggerReply(Struct, kw_only=True):
    """Reply to ``TRIGGER_SCHEDULE``: the id the triggered run will have."""

    task: TaskRecord
    run_id: str


class DependencyHealth(Struct, kw_only=True, omit_defaults=True):
    """One dependency in ``GET /api/health``."""

    status: str
    """``ok``, ``degraded`` or ``down``."""
    detail: str = ""
    count: int | None = None


class Health(Struct, kw_only=True):
    """``GET /api/health``: overall status and one entry per dependency."""

    status: str
    version: str
    checks: dict[str, DependencyHealth]
    runners: list[Heartbeat] = []
