"""Every NATS subject, stream, consumer and KV bucket name Taskmesh uses.

Services never spell a subject string: they take a constant or call a builder from here.
Tokens that carry ids (task ids, run ids) are produced by Taskmesh itself, so they never
contain the NATS wildcard or separator characters.
"""

from typing import Final

# --- Requests answered by the store (core NATS request/reply, JSON in and out) -------------

SUBMIT_TASK: Final = "taskmesh.api.tasks.submit"
"""Submit a task. Body: the JSON of ``POST /api/tasks``; header ``Nats-Msg-Id`` = idempotency key."""
GET_TASK: Final = "taskmesh.api.tasks.get"
"""One task with its status, result and timings. Body: ``{"id": ...}``."""
LIST_TASKS: Final = "taskmesh.api.tasks.list"
"""Tasks newest first, filtered, with a cursor. Body: ``ListTasksRequest``."""
WAIT_TASK: Final = "taskmesh.api.tasks.wait"
"""Reply once the task has finished (or a run of a schedule has), or when ``timeout_seconds`` ends."""
CANCEL_TASK: Final = "taskmesh.api.tasks.cancel"
"""Cancel a task: a pending one never runs, a running one is killed. Idempotent."""
DELETE_TASK: Final = "taskmesh.api.tasks.delete"
"""Cancel if needed, then remove the task, its runs and its logs."""
LIST_RUNS: Final = "taskmesh.api.runs.list"
"""Run history of one task, newest first."""
GET_RUN: Final = "taskmesh.api.runs.get"
"""One run with its attempts."""
RUN_VERDICT: Final = "taskmesh.api.runs.verdict"
"""Whether a run about to start is still wanted (``api.RunVerdict``): runners ask it instead of
reading the store's buckets, and the store answers from its own state, flushed or not."""
RUN_VERDICTS: Final = "taskmesh.api.runs.verdicts"
"""``RUN_VERDICT`` for several runs in one request (``api.RunVerdicts``): a runner asks for a
pulled batch at once."""
GET_LOGS: Final = "taskmesh.api.logs.get"
"""Stored log lines of a task's latest run, or of one run."""
LIST_SCHEDULES: Final = "taskmesh.api.schedules.list"
"""Scheduled tasks with ``next_run_at``, ``last_run`` and their counters."""
PAUSE_SCHEDULE: Final = "taskmesh.api.schedules.pause"
"""Stop future fires of a scheduled task until resumed."""
RESUME_SCHEDULE: Final = "taskmesh.api.schedules.resume"
"""Resume a paused scheduled task from the next fire time after now."""
TRIGGER_SCHEDULE: Final = "taskmesh.api.schedules.trigger"
"""Run a scheduled task once, now, besides its schedule."""
GET_LEDGER: Final = "taskmesh.api.schedules.ledger"
"""The slot ledger of a scheduled task: each fire time and what became of it."""
GET_STATS: Final = "taskmesh.api.stats"
"""Counts, rates, durations, queue depth and the services seen alive."""
LIST_DEAD_LETTERS: Final = "taskmesh.api.deadletters.list"
"""Runs given up after too many deliveries."""
PUT_SECRET: Final = "taskmesh.api.secrets.put"
"""Keep or replace a secret. Body: ``PutSecretRequest`` (the value sealed by the gateway)."""
LIST_SECRETS: Final = "taskmesh.api.secrets.list"
"""Names and timestamps of every secret, never a value."""
DELETE_SECRET: Final = "taskmesh.api.secrets.delete"
"""Remove a secret. Body: ``SecretRef``."""
STORE_HEALTH: Final = "taskmesh.api.health"
"""The store answers with its own health and the services it has seen."""
API_ALL: Final = "taskmesh.api.>"
"""Everything the store answers."""

# --- Flow control (core NATS request/reply, answered by the scheduler leader) ----------------

FLOW_LIST_LIMITS: Final = "taskmesh.flow.limits.list"
"""Every flow key with its limit, running and waiting counts. Body: empty. Reply: ``LimitsReply``."""
FLOW_SET_LIMIT: Final = "taskmesh.flow.limits.set"
"""Set (or clear, with nulls) an operator's limit on a key. Body: ``SetLimitRequest``; reply: ``LimitView``."""

# --- Task lifecycle: the TASKS stream --------------------------------------------------------

TASK_EVENTS_ALL: Final = "taskmesh.task.>"
"""Every task lifecycle event (submitted, cancelled, deleted, paused, resumed, triggered)."""


def task_event(task_id: str, kind: str) -> str:
    """Subject of one lifecycle event of one task: ``taskmesh.task.<task_id>.<kind>``."""
    return f"taskmesh.task.{task_id}.{kind}"


# --- Run and schedule events: the EVENTS stream ---------------------------------------------

RUN_EVENTS_ALL: Final = "taskmesh.run.>"
"""Every run event (queued, started, finished)."""
RUN_FINISHED_ALL: Final = "taskmesh.run.*.*.finished"
"""Every run's final outcome; the scheduler follows these for retries and overlap."""
SCHEDULE_EVENTS_ALL: Final = "taskmesh.schedule.>"
"""Schedule bookkeeping from the scheduler: next fire time, skipped and missed slots."""


