"""API tasks: one HTTP request with a pooled httpx client, a wall-clock timeout and an egress policy."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx
import msgspec

from proto.runs import RunError
from proto.tasks import TaskSpec
from services.runner.egress import EgressDenied, EgressPolicy, GuardedBackend
from services.runner.outcome import Outcome, failed
from services.runner.output import RunOutput


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool built on the egress-checking network backend.

    httpx has no public hook for the network backend, so the pool it made is replaced by an
    identical one; tests/runner/test_http_task.py proves the policy is enforced.
    """

    def __init__(self, policy: EgressPolicy, max_connections: int) -> None:
        context = ssl.create_default_context()  # the system trust store, incl. SSL_CERT_FILE
        super().__init__(verify=context, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, max_connections=max_connections, max_keepalive_connections=max_connections,
            keepalive_expiry=30.0, network_backend=GuardedBackend(policy))


def redacted(url: str) -> str:
    """The URL without credentials, query or fragment: safe to write to a log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HttpTasks:
    """Executes API tasks; one instance (and connection pool) per runner."""

    def __init__(self, policy: EgressPolicy, *, max_connections: int, default_timeout: float,
                 max_timeout: float, body_cap_bytes: int) -> None:
        self.policy = policy
        self.client = httpx.AsyncClient(transport=GuardedTransport(policy, max_connections),
                                        follow_redirects=False, trust_env=False)
        self.default_timeout = default_timeout
        self.max_timeout = max_timeout
        self.body_cap_bytes = body_cap_bytes

    async def close(self) -> None:
        await self.client.aclose()

    async def egress_blocked(self, url: str) -> str | None:
        """Why the egress policy forbids ``url``'s host, or None (for requests made elsewhere)."""
        host, port = urlsplit(url).hostname or "", urlsplit(url).port or 443
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port)
        except OSError:
            return None  # unresolvable here; the request itself will say so
        for info in infos:
            if not self.policy.permits(info[4][0]):
                return f"{host} resolves to {info[4][0]}, which the egress policy blocks"
        return None

    async def execute(self, spec: TaskSpec, output: RunOutput) -> Outcome:
        """Make the request; non-expected status codes fail the run but keep the response."""
        timeout = min(spec.timeout or self.default_timeout, self.max_timeout)
        url = spec.api_url or ""
        request = self.client.build_request(spec.method, url, timeout=timeout, **_request_parts(spec))
        output.system(f"{spec.method} {redacted(url)} (timeout {timeout:g} s)")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                response = await self.client.send(request, stream=True)
                try:
                    body, truncated = await self._read(response)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            elapsed = (time.perf_counter() - started) * 1000
            output.system(f"no response within {timeout:g} s")
            return Outcome(status="timed_out", error=RunError(
                type="timed_out", message=f"no complete response within {timeout:g} s ({elapsed:.0f} ms)"))
        except httpx.HTTPError as exc:
            if _caused_by(exc, EgressDenied):
                output.system(f"blocked: {exc}")
                return failed("egress_denied", str(exc))
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            output.system(f"request failed: {message}")
            return failed("http_error", f"request to {redacted(url)} failed: {message}")
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        result: dict[str, Any] = {
            "status_code": response.status_code,
            "headers": dict(response.headers),
            "body": _decoded(body, truncated, response.headers.get("content-type", "")),
            "elapsed_ms": elapsed_ms,
        }
        if truncated:
            result["body_truncated"] = True
        output.system(f"{response.status_code} {response.reason_phrase} in {elapsed_ms:.1f} ms, {len(body)} bytes")
        return judge_response(result, response.reason_phrase, spec.expected_status)

    async def _read(self, response: httpx.Response) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        size = 0
        async for piece in response.aiter_bytes():
            room = self.body_cap_bytes - size
            if len(piece) > room:
                parts.append(piece[:room])
                return b"".join(parts), True
            parts.append(piece)
            size += len(piece)
        return b"".join(parts), False


def _request_parts(spec: TaskSpec) -> dict[str, Any]:
    """Headers and body: a ``data`` object goes as JSON, a string as text, nothing as no body."""
    headers = dict(spec.headers)
    if spec.data is None:
        return {"headers": headers}
    if isinstance(spec.data, str):
        return {"headers": headers, "content": spec.data.encode()}
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return {"headers": headers, "content": msgspec.json.encode(spec.data)}


def _decoded(body: bytes, truncated: bool, content_type: str) -> Any:
    if not truncated and body and ("json" in content_type or body[:1] in (b"{", b"[")):
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError:
            pass
    return body.decode("utf-8", errors="replace")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def judge_response(result: dict[str, Any], reason: str, expected: list[int]) -> Outcome:
    """Succeeded when the status is expected (default: any 2xx); failed otherwise, response kept."""
    status = result["status_code"]
    if (status in expected) if expected else 200 <= status < 300:
        return Outcome(status="succeeded", result=result)
    wanted = ", ".join(map(str, expected)) if expected else "2xx"
    return Outcome(status="failed", result=result, error=RunError(
        type="http_status", status_code=status, message=f"HTTP {status} {reason} (expected {wanted})"))
