"""A run: one execution of a task. The due-run message, the run events, and the run record."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any, ClassVar, Final, Literal

from msgspec import Struct

from proto.events import Event
from proto.tasks import TaskSpec

RunStatus = Literal["queued", "running", "retrying", "succeeded", "failed", "timed_out", "cancelled", "expired"]
OutcomeStatus = Literal["succeeded", "failed", "timed_out", "cancelled", "expired"]
FINAL_RUN_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled", "expired"})
RETRYABLE_STATUSES = frozenset({"failed", "timed_out"})
"""Outcomes that use a retry when ``max_retries`` allows; cancelled and expired never retry."""

ErrorType = Literal[
    "exception",  # user code raised
    "invalid_result",  # the return value is not JSON-serialisable
    "result_too_large",  # the return value exceeds the operator's cap
    "function_not_found",  # function_name is not defined by the code at run time
    "oom_killed",  # the engine killed the container for memory
    "timed_out",  # wall-clock timeout; the container or request was killed
    "exit_code",  # the sandbox process ended with a non-zero code, no result
    "signal",  # the sandbox process was killed by a signal
    "dependency_install_failed",  # requirements could not be installed
    "sandbox_unavailable",  # no usable Docker engine or image
    "http_status",  # the HTTP response status is not the expected one
    "http_error",  # the HTTP request failed (connect, TLS, protocol)
    "egress_denied",  # the URL resolves to an address the egress policy blocks
    "cancelled",  # cancelled by the user or the overlap policy
    "expired",  # could not start before its start deadline
    "poison",  # delivered too often without an outcome (runner crashes)
    "runner_error",  # a bug or fault in the runner itself
    "secret_missing",  # a secret the task uses was deleted after submission
    "secret_unreadable",  # a secret cannot be decrypted with the runner's keys (key rotated away)
    "internal",  # a service could not handle one of the run's messages (dead-lettered)
]


class RunError(Struct, kw_only=True, omit_defaults=True):
    """Why a run did not succeed: a type for programs, a message for people, details if any."""

    type: ErrorType
    message: str
    exc_type: str | None = None
    traceback: str | None = None
    status_code: int | None = None
    signal: int | None = None


def run_id_for(task_id: str, slot: str) -> str:
    """The run id of a fire slot: deterministic, so a repeated fire names the same run.

    ``str(uuid.uuid5(uuid.NAMESPACE_URL, f"taskmesh:{task_id}:{slot}"))``, computed without the
    UUID object (a third of the cost; the scheduler makes one or two a fire)."""
    digest = bytearray(hashlib.sha1(_URL_NAMESPACE + f"taskmesh:{task_id}:{slot}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes


def slot_for_fire(scheduled_for: datetime) -> str:
    """The slot name of a cron fire: ``cron:<epoch ms>``."""
    return f"cron:{round(scheduled_for.timestamp() * 1000)}"


ONCE_SLOT = "once"
"""The slot of the only run of an immediate or delayed task."""


class RunDue(Struct, kw_only=True):
    """A run that is due now: published by the scheduler on WORK, pulled by one runner.

    It carries the whole spec so a runner needs nothing else to execute it.
    ``attempt`` is the attempt number of the first delivery; a redelivery adds to it.
    """

    task_id: str
    run_id: str
    slot: str
    spec: TaskSpec
    scheduled_for: datetime
    queued_at: datetime
    attempt: int = 1
    retry: int = 0
    deadline_at: datetime | None = None


# --- Run events (EVENTS stream) ---------------------------------------------------------------


class RunQueued(Event, frozen=True, tag="run_queued"):
    """The scheduler made a run due and put it on the work queue."""

    subject_kind: ClassVar[str] = "queued"

    task_id: str
    run_id: str
    slot: str
    scheduled_for: datetime
    attempt: int = 1
    retry: int = 0
    deadline_at: datetime | None = None
    schedule: ScheduleView | None = None
    """For a cron fire: where the schedule stands after it (saves a separate ScheduleUpdated)."""
    waiting_reason: str | None = None
    """Set while the run waits for flow control (``concurrency:<key>``, ``rate:<key>``); its admission
    publishes RunQueued again without it."""


class ScheduleView(Struct, kw_only=True, omit_defaults=True):
    """A schedule's next fire time and counters, as the scheduler sees them."""

    next_run_at: datetime | None = None
    fired_count: int = 0
    missed_count: int = 0
    skipped_count: int = 0


