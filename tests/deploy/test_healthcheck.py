"""deploy/healthcheck.py: a service is healthy as long as any of its NATS URLs answers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from taskmesh.processes import NatsServer, free_port

HEALTHCHECK = Path(__file__).resolve().parents[2] / "deploy" / "healthcheck.py"


@pytest.fixture
async def heartbeats(nc: Client) -> AsyncIterator[None]:
    """A store heartbeating from this host, as a store in this container would."""

    async def beat() -> None:
        while True:
            await nc.publish("taskmesh.heartbeat.store.abc", json.dumps({"host": socket.gethostname()}).encode())
            await asyncio.sleep(0.2)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


async def _check(service: str, nats_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASKMESH_NATS_URL": nats_url, "PYTHONPATH": str(HEALTHCHECK.parents[1])}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, str(HEALTHCHECK), service], env=env, capture_output=True, text=True, timeout=30
    )


async def test_a_service_is_healthy_while_its_first_nats_url_is_down(nats_server: NatsServer, heartbeats: None) -> None:
    down = f"nats://127.0.0.1:{free_port()}"
    done = await _check("store", f"{down}, {down.replace('127.0.0.1', 'localhost')},{nats_server.url}")
    assert done.returncode == 0, done.stderr


async def test_a_service_is_unhealthy_when_no_nats_url_answers_and_says_which_it_tried() -> None:
    first, second = f"nats://127.0.0.1:{free_port()}", f"nats://127.0.0.1:{free_port()}"
    done = await _check("store", f"{first},{second}")
    assert done.returncode == 1
    assert "no NATS URL answers" in done.stderr
    assert first.removeprefix("nats://") in done.stderr and second.removeprefix("nats://") in done.stderr


async def test_a_service_not_heard_on_a_live_nats_is_unhealthy(nats_server: NatsServer) -> None:
    done = await _check("scheduler", f"nats://127.0.0.1:{free_port()},{nats_server.url}")
    assert done.returncode == 1
    assert "no NATS URL answers" not in done.stderr
