"""A sandbox whose result frame never ends is killed at the frame cap, and the runner's loop keeps going."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from proto.tasks import TaskSpec
from services.runner.sandbox import docker_sandbox
from services.runner.sandbox.docker_sandbox import DockerSandboxes, SandboxJob
from services.runner.sandbox.reaper import LABEL_INSTANCE
from services.runner.settings import RunnerSettings
from tests.runner.output_collector import NullOutput

ENDLESS_FRAME = """\
import json, os, sys
header = json.loads(sys.stdin.buffer.readline())
sys.stdin.buffer.readline()
os.write(1, header["nonce"].encode())
chunk = b"A" * 65536
for _ in range(512):  # 32 MiB, no newline: a frame that never ends
    os.write(1, chunk)
"""
"""A bootstrap gone wrong: it starts the result frame and never finishes it."""


@pytest.fixture
async def sandboxes(
    nc: Client, tmp_path: Path, docker_engine: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[DockerSandboxes]:
    monkeypatch.setattr(docker_sandbox, "BOOTSTRAP", ENDLESS_FRAME)
    instance = f"frame-test-{secrets.token_hex(4)}"
    running = DockerSandboxes(
        RunnerSettings(instance=instance, pool_size=0, deps_dir=str(tmp_path / "deps")),
        f"runner-{secrets.token_hex(4)}",
        nc,
    )
    stop = asyncio.Event()
    await running.start(stop)
    try:
        yield running
    finally:
        stop.set()
        await running.close()
        leftover = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={LABEL_INSTANCE}={instance}"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        if leftover:
            subprocess.run(["docker", "rm", "-f", *leftover], capture_output=True, timeout=120)


async def test_a_result_frame_past_its_cap_kills_the_sandbox_with_a_clear_error_and_never_stalls_the_loop(
    sandboxes: DockerSandboxes,
) -> None:
    spec = TaskSpec(name="endless", task_type="immediate", function_code="def f():\n    pass", function_name="f")
    job = SandboxJob(
        task_id="t",
        run_id=f"r-{secrets.token_hex(4)}",
        attempt=1,
        spec=spec,
        timeout_seconds=60,
        memory_mb=256,
        cpus=0.5,
        network=False,
    )
    longest_tick = 0.0
    output = NullOutput()

    async def tick() -> None:
        nonlocal longest_tick
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            longest_tick = max(longest_tick, time.monotonic() - before)

    ticker = asyncio.create_task(tick())
    try:
        outcome = await sandboxes.run(job, output, asyncio.Event())  # type: ignore[arg-type]
    finally:
        ticker.cancel()

    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.type == "result_too_large"
    assert "larger than" in outcome.error.message
    assert any("container killed" in line for line in output.lines)
    assert longest_tick < 2.0, f"the event loop stalled for {longest_tick:.1f} s"