class RunStarted(Event, frozen=True, tag="run_started"):
    """A runner began the attempt ``attempt`` of the run."""

    subject_kind: ClassVar[str] = "started"

    task_id: str
    run_id: str
    attempt: int
    runner_id: str
    scheduled_for: datetime | None = None
    queued_at: datetime | None = None
    """When the run was queued (its ``RunDue``'s): the store shows it even if this start overtook
    the ``RunQueued`` (None from runners that predate the field)."""


class RunTimings(Struct, kw_only=True, omit_defaults=True):
    """Where a sandboxed run spent its time, in milliseconds."""

    deps_install_ms: float | None = None
    start_ms: float | None = None
    run_ms: float | None = None
    total_ms: float | None = None


class Execution(Struct, kw_only=True, omit_defaults=True):
    """What executing one attempt produced: its status and the facts of the execution.

    The runner builds one; ``RunFinished`` carries it to the store, whose ``RunRecord`` keeps it.
    Both carry the facts as flat fields, because their JSON is public (NATS subscribers, the HTTP
    API) and msgspec cannot flatten a nested struct: they are copied by name
    (``execution_facts``), and a contract test keeps every declaration equal to this one."""

    status: OutcomeStatus
    result: Any = None
    error: RunError | None = None
    exit_code: int | None = None
    deps_cache_hit: bool | None = None
    timings: RunTimings | None = None
    output_truncated: bool = False


EXECUTION_FACTS: Final = tuple(name for name in Execution.__struct_fields__ if name != "status")
"""The facts of an execution, apart from its status (a run record's status is the run's own)."""


def execution_facts(source: Execution | RunFinished) -> dict[str, Any]:
    """The facts of an execution, by name, from an ``Execution`` or a ``RunFinished``."""
    return {name: getattr(source, name) for name in EXECUTION_FACTS}


class RunFinished(Event, frozen=True, tag="run_finished"):
    """The outcome of one attempt: the only event that ends an attempt."""

    subject_kind: ClassVar[str] = "finished"

    task_id: str
    run_id: str
    attempt: int
    runner_id: str
    status: OutcomeStatus
    slot: str = ""
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    result: Any = None
    error: RunError | None = None
    exit_code: int | None = None
    deps_cache_hit: bool | None = None
    timings: RunTimings | None = None
    output_truncated: bool = False
    log_bytes: int = 0
    log_chunks: int = 0
    """How many LogChunks this attempt made, those in ``log`` included (the store knows when it
    has them all)."""
    log: list[LogChunk] = []
    """The attempt's whole output when it is small and none of it was published on LOGS yet (an
    API task's two lines, a quick code task): it travels here and the store files it like chunks
    from LOGS, which saves the chunk a message of its own, a delivery and an acknowledgement."""
    will_retry: bool = False
    retry: int = 0
    retry_at: datetime | None = None


class RunCancelRequested(Event, frozen=True, tag="run_cancel_requested"):
    """Cancel one run (overlap policy ``replace``, or a user's per-run cancel)."""

    subject_kind: ClassVar[str] = "cancel"

    task_id: str
    run_id: str
    reason: str


RunEvent = RunQueued | RunStarted | RunFinished | RunCancelRequested


# --- Output -----------------------------------------------------------------------------------

LogStream = Literal["stdout", "stderr", "system"]
MAX_INLINE_LOG_BYTES: Final = 4096
"""Most text a ``RunFinished`` carries in ``log``; more goes on LOGS as chunks."""


class LogChunk(Struct, kw_only=True):
    """A piece of a run's output, in order (``seq`` from 0 per run attempt stream)."""

    task_id: str
    run_id: str
    attempt: int
    seq: int
    stream: LogStream
    data: str
    at: datetime


class DeadLetter(Struct, kw_only=True):
    """A message given up after too many deliveries: a run without an outcome (with its due-run
    message), or an event a service could not handle (its subject and payload)."""

    task_id: str
    run_id: str
    attempt: int
    deliveries: int
    reason: str
    at: datetime
    due: RunDue | None = None
    subject: str | None = None
    payload: str | None = None
    """The given-up message as text (when it is not a due run)."""
