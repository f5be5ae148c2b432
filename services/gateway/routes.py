"""The whole URL table, with what the OpenAPI document says about each endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import get_args

from aiohttp import web

from proto import api, secrets
from proto.flow import LimitsReply, LimitView, SetLimitRequest
from proto.records import RunRecord, TaskRecord
from proto.tasks import TaskSpec, TaskStatus
from services.gateway import cron_preview, health, secret_views, views
from services.gateway.ids import ID_SCHEMA
from services.gateway.scopes import SUBMIT

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    """A query parameter."""

    name: str
    schema: dict
    description: str = ""


@dataclass(frozen=True)
class Endpoint:
    """One method + path: its handler and its documentation."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    request: type | None = None
    response: type | None = None
    status: int = 200
    extra_status: tuple[int, ...] = ()
    errors: tuple[int, ...] = (400, 404, 503)
    query: tuple[Param, ...] = ()
    public: bool = False
    content_type: str = "application/json"
    scope: str = "admin"
    """The token scope it needs (``read``, ``admin``, or ``submit``: ``submit:code`` for a code or
    sandboxed task, ``submit:api`` for a plain API task); an endpoint that names none needs ``admin``.
    The only place that says which scope an endpoint needs; the OpenAPI document shows it."""


WAIT = Param(
    "wait",
    {"type": "number", "minimum": 0, "maximum": 300},
    "Seconds to wait for the run to finish; 202 with the current state if it has not.",
)
LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "Page size.")
CURSOR = Param("cursor", {"type": "string"}, "next_cursor of the previous page.")
CANCEL_RUNNING = Param("cancel_running", {"type": "boolean"}, "Also kill a run in progress.")
STATUSES = list(get_args(TaskStatus))
LIST_FILTERS = (
    Param("status", {"type": "string", "enum": STATUSES}),
    Param("kind", {"type": "string", "enum": ["code", "api"]}),
    Param("task_type", {"type": "string", "enum": ["immediate", "delayed", "scheduled"]}),
    Param("name", {"type": "string"}, "Name prefix."),
    Param("created_after", {"type": "string", "format": "date-time"}),
    Param("created_before", {"type": "string", "format": "date-time"}),
    LIMIT,
    CURSOR,
)
LOG_PARAMS = (
    Param("attempt", {"type": "integer", "minimum": 1}),
    Param("after", {"type": "integer", "minimum": -1}, "Only chunks with a greater seq."),
    Param("follow", {"type": "boolean"}, "Stream new output as Server-Sent Events until the run ends."),
    Param("format", {"type": "string", "enum": ["json", "text"]}),
)
SUBMIT_ERRORS = (400, 409, 413, 415, 429, 503)
WAIT_ERRORS = (400, 404, 429, 503)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/api/tasks",
        views.submit_task,
        "submitTask",
        "Submit a code or API task (immediate, delayed or scheduled)",
        "tasks",
        request=TaskSpec,
        response=TaskRecord,
        status=201,
        extra_status=(202,),
        errors=SUBMIT_ERRORS,
        query=(WAIT,),
        scope=SUBMIT,
    ),
    Endpoint(
        "POST",
        "/api/tasks/isolated",
        views.submit_isolated,
        "submitIsolatedTask",
        "Submit a task that runs entirely inside a sandbox container (API tasks too)",
        "tasks",
        request=TaskSpec,
        response=TaskRecord,
        status=201,
        extra_status=(202,),
        errors=SUBMIT_ERRORS,
        query=(WAIT,),
        scope=SUBMIT,
    ),
    Endpoint(
        "GET",
        "/api/tasks",
        views.list_tasks,
        "listTasks",
        "List tasks, newest first",
        "tasks",
        response=api.TaskPage,
        query=LIST_FILTERS,
        errors=(400, 503),
        scope="read",
    ),
    Endpoint(
        "GET",
        "/api/tasks/{task_id}",
        views.get_task,
        "getTask",
        "A task with status, result and timings",
        "tasks",
        response=TaskRecord,
        scope="read",
    ),
    Endpoint(
        "POST",
        "/api/tasks/{task_id}/cancel",
        views.cancel_task,
        "cancelTask",
        "Cancel a task (idempotent): pending never runs, running is killed",
        "tasks",
        response=TaskRecord,
        errors=(404, 503),
        scope="admin",
    ),
    Endpoint(
        "POST",
        "/api/tasks/{task_id}/stop",
        views.cancel_task,
        "stopTask",
        "Alias of cancel",
        "tasks",
        response=TaskRecord,
        errors=(404, 503),
        scope="admin",
    ),
    Endpoint(
        "DELETE",
        "/api/tasks/{task_id}",
        views.delete_task,
        "deleteTask",
        "Delete a task with its runs and logs (cancels a running run first)",
        "tasks",
        response=api.DeleteReply,
        query=(CANCEL_RUNNING,),
        scope="admin",
    ),
    Endpoint(
        "GET",
        "/api/tasks/{task_id}/wait",
        views.wait_task,
        "waitTask",
        "Wait for a task to finish (202 when the wait ends first)",
        "tasks",
        response=TaskRecord,
        extra_status=(202,),
        errors=WAIT_ERRORS,
        query=(WAIT,),
        scope="read",
    ),
    Endpoint(
        "GET",
        "/api/tasks/{task_id}/runs",
        views.list_runs,
        "listRuns",
        "Run history, newest first",
        "runs",
        response=api.RunPage,
        query=(LIMIT, CURSOR),
        scope="read",
    ),
    Endpoint(
        "GET",
        "/api/tasks/{task_id}/runs/{run_id}",
        views.get_run,
        "getRun",
        "One run with its attempts",
        "runs",
        response=RunRecord,
        scope="read",
    ),
    Endpoint(
        "GET",
        "/api/tasks/{task_id}/logs",
        views.get_logs,
        "getLogs",
        "Output of the latest run (follow=true streams it as Server-Sent Events)",
        "runs",
        response=api.LogsReply,
        errors=WAIT_ERRORS,
        query=(Param("run_id", ID_SCHEMA), *LOG_PARAMS),
        scope="read",
    ),
    Endpoint(
        "GET",
        "/api/tasks/{task_id}/runs/{run_id}/logs",
        views.get_logs,
        "getRunLogs",
        "Output of one run",
        "runs",
        response=api.LogsReply,
        errors=WAIT_ERRORS,
        query=LOG_PARAMS,
        scope="read",
    ),
    Endpoint(
        "POST",
        "/api/scheduled-tasks",
        views.submit_scheduled,
        "submitScheduledTask",
        "Submit a scheduled (cron) task",
        "schedules",
        request=TaskSpec,
        response=TaskRecord,
        status=201,
        extra_status=(202,),
        errors=SUBMIT_ERRORS,
        query=(WAIT,),
        scope=SUBMIT,
    ),
    Endpoint(
        "GET",
        "/api/scheduled-tasks",
        views.list_schedules,
        "listSchedules",
        "Scheduled tasks with next_run_at, last_run and counters",
        "schedules",
        response=api.ScheduleList,
        errors=(503,),
        scope="read",
    ),
    Endpoint(
        "GET",
        "/api/scheduled-tasks/{task_id}",
        views.get_schedule,
        "getSchedule",
        "A scheduled task",
        "schedules",
        response=TaskRecord,
        scope="read",
    ),
    Endpoint(
        "DELETE",
        "/api/scheduled-tasks/{task_id}",
        views.delete_schedule,
        "deleteSchedule",
        "Stop future fires and delete; a running run finishes unless cancel_running=true",
        "schedules",
        response=api.DeleteReply,
        query=(CANCEL_RUNNING,),
        scope="admin",
    ),
    Endpoint(
        "POST",
        "/api/scheduled-tasks/{task_id}/pause",
        views.pause_schedule,
        "pauseSchedule",
        "Pause future fires",
        "schedules",
        response=TaskRecord,
        errors=(404, 409, 503),
        scope="admin",
    ),
    Endpoint(
        "POST",
        "/api/scheduled-tasks/{task_id}/resume",
        views.resume_schedule,
        "resumeSchedule",
        "Resume a paused schedule",
        "schedules",
        response=TaskRecord,
        errors=(404, 409, 503),
        scope="admin",
    ),
    Endpoint(
        "POST",
        "/api/scheduled-tasks/{task_id}/trigger",
        views.trigger_schedule,
        "triggerSchedule",
        "Run once now, besides the schedule",
        "schedules",
        response=api.TriggerReply,
        status=202,
        errors=(404, 409, 503),
        scope="admin",
    ),
    Endpoint(
        "GET",
        "/api/scheduled-tasks/{task_id}/ledger",
        views.schedule_ledger,
        "scheduleLedger",
        "Every fire slot and what became of it (run, skipped, missed)",
        "schedules",
        response=api.Ledger,
        query=(Param("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}),),
        scope="read",
    ),
    Endpoint(
        "GET",
        "/api/cron/preview",
        cron_preview.preview,
        "previewCron",
        "The next fire times of a cron expression in a time zone (to check it before saving)",
        "schedules",
        response=cron_preview.CronPreview,
        errors=(400,),
        query=(
            Param("expression", {"type": "string", "maxLength": cron_preview.MAX_EXPRESSION_CHARS}),
            Param("timezone", {"type": "string", "default": "UTC"}, "IANA time zone."),
            Param("count", {"type": "integer", "minimum": 1, "maximum": cron_preview.MAX_COUNT, "default": 5}),
        ),
        scope="read",
    ),
    Endpoint(
        "GET",
        "/api/stats",
        views.stats,
        "stats",
        "Counts, rates, durations, queue depth, runners",
        "operations",
        response=api.Stats,
        errors=(503,),
        scope="read",
    ),
    Endpoint(
        "GET",
        "/api/limits",
        views.list_limits,
        "listLimits",
        "Every flow-control key: its limits, running and waiting runs",
        "operations",
        response=LimitsReply,
        errors=(503,),
        scope="read",
    ),
    Endpoint(
        "PUT",
        "/api/limits/{key}",
        views.set_limit,
        "setLimit",
        "Set an operator's limit on a key (null fields fall back to the tasks' own)",
        "operations",
        request=SetLimitRequest,
        response=LimitView,
        errors=(400, 404, 503),
        scope="admin",
    ),
    Endpoint(
        "GET",
        "/api/dead-letters",
        views.dead_letters,
        "deadLetters",
        "Runs given up after too many deliveries",
        "operations",
        response=api.DeadLetterList,
        errors=(503,),
        scope="admin",
    ),
    Endpoint(
        "PUT",
        "/api/secrets/{name}",
        secret_views.put_secret,
        "putSecret",
        "Set a secret (its value is encrypted at rest and never shown again)",
        "secrets",
        request=secrets.SecretValueBody,
        response=secrets.SecretInfo,
        errors=(400, 413, 415, 503),
        scope="admin",
    ),
    Endpoint(
        "GET",
        "/api/secrets",
        secret_views.list_secrets,
        "listSecrets",
        "Every secret's name and times (never a value)",
        "secrets",
        response=secrets.SecretList,
        errors=(503,),
        scope="admin",
    ),
    Endpoint(
        "DELETE",
        "/api/secrets/{name}",
        secret_views.delete_secret,
        "deleteSecret",
        "Delete a secret (runs that use it fail from now on with secret_missing)",
        "secrets",
        response=secrets.SecretDeleted,
        errors=(400, 404, 503),
        scope="admin",
    ),
    Endpoint(
        "GET",
        "/api/health",
        health.health,
        "health",
        "Health of every dependency (200 ok/degraded, 503 down)",
        "operations",
        response=api.Health,
        extra_status=(503,),
        errors=(),
        public=True,
    ),
    Endpoint(
        "GET",
        "/metrics",
        health.metrics,
        "metrics",
        "Prometheus metrics",
        "operations",
        errors=(),
        content_type="text/plain",
        scope="read",
    ),
)
