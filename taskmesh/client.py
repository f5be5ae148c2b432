"""A small synchronous client of the gateway's REST API, for the command line."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:5001"
REQUEST_TIMEOUT_SECONDS = 30.0
WAIT_STEP_SECONDS = 1.0
"""How long one ``/wait`` request may block: short, so a spinner can show each status change."""
FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled", "expired", "completed"})


class GatewayError(Exception):
    """Anything that keeps a command from getting its answer from the gateway."""

    def body(self) -> dict[str, Any]:
        """The error as the API's JSON shape, for ``--json`` output."""
        return {"error": {"code": "unreachable", "message": str(self), "field": None}}


class GatewayUnreachable(GatewayError):
    """No HTTP answer at all: refused, timed out, or a broken connection."""


class ApiError(GatewayError):
    """The gateway answered with an error status and (usually) ``{"error": {"code", "message", "field"}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


@dataclass(frozen=True)
class LogEvent:
    """One Server-Sent Event of a followed log: ``log`` (a chunk) or ``end`` (the run's status)."""

    event: str
    data: dict[str, Any]


def _api_error(response: httpx.Response) -> ApiError:
    """The error of a non-2xx response, whatever its body looks like."""
    try:
        detail = response.json()["error"]
        return ApiError(response.status_code, str(detail.get("code", "http_error")),
                        str(detail.get("message", "")), detail.get("field"))
    except (ValueError, KeyError, TypeError, AttributeError):
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return ApiError(response.status_code, "http_error", f"HTTP {response.status_code}: {text}")


class Gateway:
    """The gateway at ``url``; every method returns the decoded JSON body or raises GatewayError."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
                headers: dict[str, str] | None = None, accept: tuple[int, ...] = ()) -> httpx.Response:
        """Send one request; a 4xx/5xx not in ``accept`` raises ApiError."""
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.request(method, path, params=query, json=body, headers=headers)
        except httpx.ConnectError:
            raise GatewayUnreachable(f"gateway not reachable at {self.url}: is `taskmesh up` running?") from None
        except httpx.TimeoutException as exc:
            raise GatewayUnreachable(f"gateway at {self.url} did not answer in time ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise GatewayUnreachable(f"gateway at {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400 and response.status_code not in accept:
            raise _api_error(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        """GET and decode."""
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        """POST and decode."""
        return self.request("POST", path, params=params, body=body).json()

    def delete(self, path: str, **params: Any) -> Any:
        """DELETE and decode."""
        return self.request("DELETE", path, params=params).json()

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit a task to the endpoint its spec calls for; returns the task record."""
        if spec.get("task_type") == "scheduled":
            path = "/api/scheduled-tasks"
        elif spec.get("isolated"):
            path = "/api/tasks/isolated"
        else:
            path = "/api/tasks"
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.request("POST", path, body=spec, headers=headers).json()

    def logs(self, task_id: str, run_id: str | None = None, attempt: int | None = None) -> dict[str, Any]:
        """All stored output of a run attempt in one reply, however many pages the store sends it in."""
        path = f"/api/tasks/{task_id}/logs"
        reply = self.get(path, run_id=run_id, attempt=attempt)
        chunks = list(reply["chunks"])
        while reply.get("more") and reply["chunks"]:
            # pinned to the first page's run and attempt, so a new run starting meanwhile cannot mix in
            reply = self.get(path, run_id=reply["run_id"], attempt=reply["attempt"], after=reply["chunks"][-1]["seq"])
            chunks += reply["chunks"]
        return {**reply, "chunks": chunks, "more": False}

    def wait(self, task_id: str, timeout_seconds: float | None,
             on_update: Callable[[dict[str, Any]], None] = lambda task: None) -> tuple[dict[str, Any], bool]:
        """Wait until the task is done (a schedule: until a run ends); returns (task, done)."""
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while True:
            remaining = WAIT_STEP_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
            response = self.request("GET", f"/api/tasks/{task_id}/wait",
                                    params={"wait": min(WAIT_STEP_SECONDS, remaining)}, accept=(202,))
            task = response.json()
            on_update(task)
            done = response.status_code == 200 and (task["status"] in FINAL_STATUSES
                                                    or task.get("task_type") == "scheduled")
            if done or (deadline is not None and time.monotonic() >= deadline):
                return task, done

    def follow_logs(self, task_id: str, run_id: str | None = None) -> Iterator[LogEvent]:
        """Stored output, then live chunks, until the run ends (``GET /logs?follow=true``)."""
        params = {"follow": "true", **({"run_id": run_id} if run_id else {})}
        # no read timeout: a quiet task sends nothing but keepalives for as long as it runs
        timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, read=None)
        try:
            with self.http.stream("GET", f"/api/tasks/{task_id}/logs", params=params, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _api_error(response)
                yield from _server_sent_events(response.iter_lines())
        except httpx.ConnectError:
            raise GatewayUnreachable(f"gateway not reachable at {self.url}: is `taskmesh up` running?") from None
        except httpx.HTTPError as exc:
            raise GatewayUnreachable(f"the log stream from {self.url} broke ({type(exc).__name__}); "
                                     "run the command again once the gateway is back") from None


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _server_sent_events(lines: Iterator[str]) -> Iterator[LogEvent]:
    """Parse a ``text/event-stream`` into events; comments (keepalives) are skipped."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield LogEvent(event, json.loads("\n".join(data)))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
