"""Test support: a whole Taskmesh stack as real processes, and a local HTTP target server."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from taskmesh.processes import SERVICES, NatsServer, ServiceProcess, free_port, local_service_env

FINAL = {"succeeded", "failed", "timed_out", "cancelled", "expired", "completed"}


@dataclass
class Stack:
    """nats-server + store + scheduler(s) + runner(s) + gateway, each a separate process."""

    root: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    nats: NatsServer | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    http_port: int = 0
    instance: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **local_service_env(self.nats.url if self.nats else "", self.http_port, self.root, self.instance),
            "TASKMESH_SHUTDOWN_GRACE": "10",
            "TASKMESH_BUILDER_NETWORK": os.environ.get("TASKMESH_BUILDER_NETWORK", "host"),
            "TASKMESH_POOL_SIZE": "1",
            **self.env_extra,
            **extra,
        }

    def start(self, names: tuple[str, ...] = SERVICES, wait: bool = True) -> Stack:
        self.instance = self.instance or f"test-{secrets.token_hex(4)}"
        self.http_port = self.http_port or free_port()
        if self.nats is None:
            self.nats = NatsServer(self.root / "nats", log_path=self.root / "nats-server.log").start()
        for name in names:
            self.start_service(name)
        if wait:
            self.wait_ready()
        return self

    def start_service(self, name: str, key: str | None = None, **extra_env: str) -> ServiceProcess:
        """Start ``services.<name>``; ``key`` names a second instance (``runner-2``)."""
        key = key or name
        service = ServiceProcess(name, self.env(**extra_env), log_path=self.root / "logs" / f"{key}.log").start()
        self.services[key] = service
        return service

    def wait_ready(self, timeout: float = 30.0, runners: int = 1, scheduler: bool = True) -> dict[str, Any]:
        """Wait until /api/health shows the store, a scheduler leader and ``runners`` runners."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = httpx.get(f"{self.base_url}/api/health", timeout=2).json()
                checks = last.get("checks", {})
                ready = (
                    checks.get("store", {}).get("status") == "ok"
                    and (not scheduler or checks.get("scheduler", {}).get("status") == "ok")
                    and checks.get("runners", {}).get("count", 0) >= runners
                )
                if ready:
                    return last
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"stack not ready after {timeout} s: {last}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"----- {key} -----\n{service.log()[-6000:]}" for key, service in self.services.items())

    def stop(self) -> None:
        signalled = {key for key, service in self.services.items() if service.alive()}
        for key in signalled:  # all at once: their order does not matter here
            self.services[key].process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for key, service in self.services.items():
            service.stop(timeout=20, signalled=key in signalled)
        if self.nats is not None:
            self.nats.stop()
        self.leftover_containers(remove=True)

    def leftover_containers(self, remove: bool = False) -> list[str]:
        """Containers of this stack's installation still on the engine (removed if asked)."""
        if not self.instance:
            return []
        try:
            found = subprocess.run(
                ["docker", "ps", "-aq", "--filter", f"label=org.taskmesh.instance={self.instance}"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            return []
        if remove and found:
            subprocess.run(["docker", "rm", "-f", *found], capture_output=True, timeout=60)
        return found


class Api:
    """An HTTP client for the stack's gateway, with helpers that wait for outcomes."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(base_url=base_url, timeout=60, headers=headers)

    async def close(self) -> None:
        await self.client.aclose()

    async def submit(
        self, body: dict[str, Any], path: str = "/api/tasks", expect: int = 201, **params: Any
    ) -> dict[str, Any]:
        response = await self.client.post(path, json=body, params=params)
        assert response.status_code == expect, response.text
        return response.json()

    async def get(self, path: str, expect: int = 200, **params: Any) -> Any:
        response = await self.client.get(path, params=params)
        assert response.status_code == expect, response.text
        return response.json()

    async def task(self, task_id: str) -> dict[str, Any]:
        return await self.get(f"/api/tasks/{task_id}")

    async def wait_final(self, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The task once it is final (fails the test on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            response = await self.client.get(f"/api/tasks/{task_id}/wait", params={"wait": min(max(remaining, 0), 30)})
            body = response.json()
            if response.status_code == 200 and body["status"] in FINAL:
                return body
            assert time.monotonic() < deadline, f"task {task_id} not final after {timeout} s: {body}"

    async def wait_for(
        self,
        task_id: str,
        predicate: Any,
        timeout: float = 30.0,
        interval: float = 0.1,
        *,
        unavailable_ok: bool = False,
    ) -> dict[str, Any]:
        """Poll the task until ``predicate(task)`` holds.

        ``unavailable_ok``: a 503 is "not yet" (a fault test, while a store takes over), not a failure.
        """
        deadline = time.monotonic() + timeout
        while True:
            response = await self.client.get(f"/api/tasks/{task_id}")
            if unavailable_ok and response.status_code == 503:
                task: Any = response.json()
            else:
                assert response.status_code == 200, response.text
                task = response.json()
                if predicate(task):
                    return task
            assert time.monotonic() < deadline, f"condition not met for {task_id} after {timeout} s: {task}"
            await asyncio.sleep(interval)

    async def runs(self, task_id: str) -> list[dict[str, Any]]:
        return (await self.get(f"/api/tasks/{task_id}/runs", limit=500))["runs"]

    async def log_text(self, task_id: str, run_id: str | None = None) -> str:
        params = {"format": "text", **({"run_id": run_id} if run_id else {})}
        response = await self.client.get(f"/api/tasks/{task_id}/logs", params=params)
        assert response.status_code == 200, response.text
        return response.text


class TargetServer:
    """A local HTTP server for API tasks: /hello, /echo, /status/{code}, /slow, with a hit counter."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.bodies: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> TargetServer:
        app = web.Application()
        app.router.add_route("*", "/hello", self._hello)
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_route("*", "/status/{code}", self._status)
        app.router.add_route("*", "/slow", self._slow)
        app.router.add_get("/big", self._big)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hello(self, request: web.Request) -> web.Response:
        self.hits["/hello"] += 1
        return web.json_response({"hello": "world", "method": request.method})

    async def _echo(self, request: web.Request) -> web.Response:
        self.hits["/echo"] += 1
        raw = await request.read()
        self.headers.append(dict(request.headers))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.bodies.append(body)
        return web.json_response(
            {"method": request.method, "body": body, "content_type": request.headers.get("Content-Type")}
        )

    async def _status(self, request: web.Request) -> web.Response:
        self.hits["/status"] += 1
        return web.json_response({"status": int(request.match_info["code"])}, status=int(request.match_info["code"]))

    async def _slow(self, request: web.Request) -> web.Response:
        self.hits["/slow"] += 1
        await asyncio.sleep(float(request.query.get("seconds", "1")))
        return web.json_response({"slept": float(request.query.get("seconds", "1"))})

    async def _big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.query.get("bytes", "1000000")), content_type="text/plain")


class WheelServer:
    """A directory of wheels served on 127.0.0.1 (the runner's ``find_links``); tests never use PyPI."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> WheelServer:
        import sys

        from taskmesh.processes import wait_http

        self.port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(self.url)
        return self

    def stop(self) -> None:
        from taskmesh.processes import stop_process

        if self.process is not None:
            stop_process(self.process, 5)
