"""The warm pool against the real engine: many distinct shapes never pile up idle containers."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from proto.tasks import TaskSpec
from services.runner.sandbox.docker_sandbox import DockerSandboxes, SandboxJob
from services.runner.sandbox.reaper import LABEL_INSTANCE, LABEL_RUN
from services.runner.settings import RunnerSettings
from tests.runner.output_collector import NullOutput

CAP = 3
SHAPES = 5
"""Distinct memory limits; before the cap each one that ran kept two started containers."""


@pytest.fixture
async def sandboxes(nc: Client, tmp_path: Path, docker_engine: None) -> AsyncIterator[DockerSandboxes]:
    instance = f"pool-test-{secrets.token_hex(4)}"
    settings = RunnerSettings(instance=instance, pool_size=2, pool_max_ready=CAP, deps_dir=str(tmp_path / "deps"))
    running = DockerSandboxes(settings, f"runner-{secrets.token_hex(4)}", nc)
    stop = asyncio.Event()
    await running.start(stop)
    try:
        yield running
    finally:
        stop.set()
        await running.close()
        leftover = docker_ids("--filter", f"label={LABEL_INSTANCE}={instance}")
        if leftover:
            subprocess.run(["docker", "rm", "-f", *leftover], capture_output=True, timeout=120)


def docker_ids(*filters: str) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-aq", *filters], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()


def idle_containers(sandboxes: DockerSandboxes) -> set[str]:
    """Started pool containers of this runner that no run is using."""
    waiting = docker_ids(
        "--filter",
        f"label={LABEL_INSTANCE}={sandboxes.settings.instance}",
        "--filter",
        f"label={LABEL_RUN}=pool",
        "--filter",
        "status=running",
        "--no-trunc",
    )
    return set(waiting) - set(sandboxes.active.values())


def job(memory_mb: int) -> SandboxJob:
    spec = TaskSpec(name="shape", task_type="immediate", function_code="def f():\n    return 'ok'", function_name="f")
    return SandboxJob(
        task_id="t",
        run_id=f"r-{secrets.token_hex(4)}",
        attempt=1,
        spec=spec,
        timeout_seconds=60,
        memory_mb=memory_mb,
        cpus=0.5,
        network=False,
    )


async def settled(sandboxes: DockerSandboxes) -> None:
    assert sandboxes.pool is not None
    await asyncio.wait_for(sandboxes.pool.settled.wait(), 90)
    if sandboxes._removals:
        await asyncio.wait_for(asyncio.gather(*sandboxes._removals, return_exceptions=True), 60)


async def test_runs_of_many_distinct_shapes_never_keep_more_idle_containers_than_the_cap(
    sandboxes: DockerSandboxes,
) -> None:
    most_ready = 0

    async def watch() -> None:
        nonlocal most_ready
        while True:
            most_ready = max(most_ready, sandboxes.pool.count() if sandboxes.pool else 0)
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    counts = []
    try:
        for _ in range(2):  # the second use of each shape makes it hot
            for shape in range(SHAPES):
                outcome = await sandboxes.run(job(200 + 8 * shape), NullOutput(), asyncio.Event())  # type: ignore[arg-type]
                assert outcome.status == "succeeded", outcome
                await settled(sandboxes)
                counts.append(len(idle_containers(sandboxes)))
    finally:
        watcher.cancel()

    assert max(counts) <= CAP, counts
    assert most_ready <= CAP
    assert counts[-1] == CAP  # the pool is used: the default shape and the latest hot shape wait


async def test_a_shape_used_once_gets_no_warm_containers_and_its_second_use_warms_it(
    sandboxes: DockerSandboxes,
) -> None:
    assert sandboxes.pool is not None
    first = await sandboxes.run(job(232), NullOutput(), asyncio.Event())  # type: ignore[arg-type]
    await settled(sandboxes)
    once = {shape.memory_mb: len(queue) for shape, queue in sandboxes.pool.ready.items()}

    second = await sandboxes.run(job(232), NullOutput(), asyncio.Event())  # type: ignore[arg-type]
    await settled(sandboxes)
    twice = {shape.memory_mb: len(queue) for shape, queue in sandboxes.pool.ready.items()}

    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert 232 not in once
    assert twice.get(232) == 1  # the default shape keeps two of the cap of three
