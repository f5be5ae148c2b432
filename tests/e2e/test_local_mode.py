"""`taskmesh up` (what `make up` runs): everything local, data kept across restarts, and usable
for API tasks even when no Docker engine answers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from taskmesh.processes import free_port, stop_process, wait_http
from tests.support import TargetServer


@asynccontextmanager
async def taskmesh_up(data_dir: Path, port: int, nats_port: int, **env: str) -> AsyncIterator[subprocess.Popen]:
    """``taskmesh up`` as a user runs it; the test's own servers keep serving meanwhile (async waits)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskmesh",
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--nats-port",
            str(nats_port),
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/api/health", 30)
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 30
            while (await client.get(f"http://127.0.0.1:{port}/api/health")).json()["checks"]["runners"]["count"] < 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # what Ctrl-C does
            try:
                await asyncio.to_thread(process.wait, 60)
            except subprocess.TimeoutExpired:
                stop_process(process, 5)


async def wait_final(client: httpx.AsyncClient, base: str, task_id: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        task = (await client.get(f"{base}/api/tasks/{task_id}/wait", params={"wait": 5}, timeout=15)).json()
        if task["status"] in ("succeeded", "failed", "timed_out", "cancelled", "expired"):
            return task
        assert time.monotonic() < deadline, task


async def test_local_mode_serves_the_api_keeps_data_and_stops_on_ctrl_c(tmp_path: Path, target: TargetServer) -> None:
    port, nats_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    async with taskmesh_up(tmp_path / "data", port, nats_port) as process, httpx.AsyncClient() as client:
        created = await client.post(
            f"{base}/api/tasks",
            json={
                "name": "立即API请求",
                "task_type": "immediate",
                "api_url": f"{target.url}/hello",
                "method": "GET",
                "timeout": 30,
            },
        )
        assert created.status_code == 201
        task_id = created.json()["id"]
        assert (await wait_final(client, base, task_id))["status"] == "succeeded"
    assert process.returncode == 0
    output = process.stdout.read() if process.stdout else ""
    for name in ("store", "scheduler", "runner", "gateway"):
        assert f"{name:<9}|" in output  # prefixed lines of every service
    assert "Taskmesh is up" in output

    async with taskmesh_up(tmp_path / "data", port, nats_port), httpx.AsyncClient() as client:
        again = (await client.get(f"{base}/api/tasks/{task_id}")).json()
        assert again["status"] == "succeeded" and again["result"]["body"] == {"hello": "world", "method": "GET"}


async def test_without_docker_api_tasks_work_and_code_tasks_say_why_not(tmp_path: Path, target: TargetServer) -> None:
    port, nats_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    async with (
        taskmesh_up(tmp_path / "data", port, nats_port, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock"),
        httpx.AsyncClient() as client,
    ):
        health = (await client.get(f"{base}/api/health")).json()
        assert health["status"] == "degraded"
        assert health["checks"]["sandbox"]["status"] == "degraded"
        assert "Docker not running" in health["checks"]["sandbox"]["detail"]

        api_task = (
            await client.post(
                f"{base}/api/tasks", json={"name": "api", "task_type": "immediate", "api_url": f"{target.url}/hello"}
            )
        ).json()
        assert (await wait_final(client, base, api_task["id"]))["status"] == "succeeded"
        code_task = (
            await client.post(
                f"{base}/api/tasks",
                json={
                    "name": "code",
                    "task_type": "immediate",
                    "function_code": "def f():\n    return 1",
                    "function_name": "f",
                },
            )
        ).json()
        failed = await wait_final(client, base, code_task["id"])
        assert failed["status"] == "failed"
        assert failed["error"]["type"] == "sandbox_unavailable"
        assert failed["error"]["message"].startswith("sandbox unavailable: Docker not running")
