"""API tasks: one HTTP request with a pooled aiohttp client, a wall-clock timeout and an egress policy."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec

from proto.runs import Execution, RunError
from proto.tasks import TaskSpec, host_allowed
from services.common.masking import MASK
from services.runner.egress import EgressDenied, EgressPolicy, allow_for_this_request, reset_request_allowance
from services.runner.outcome import failed
from services.runner.output import RunOutput


def redacted(url: str) -> str:
    """The URL without credentials, query or fragment: safe to write to a log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HttpTasks:
    """Executes API tasks; one instance (and connection pool) per runner.

    aiohttp's client, not httpx's: httpcore's pool checks every pooled connection's socket on
    every request, which cost ~3.5 ms of CPU per request at 64 connections (profiled under load);
    aiohttp's pool does not, and its egress hook (``socket_factory``) sees every address.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        max_connections: int,
        default_timeout: float,
        max_timeout: float,
        body_cap_bytes: int,
    ) -> None:
        self.policy = policy
        self.max_connections = max_connections
        self.default_timeout = default_timeout
        self.max_timeout = max_timeout
        self.body_cap_bytes = body_cap_bytes
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                ssl=ssl.create_default_context(),
                socket_factory=self.policy.socket_factory,
                ttl_dns_cache=10,
            )
            # trust_env stays off: a proxy from the environment would bypass the egress policy
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def egress_blocked(self, url: str, allow_hosts: list[str] | None = None) -> str | None:
        """Why the task's ``allow_hosts`` or the egress policy forbid ``url``'s host, or None
        (for requests made elsewhere)."""
        return outside_task_hosts(url, allow_hosts) or (await self._resolve_checked(url))[0]

    async def _resolve_checked(self, url: str) -> tuple[str | None, list[str]]:
        """The refusal for ``url``'s host (or None) and the addresses it resolved to."""
        host, port = urlsplit(url).hostname or "", urlsplit(url).port or 443
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port)
        except OSError:
            return None, []  # unresolvable here; the request itself will say so
        addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            refusal = self.policy.refusal(host, address)
            if refusal:
                return refusal, addresses
        return None, addresses

    async def execute(self, spec: TaskSpec, output: RunOutput) -> Execution:
        """Make the request; non-expected status codes fail the run but keep the response."""
        timeout = min(spec.timeout or self.default_timeout, self.max_timeout)
        url = spec.api_url or ""
        output.system(f"{spec.method} {redacted(url)} (timeout {timeout:g} s)")
        started = time.perf_counter()
        outside = outside_task_hosts(url, spec.allow_hosts)
        if outside:  # the task's list narrows the operator's policy: checked first, never instead
            output.system(f"blocked: {outside}")
            return failed("egress_denied", outside)
        allowance = None
        if self.policy.deny_hosts or self.policy.allow_hosts:  # names: decided here, addresses by the socket hook
            refusal, addresses = await self._resolve_checked(url)
            if refusal:
                output.system(f"blocked: {refusal}")
                return failed("egress_denied", refusal)
            if self.policy.allowed_by_name(urlsplit(url).hostname or ""):
                allowance = allow_for_this_request(addresses)
        try:
            async with asyncio.timeout(timeout):
                async with self.session().request(
                    spec.method, url, allow_redirects=False, **_request_parts(spec)
                ) as response:
                    body, truncated = await self._read(response)
        except TimeoutError:
            elapsed = (time.perf_counter() - started) * 1000
            output.system(f"no response within {timeout:g} s")
            return Execution(
                status="timed_out",
                error=RunError(
                    type="timed_out", message=f"no complete response within {timeout:g} s ({elapsed:.0f} ms)"
                ),
            )
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            if _caused_by(exc, EgressDenied):
                message = f"{urlsplit(url).hostname}: {_cause(exc, EgressDenied)}"
                output.system(f"blocked: {message}")
                return failed("egress_denied", message)
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            output.system(f"request failed: {message}")
            return failed("http_error", f"request to {redacted(url)} failed: {message}")
        finally:
            if allowance is not None:
                reset_request_allowance(allowance)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        result: dict[str, Any] = {
            "status_code": response.status,
            "headers": {
                name.lower(): MASK if name.lower() == "set-cookie" else ", ".join(response.headers.getall(name))
                for name in response.headers
            },
            "body": _decoded(body, truncated, response.headers.get("content-type", "")),
            "elapsed_ms": elapsed_ms,
        }
        if truncated:
            result["body_truncated"] = True
        reason = response.reason or ""
        output.system(f"{response.status} {reason} in {elapsed_ms:.1f} ms, {len(body)} bytes")
        return judge_response(result, reason, spec.expected_status)

    async def _read(self, response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        size = 0
        async for piece in response.content.iter_any():
            room = self.body_cap_bytes - size
            if len(piece) > room:
                parts.append(piece[:room])
                return b"".join(parts), True
            parts.append(piece)
            size += len(piece)
        return b"".join(parts), False


def outside_task_hosts(url: str, allow_hosts: list[str] | None) -> str | None:
    """Why ``url``'s host is outside the task's ``allow_hosts``, or None (also when there is no list)."""
    host = urlsplit(url).hostname or ""
    if not allow_hosts or host_allowed(host, allow_hosts):
        return None
    return f"{host} is not in this task's allow_hosts ({', '.join(allow_hosts)})"


def _request_parts(spec: TaskSpec) -> dict[str, Any]:
    """Headers and body: a ``data`` object goes as JSON, a string as text, nothing as no body."""
    headers = dict(spec.headers)
    if spec.data is None:
        return {"headers": headers}
    if isinstance(spec.data, str):
        return {"headers": headers, "data": spec.data.encode()}
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return {"headers": headers, "data": msgspec.json.encode(spec.data)}


def _decoded(body: bytes, truncated: bool, content_type: str) -> Any:
    if not truncated and body and ("json" in content_type or body[:1] in (b"{", b"[")):
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError:
            pass
    return body.decode("utf-8", errors="replace")


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of ``kind`` in ``exc``'s chain (aiohttp wraps socket errors)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        inner = getattr(seen, "os_error", None)
        if isinstance(inner, kind):
            return inner
        seen = seen.__cause__ or seen.__context__
    return None


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return _cause(exc, kind) is not None


def judge_response(result: dict[str, Any], reason: str, expected: list[int]) -> Execution:
    """Succeeded when the status is expected (default: any 2xx); failed otherwise, response kept."""
    status = result["status_code"]
    if (status in expected) if expected else 200 <= status < 300:
        return Execution(status="succeeded", result=result)
    wanted = ", ".join(map(str, expected)) if expected else "2xx"
    return Execution(
        status="failed",
        result=result,
        error=RunError(type="http_status", status_code=status, message=f"HTTP {status} {reason} (expected {wanted})"),
    )
