"""HTTP handlers: translate a request into a store request and the reply into a response."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from proto import api, codec, subjects
from proto.flow import SetLimitRequest
from proto.records import TaskRecord
from services.common.ids import new_task_id
from services.gateway.context import GATEWAY
from services.gateway.errors import ApiError
from services.gateway.follow import follow_logs
from services.gateway.scopes import require, submit_scope
from services.gateway.store_client import StoreClient

log = logging.getLogger(__name__)

T = TypeVar("T")
JSON = "application/json"
SUBMIT_RETRY_FIRST_PAUSE = 0.1
"""Seconds before a submission is first repeated; the pause doubles up to the next bound."""
SUBMIT_RETRY_MAX_PAUSE = 1.0


def json_bytes(data: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=data, status=status, content_type=JSON, headers=headers)


def json_struct(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return json_bytes(codec.encode(value), status, headers)


def store(request: web.Request) -> StoreClient:
    return request.app[GATEWAY].store


def task_ref(request: web.Request) -> bytes:
    return codec.encode(api.TaskRef(id=request.match_info["task_id"]))


CONTROL_PARAMS = frozenset({"wait", "follow", "format"})
TIME_PARAMS = frozenset({"created_after", "created_before"})


def _instant(name: str, text: str) -> datetime:
    """An RFC 3339 time; without an offset it is taken as UTC (numbers are not times)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError("invalid_field", f"{name} must be an RFC 3339 time such as 2026-01-31T12:00:00Z", name) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def query_as(request: web.Request, kind: type[T], **extra: Any) -> T:
    """Query parameters (plus path values) as a request Struct; 400 naming the bad parameter."""
    values: dict[str, Any] = {}
    for key, value in request.query.items():
        if key in values:
            raise ApiError("invalid_field", f"parameter {key!r} is given more than once", key)
        if key in TIME_PARAMS:
            values[key] = _instant(key, value)
        elif key not in CONTROL_PARAMS:
            values[key] = value
    values.update(extra)
    try:
        converted = msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise codec_error(exc) from None
    for key, value in values.items():
        # lax conversion reads "null" as None; a parameter that is given must mean something
        if getattr(converted, key, None) is None:
            raise ApiError("invalid_field", f"{key}: {value!r} is not a valid value", key)
    return converted


def codec_error(exc: msgspec.ValidationError) -> ApiError:
    problem = codec.field_error_from(exc, body_name="query")
    return ApiError("invalid_field", problem.message.replace("unknown field", "unknown parameter"), problem.field)