def run_event(task_id: str, run_id: str, kind: str) -> str:
    """Subject of one event of one run: ``taskmesh.run.<task_id>.<run_id>.<kind>``."""
    return f"taskmesh.run.{task_id}.{run_id}.{kind}"


def run_events_of_task(task_id: str) -> str:
    """Every run event of one task."""
    return f"taskmesh.run.{task_id}.>"


def schedule_event(task_id: str, kind: str) -> str:
    """Subject of a schedule bookkeeping event: ``taskmesh.schedule.<task_id>.<kind>``."""
    return f"taskmesh.schedule.{task_id}.{kind}"


# --- Due runs: the WORK stream (work queue, pulled by runners) -------------------------------

WORK_CODE: Final = "taskmesh.work.code"
"""Due runs executed in a sandbox container (code tasks and isolated API tasks)."""
WORK_API: Final = "taskmesh.work.api"
"""Due runs executed as one HTTP request by the runner itself."""
WORK_ALL: Final = "taskmesh.work.>"
"""Both work subjects."""

# --- Log chunks: the LOGS stream ------------------------------------------------------------

LOGS_ALL: Final = "taskmesh.log.>"
"""Every log chunk of every run."""


def log_chunks(task_id: str, run_id: str) -> str:
    """Subject of the output chunks of one run: ``taskmesh.log.<task_id>.<run_id>``."""
    return f"taskmesh.log.{task_id}.{run_id}"


def log_chunks_of_task(task_id: str) -> str:
    """Output chunks of every run of one task."""
    return f"taskmesh.log.{task_id}.*"


# --- Dead letters: the DEADLETTER stream ----------------------------------------------------

DEAD_LETTERS_ALL: Final = "taskmesh.deadletter.>"
"""Runs given up after exceeding their deliveries, with the reason."""


def dead_letter(task_id: str) -> str:
    """Subject a run given up for ``task_id`` is recorded on."""
    return f"taskmesh.deadletter.{task_id}"


# --- Control and presence (core NATS, not stored) -------------------------------------------

CANCEL_RUNS: Final = "taskmesh.control.cancel"
"""Broadcast ``CancelRun``; the runner holding the run kills its container or HTTP call."""
HEARTBEATS_ALL: Final = "taskmesh.heartbeat.>"
"""Every service's periodic ``Heartbeat``."""
PRESENCE_PROBE: Final = "taskmesh.control.presence"
"""Anything published here makes every service send its heartbeat now (a new listener's roll call)."""


def heartbeat(service: str, instance_id: str) -> str:
    """Subject a service instance announces itself on every few seconds."""
    return f"taskmesh.heartbeat.{service}.{instance_id}"


INBOX_ROOT: Final = "_INBOX"
"""nats-py's default inbox prefix; each user gets its own branch below it (``inbox_prefix``)."""


def inbox_prefix(user: str) -> str:
    """Where ``user``'s replies and pull deliveries arrive: the only inboxes its grants let it read."""
    return f"{INBOX_ROOT}.{user}"


def store_ping(instance_id: str) -> str:
    """A store answers here while its process lives; 'no responders' means the lease it holds is
    a dead process's, which a restarted or standby store may take at once instead of waiting out
    the TTL."""
    return f"taskmesh.control.store.{instance_id}.ping"


def scheduler_ping(instance_id: str) -> str:
    """A scheduler answers here while its process lives: as ``store_ping``, for the scheduler's lease."""
    return f"taskmesh.control.scheduler.{instance_id}.ping"


def runner_ping(runner_id: str) -> str:
    """A runner answers here while alive; 'no responders' means its containers are orphans.

    A ping whose body is a run id asks whether the runner still holds that run (``control.PING_*``).
    """
    return f"taskmesh.control.runner.{runner_id}.ping"


# --- Streams ---------------------------------------------------------------------------------

STREAM_TASKS: Final = "TASKS"
"""Task lifecycle events; limits retention, file storage."""
STREAM_EVENTS: Final = "EVENTS"
"""Run and schedule events; limits retention, file storage."""
STREAM_WORK: Final = "WORK"
"""Due runs; work-queue retention, explicit ack, shared by all runners."""
STREAM_LOGS: Final = "LOGS"
"""Run output chunks on their way to the logs bucket."""
STREAM_DEAD_LETTERS: Final = "DEADLETTER"
"""Runs given up, with the original due-run message."""

# --- Durable consumers -----------------------------------------------------------------------

