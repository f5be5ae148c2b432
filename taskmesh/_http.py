"""The package's one HTTP client of the gateway's REST API, sync (``Gateway``) and async (``AsyncGateway``).

Both raise only ``taskmesh.errors`` exceptions; submissions carry an idempotency key and are
retried with it on a 503 or a lost connection, so a retry never creates a second task.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import msgspec

from taskmesh.errors import ApiError, GatewayError, GatewayUnreachable

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:5001"
REQUEST_TIMEOUT_SECONDS = 30.0
WAIT_STEP_SECONDS = 1.0
"""How long one ``/wait`` request may block in ``Gateway.wait``: short, so a spinner shows each change."""
SUBMIT_RETRY_SECONDS = 30.0
"""How long a submission is retried (same idempotency key) while the gateway answers 503 or is away."""
UNANSWERED_RETRY_SECONDS = 2.0
"""The budget instead while the gateway has never answered this client: most likely it is not
running (or the URL is wrong), and a user should hear so at once rather than after 30 s. A
gateway that has answered before and then refuses is restarting; that gets the whole budget."""
FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled", "expired", "completed"})


@dataclass(frozen=True)
class LogEvent:
    """One Server-Sent Event of a followed log: ``log`` (a chunk) or ``end`` (the run's status)."""

    event: str
    data: dict[str, Any]


def api_error(response: httpx.Response) -> ApiError:
    """The error of a non-2xx response, whatever its body looks like."""
    try:
        detail = response.json()["error"]
        return ApiError(
            response.status_code,
            str(detail.get("code", "http_error")),
            str(detail.get("message", "")),
            detail.get("field"),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return ApiError(response.status_code, "http_error", f"HTTP {response.status_code}: {text}")


def unreachable(url: str, exc: httpx.HTTPError | httpx.InvalidURL) -> GatewayUnreachable:
    """The error for a request that got no HTTP answer."""
    if isinstance(exc, (httpx.InvalidURL, httpx.UnsupportedProtocol)):
        return GatewayUnreachable(f"{url!r} is not a gateway URL such as {DEFAULT_URL} ({exc})", transient=False)
    if isinstance(exc, httpx.ConnectError):
        return GatewayUnreachable(f"gateway not reachable at {url}: is `taskmesh up` running?")
    if isinstance(exc, httpx.TimeoutException):
        return GatewayUnreachable(f"gateway at {url} did not answer in time ({type(exc).__name__})")
    return GatewayUnreachable(f"gateway at {url}: {type(exc).__name__}: {exc}")


def decode(kind: type[T], response: httpx.Response) -> T:
    """The body as ``kind`` (a proto Struct); a body that is not one is a GatewayError."""
    try:
        return msgspec.json.decode(response.content, type=kind)
    except msgspec.MsgspecError as exc:
        raise GatewayError(f"unexpected reply from {response.request.url}: {exc}") from None


def query(params: dict[str, Any] | None) -> dict[str, Any]:
    """Query parameters without the unset ones, booleans as ``true``/``false``."""
    return {
        k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in (params or {}).items() if v is not None
    }


def submit_path(spec: dict[str, Any]) -> str:
    """The endpoint a spec is submitted to."""
    if spec.get("task_type") == "scheduled":
        return "/api/scheduled-tasks"
    return "/api/tasks/isolated" if spec.get("isolated") else "/api/tasks"


def retryable(exc: GatewayError) -> bool:
    """Worth sending the same submission again: no answer, or the gateway's 503 (NATS or store away)."""
    return (isinstance(exc, GatewayUnreachable) and exc.transient) or (isinstance(exc, ApiError) and exc.status == 503)


class SubmitRetries:
    """Jittered, growing pauses between the attempts of one submission, while they are worth it."""

    def __init__(self, seconds: float) -> None:
        self.started = time.monotonic()
        self.seconds = seconds
        self.delay = 0.1

    def pause(self, exc: GatewayError, answered: bool) -> float | None:
        """How long to wait before the next attempt after ``exc``; None: give up and raise it.

        ``answered``: the gateway has answered this client before (see UNANSWERED_RETRY_SECONDS).
        """
        budget = self.seconds if answered else min(self.seconds, UNANSWERED_RETRY_SECONDS)
        left = self.started + budget - time.monotonic()
        if not retryable(exc) or left <= 0:
            return None
        pause = min(left, self.delay * random.uniform(0.5, 1.0))
        self.delay = min(self.delay * 2, 2.0)
        return pause


def server_sent_events(lines: Iterable[str]) -> Iterator[LogEvent]:
    """Parse a ``text/event-stream`` into events; comments (keepalives) are skipped."""
    parser = _EventParser()
    for line in lines:
        if (event := parser.feed(line)) is not None:
            yield event


class _EventParser:
    """Lines in, events out; a log chunk already seen (same run, attempt and seq) is dropped."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []
        self.seen: set[tuple[Any, Any, Any]] = set()

    def feed(self, line: str) -> LogEvent | None:
        if line.startswith(":"):
            return None
        if line:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                self.event = value
            elif name == "data":
                self.data.append(value)
            return None
        event, data = self.event, self.data
        self.event, self.data = "message", []
        if not data:
            return None
        payload = json.loads("\n".join(data))
        if event == "log":
            key = (payload.get("run_id"), payload.get("attempt"), payload.get("seq"))
            if key in self.seen:
                return None
            self.seen.add(key)
        return LogEvent(event, payload)


class Gateway:
    """The gateway at ``url``, synchronously; every method returns the decoded JSON body or raises GatewayError."""

    def __init__(
        self, url: str = DEFAULT_URL, token: str | None = None, submit_retry_seconds: float = SUBMIT_RETRY_SECONDS
    ) -> None:
        self.url = url.rstrip("/")
        self.submit_retry_seconds = submit_retry_seconds
        self.answered = False
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            self.http = httpx.Client(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)
        except httpx.InvalidURL as exc:
            raise unreachable(self.url, exc) from None

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send one request; a 4xx/5xx not in ``accept`` raises ApiError."""
        try:
            response = self.http.request(method, path, params=query(params), json=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise unreachable(self.url, exc) from None
        self.answered = True
        if response.status_code >= 400 and response.status_code not in accept:
            raise api_error(response)
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

    def submit_response(self, spec: dict[str, Any], idempotency_key: str | None = None) -> httpx.Response:
        """Submit a task, retrying with the same idempotency key (made up if not given) while it is worth it."""
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        retries = SubmitRetries(self.submit_retry_seconds)
        while True:
            try:
                return self.request("POST", submit_path(spec), body=spec, headers=headers)
            except GatewayError as exc:
                if (pause := retries.pause(exc, self.answered)) is None:
                    raise
                time.sleep(pause)

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit a task to the endpoint its spec calls for; returns the task record."""
        return self.submit_response(spec, idempotency_key).json()

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

    def wait_response(self, task_id: str, seconds: float) -> httpx.Response:
        """One ``/wait`` of at most ``seconds``: 200 when the task is done, 202 when the wait ended first."""
        return self.request("GET", f"/api/tasks/{task_id}/wait", params={"wait": seconds}, accept=(202,))

    def wait(
        self,
        task_id: str,
        timeout_seconds: float | None,
        on_update: Callable[[dict[str, Any]], None] = lambda task: None,
    ) -> tuple[dict[str, Any], bool]:
        """Wait until the task is done (a schedule: until a run ends); returns (task, done)."""
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while True:
            remaining = WAIT_STEP_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
            response = self.wait_response(task_id, min(WAIT_STEP_SECONDS, remaining))
            task = response.json()
            on_update(task)
            done = response.status_code == 200 and (
                task["status"] in FINAL_STATUSES or task.get("task_type") == "scheduled"
            )
            if done or (deadline is not None and time.monotonic() >= deadline):
                return task, done

    def follow_logs(self, task_id: str, run_id: str | None = None) -> Iterator[LogEvent]:
        """Stored output, then live chunks, each once, until the run ends (``GET /logs?follow=true``)."""
        params = query({"follow": True, "run_id": run_id})
        # no read timeout: a quiet task sends nothing but keepalives for as long as it runs
        timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, read=None)
        try:
            with self.http.stream("GET", f"/api/tasks/{task_id}/logs", params=params, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise api_error(response)
                yield from server_sent_events(response.iter_lines())
        except httpx.ConnectError as exc:
            raise unreachable(self.url, exc) from None
        except httpx.HTTPError as exc:
            raise GatewayUnreachable(
                f"the log stream from {self.url} broke ({type(exc).__name__}); "
                "run the command again once the gateway is back"
            ) from None


class AsyncGateway:
    """The gateway at ``url``, for asyncio; the same requests and errors as ``Gateway``."""

    def __init__(
        self, url: str = DEFAULT_URL, token: str | None = None, submit_retry_seconds: float = SUBMIT_RETRY_SECONDS
    ) -> None:
        self.url = url.rstrip("/")
        self.submit_retry_seconds = submit_retry_seconds
        self.answered = False
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)
        except httpx.InvalidURL as exc:
            raise unreachable(self.url, exc) from None

    async def close(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send one request; a 4xx/5xx not in ``accept`` raises ApiError."""
        try:
            response = await self.http.request(method, path, params=query(params), json=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise unreachable(self.url, exc) from None
        self.answered = True
        if response.status_code >= 400 and response.status_code not in accept:
            raise api_error(response)
        return response

    async def submit_response(self, spec: dict[str, Any], idempotency_key: str | None = None) -> httpx.Response:
        """Submit a task, retrying with the same idempotency key (made up if not given) while it is worth it."""
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        retries = SubmitRetries(self.submit_retry_seconds)
        while True:
            try:
                return await self.request("POST", submit_path(spec), body=spec, headers=headers)
            except GatewayError as exc:
                if (pause := retries.pause(exc, self.answered)) is None:
                    raise
                await asyncio.sleep(pause)

    async def wait_response(self, task_id: str, seconds: float) -> httpx.Response:
        """One ``/wait`` of at most ``seconds``: 200 when the task is done, 202 when the wait ended first."""
        return await self.request("GET", f"/api/tasks/{task_id}/wait", params={"wait": seconds}, accept=(202,))

    async def follow_logs(self, task_id: str, run_id: str | None = None) -> AsyncIterator[LogEvent]:
        """Stored output, then live chunks, each once, until the run ends."""
        params = query({"follow": True, "run_id": run_id})
        timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, read=None)
        parser = _EventParser()
        try:
            async with self.http.stream(
                "GET", f"/api/tasks/{task_id}/logs", params=params, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise api_error(response)
                async for line in response.aiter_lines():
                    if (event := parser.feed(line)) is not None:
                        yield event
        except httpx.HTTPError as exc:
            raise unreachable(self.url, exc) from None