async def json_body(request: web.Request) -> bytes:
    """The request body, checked for media type and size (the store checks the content)."""
    media = request.content_type if request.headers.get("Content-Type") else ""
    if media and media != JSON and not media.endswith("+json"):
        raise ApiError("unsupported_media_type", f"send the body as application/json, not {media}")
    limit = request.app[GATEWAY].settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError("payload_too_large", f"the body is larger than {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise ApiError("payload_too_large", f"the body is larger than {limit} bytes")
    if not body.strip():
        raise ApiError("invalid_json", "the request body is empty; send the task as a JSON object")
    return body


def wait_seconds(request: web.Request) -> float | None:
    raw = request.query.get("wait")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise ApiError("invalid_field", "wait must be a number of seconds", "wait") from None
    limit = request.app[GATEWAY].settings.max_wait_seconds
    if not 0 <= seconds <= limit:
        raise ApiError("invalid_field", f"wait must be between 0 and {limit:g} seconds", "wait")
    return seconds


# --- tasks ------------------------------------------------------------------------------------


async def submit(request: web.Request, route: str = "") -> web.Response:
    wait = wait_seconds(request)
    body = await json_body(request)
    scope = submit_scope(body, route)
    if scope is not None:
        kind = "a code or sandboxed task" if scope == "submit:code" else "a plain API task"
        require(request, scope, f"submitting {kind}")
    # drawn here, once: every repeat below carries it, so the store makes one task of them all
    headers: dict[str, str] = {subjects.HEADER_SUBMISSION_ID: new_task_id()}
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        headers[subjects.HEADER_IDEMPOTENCY_KEY] = key
    if route:
        headers[subjects.HEADER_ROUTE] = route
    if wait is not None:
        headers[subjects.HEADER_WAIT] = str(wait)  # the store answers once the task is done (or the wait ends)
    with request.app[GATEWAY].waiters.hold() if wait is not None else contextlib.nullcontext():
        reply = await _submit_to_store(request, body, headers, wait)
    accepted = _accepted_decoder.decode(reply)
    response_headers = {"Location": f"/api/tasks/{accepted.id}"}
    if accepted.replayed:
        response_headers["Idempotent-Replayed"] = "true"
    status = 202 if wait is not None and not accepted.done else 201
    return json_bytes(bytes(accepted.task), status, response_headers)


async def _submit_to_store(request: web.Request, body: bytes, headers: dict[str, str], wait: float | None) -> bytes:
    """The store's reply to a submission, repeated while the store is restarting or failing over.

    A request that timed out may have been taken by a store that stopped before it answered; its
    repeat carries the same submission id, which the store (and JetStream's duplicate window)
    turns into the same task. No store at all (no responders) is repeated too: a restart is brief.
    """
    settings = request.app[GATEWAY].settings
    deadline = time.monotonic() + settings.submit_retry_seconds
    pause = SUBMIT_RETRY_FIRST_PAUSE
    maybe_taken = False  # an attempt timed out: a store may have taken it before it stopped
    while True:
        try:
            return await store(request).raw(
                subjects.SUBMIT_TASK, body, headers, timeout=None if wait is None else wait + 5
            )
        except ApiError as exc:
            maybe_taken = maybe_taken or exc.code == "timeout"
            if exc.code not in ("timeout", "unavailable") or time.monotonic() + pause >= deadline:
                if not maybe_taken:
                    raise
                task_id = headers[subjects.HEADER_SUBMISSION_ID]
                raise ApiError(
                    "timeout",
                    f"the store did not answer in time, so the task may or may not have been accepted "
                    f"(as {task_id}: GET /api/tasks/{task_id} tells); retry with the same Idempotency-Key "
                    f"header to be sure it exists once",
                ) from None
            log.info("submission repeated: %s", exc.message)
        await asyncio.sleep(pause)
        pause = min(pause * 2, SUBMIT_RETRY_MAX_PAUSE)


class _Accepted(msgspec.Struct):
    """The parts of ``SubmitAccepted`` the gateway reads; the task is passed on as the store wrote it."""

    id: str
    task: msgspec.Raw
    replayed: bool = False
    done: bool = False


_accepted_decoder = msgspec.json.Decoder(_Accepted)


async def submit_task(request: web.Request) -> web.Response:
    return await submit(request)


async def submit_isolated(request: web.Request) -> web.Response:
    return await submit(request, "isolated")


async def submit_scheduled(request: web.Request) -> web.Response:
    return await submit(request, "scheduled")


async def list_tasks(request: web.Request) -> web.Response:
    query = query_as(request, api.ListTasksRequest)
    return json_bytes(await store(request).raw(subjects.LIST_TASKS, codec.encode(query)))


async def get_task(request: web.Request) -> web.Response:
    return json_bytes(await store(request).raw(subjects.GET_TASK, task_ref(request)))


async def cancel_task(request: web.Request) -> web.Response:
    reason = request.query.get("reason", "cancelled by user")
    payload = codec.encode(api.CancelTaskRequest(id=request.match_info["task_id"], reason=reason[:500]))
    return json_bytes(await store(request).raw(subjects.CANCEL_TASK, payload))


def _flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise ApiError("invalid_field", f"{name} must be true or false", name)


async def delete_task(request: web.Request, cancel_running_default: bool = True) -> web.Response:
    payload = codec.encode(
        api.DeleteTaskRequest(
            id=request.match_info["task_id"], cancel_running=_flag(request, "cancel_running", cancel_running_default)
        )
    )
    return json_bytes(await store(request).raw(subjects.DELETE_TASK, payload))


async def delete_schedule(request: web.Request) -> web.Response:
    task = codec.decode(TaskRecord, await store(request).raw(subjects.GET_TASK, task_ref(request)))
    if task.task_type != "scheduled":
        raise ApiError(
            "not_found", f"task {task.id} is not a scheduled task; use DELETE /api/tasks/{task.id}", "task_id"
        )
    return await delete_task(request, cancel_running_default=False)


async def wait_task(request: web.Request) -> web.Response:
    seconds = wait_seconds(request)
    payload = api.WaitTaskRequest(
        id=request.match_info["task_id"], timeout_seconds=30.0 if seconds is None else seconds
    )
    with request.app[GATEWAY].waiters.hold():
        reply = await store(request).call(
            subjects.WAIT_TASK, payload, api.WaitReply, timeout=payload.timeout_seconds + 5
        )
    return json_struct(reply.task, 200 if reply.done else 202)


async def list_runs(request: web.Request) -> web.Response:
    query = query_as(request, api.ListRunsRequest, id=request.match_info["task_id"])
    return json_bytes(await store(request).raw(subjects.LIST_RUNS, codec.encode(query)))


async def get_run(request: web.Request) -> web.Response:
    payload = api.RunRef(id=request.match_info["task_id"], run_id=request.match_info["run_id"])
    return json_bytes(await store(request).raw(subjects.GET_RUN, codec.encode(payload)))


async def get_logs(request: web.Request) -> web.StreamResponse:
    extra: dict[str, Any] = {"id": request.match_info["task_id"]}
    if "run_id" in request.match_info:
        extra["run_id"] = request.match_info["run_id"]
    query = query_as(request, api.GetLogsRequest, **extra)
    if _flag(request, "follow", False):
        with request.app[GATEWAY].followers.hold():
            return await follow_logs(request, query)
    if request.query.get("format") == "text":
        return web.Response(
            text="".join(c.data for c in await store(request).all_log_chunks(query)), content_type="text/plain"
        )
    return json_bytes(await store(request).raw(subjects.GET_LOGS, codec.encode(query)))


# --- schedules --------------------------------------------------------------------------------


async def list_schedules(request: web.Request) -> web.Response:
    return json_bytes(await store(request).raw(subjects.LIST_SCHEDULES))


async def get_schedule(request: web.Request) -> web.Response:
    data = await store(request).raw(subjects.GET_TASK, task_ref(request))
    if codec.decode(TaskRecord, data).task_type != "scheduled":
        raise ApiError("not_found", f"task {request.match_info['task_id']} is not a scheduled task", "task_id")
    return json_bytes(data)


async def pause_schedule(request: web.Request) -> web.Response:
    return json_bytes(await store(request).raw(subjects.PAUSE_SCHEDULE, task_ref(request)))


async def resume_schedule(request: web.Request) -> web.Response:
    return json_bytes(await store(request).raw(subjects.RESUME_SCHEDULE, task_ref(request)))


async def trigger_schedule(request: web.Request) -> web.Response:
    return json_bytes(await store(request).raw(subjects.TRIGGER_SCHEDULE, task_ref(request)), 202)


async def schedule_ledger(request: web.Request) -> web.Response:
    query = query_as(request, api.LedgerRequest, id=request.match_info["task_id"])
    return json_bytes(await store(request).raw(subjects.GET_LEDGER, codec.encode(query)))


# --- operations -------------------------------------------------------------------------------


async def stats(request: web.Request) -> web.Response:
    return json_bytes(await store(request).raw(subjects.GET_STATS))


async def list_limits(request: web.Request) -> web.Response:
    """Every flow key, as the scheduler leader holds them."""
    return json_bytes(await _ask_leader(request, subjects.FLOW_LIST_LIMITS, b"{}"))


async def set_limit(request: web.Request) -> web.Response:
    """An operator's limit on one key (the scheduler leader keeps it durably)."""
    body = await json_body(request)
    try:
        wanted = msgspec.json.decode(body, type=SetLimitRequest)
    except msgspec.MsgspecError as exc:
        problem = codec.field_error_from(exc)
        raise ApiError(problem.code, problem.message, problem.field) from None
    wanted = msgspec.structs.replace(wanted, key=request.match_info["key"])
    return json_bytes(await _ask_leader(request, subjects.FLOW_SET_LIMIT, codec.encode(wanted)))


async def _ask_leader(request: web.Request, subject: str, payload: bytes) -> bytes:
    """A limits request: the scheduler leader answers it (none does for a few seconds in a failover)."""
    try:
        return await store(request).raw(subject, payload)
    except ApiError as exc:
        if exc.code not in ("unavailable", "timeout"):
            raise
        raise ApiError(exc.code, "no scheduler leader answered (one takes over within about 10 s); try again") from None


async def dead_letters(request: web.Request) -> web.Response:
    return json_bytes(await store(request).raw(subjects.LIST_DEAD_LETTERS))