CONSUMER_STORE_TASKS: Final = "store-tasks"
"""The store materialises task lifecycle events."""
CONSUMER_STORE_EVENTS: Final = "store-events"
"""The store materialises run and schedule events."""
CONSUMER_STORE_LOGS: Final = "store-logs"
"""The store files log chunks into the logs bucket."""
CONSUMER_SCHEDULER_TASKS: Final = "scheduler-tasks"
"""The leader scheduler plans submitted tasks and applies pause, resume, trigger, cancel."""
CONSUMER_SCHEDULER_RUNS: Final = "scheduler-runs"
"""The leader scheduler follows finished runs for retries and the overlap policy."""
CONSUMER_RUNNER_CODE: Final = "runner-code"
"""All runners pull sandboxed runs from here."""
CONSUMER_RUNNER_API: Final = "runner-api"
"""All runners pull HTTP runs from here."""

# --- Key-value buckets -----------------------------------------------------------------------

BUCKET_TASKS: Final = "tasks"
"""Task records, key = task id. Written only by the store."""
BUCKET_RUNS: Final = "runs"
"""Run records, key = ``<task_id>.<run_id>``. Written only by the store."""
BUCKET_LOGS: Final = "logs"
"""Log chunks, key = ``<task_id>.<run_id>.<attempt>.<seq>``. Written only by the store."""
BUCKET_SECRETS: Final = "secrets"
"""Sealed secret values, key = secret name. Written only by the store; read by runners."""
BUCKET_SCHEDULES: Final = "schedules"
"""Durable timers of the scheduler, key = ``<kind>.<task_id>[.<run_id>]``."""
BUCKET_LEASES: Final = "leases"
"""Leader leases with a short TTL; key ``scheduler``."""

LEASE_SCHEDULER: Final = "scheduler"
"""Key of the scheduler leader lease."""
BUCKET_STORE_LEASE: Final = "store_lease"
"""The store leader's lease (the store's own bucket: only the store may write it)."""
LEASE_STORE: Final = "store"
"""Key of the store leader lease; partitions would lead ``store.<p>`` each."""

# --- Headers ---------------------------------------------------------------------------------

HEADER_MSG_ID: Final = "Nats-Msg-Id"
"""JetStream de-duplication id; on ``SUBMIT_TASK`` it is the idempotency key."""
HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE: Final = "Nats-Expected-Last-Subject-Sequence"
"""JetStream stores the message only if the subject's last message has this sequence (0: none)."""
ERR_WRONG_LAST_SEQUENCE: Final = 10071
"""JetStream's error code when ``HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE`` does not hold."""
HEADER_IDEMPOTENCY_KEY: Final = "Idempotency-Key"
"""Accepted on ``SUBMIT_TASK`` too, for clients that speak HTTP terms."""
HEADER_SUBMISSION_ID: Final = "Taskmesh-Submission-Id"
"""On ``SUBMIT_TASK``: the id the new task is to have, a UUIDv7 the submitter drew just now. Sent
again with the same body after a lost reply, it yields the same task (the gateway does this for
every submission), so a repeat needs no idempotency key. See ``bounds.SUBMISSION_ID_MAX_AGE``."""


def run_key(task_id: str, run_id: str) -> str:
    """Key of a run in the runs bucket."""
    return f"{task_id}.{run_id}"


def log_key(task_id: str, run_id: str, attempt: int, seq: int) -> str:
    """Key of one log chunk in the logs bucket."""
    return f"{task_id}.{run_id}.{attempt}.{seq:08d}"


ALL_SUBJECT_CONSTANTS: Final = (
    SUBMIT_TASK,
    GET_TASK,
    LIST_TASKS,
    WAIT_TASK,
    CANCEL_TASK,
    DELETE_TASK,
    LIST_RUNS,
    GET_RUN,
    RUN_VERDICT,
    RUN_VERDICTS,
    GET_LOGS,
    LIST_SCHEDULES,
    PAUSE_SCHEDULE,
    RESUME_SCHEDULE,
    TRIGGER_SCHEDULE,
    GET_LEDGER,
    GET_STATS,
    LIST_DEAD_LETTERS,
    PUT_SECRET,
    LIST_SECRETS,
    DELETE_SECRET,
    STORE_HEALTH,
    API_ALL,
    FLOW_LIST_LIMITS,
    FLOW_SET_LIMIT,
    TASK_EVENTS_ALL,
    RUN_EVENTS_ALL,
    RUN_FINISHED_ALL,
    SCHEDULE_EVENTS_ALL,
    WORK_CODE,
    WORK_API,
    WORK_ALL,
    LOGS_ALL,
    DEAD_LETTERS_ALL,
    CANCEL_RUNS,
    HEARTBEATS_ALL,
    PRESENCE_PROBE,
)
"""Every fixed subject, for the contract tests."""

HEADER_ERROR: Final = "Taskmesh-Error"
"""On a reply from the store: set (to the error code) when the body is ``{"error": {...}}``."""
HEADER_WAIT: Final = "Taskmesh-Wait"
"""On ``SUBMIT_TASK``: seconds to wait for the task to finish before replying (``done`` says if it did)."""
HEADER_ROUTE: Final = "Taskmesh-Route"
"""On ``SUBMIT_TASK``: ``isolated`` (as ``POST /api/tasks/isolated``) or ``scheduled``
(as ``POST /api/scheduled-tasks``, which takes only scheduled tasks)."""
