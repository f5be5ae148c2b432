"""Requirement sets against their limits, end to end: a set over its own size limit fails clearly
and leaves nothing behind, and the budget also bounds what a failed build left in uv's cache."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Api, Stack, WheelServer

SET_MAX_BYTES = 1_000_000
CACHE_MAX_BYTES = 3_000_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, wheel_server: WheelServer, docker_engine: None) -> Iterator[Stack]:
    running = Stack(
        tmp_path_factory.mktemp("budget"),
        env_extra={
            "TASKMESH_FIND_LINKS": wheel_server.url,
            "TASKMESH_POOL_SIZE": "0",
            "TASKMESH_DEPS_SET_MAX_BYTES": str(SET_MAX_BYTES),
            "TASKMESH_DEPS_CACHE_MAX_BYTES": str(CACHE_MAX_BYTES),
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


def size_of(root: Path) -> int:
    return sum(
        os.lstat(os.path.join(directory, name)).st_size
        for directory, _, files in os.walk(root)
        for name in files
        if os.path.exists(os.path.join(directory, name))
    )


def code(name: str, source: str, function: str, requirements: list[str]) -> dict[str, object]:
    return {
        "name": name,
        "task_type": "immediate",
        "function_code": source,
        "function_name": function,
        "requirements": requirements,
    }


async def test_a_set_over_its_size_limit_fails_clearly_is_removed_and_its_cache_is_cleared(
    api: Api, stack: Stack
) -> None:
    source = "import numpy\ndef total():\n    return int(numpy.arange(10).sum())"
    created = await api.submit(code("too big", source, "total", ["numpy==2.2.6"]))
    task = await api.wait_final(created["id"], timeout=180)
    assert task["status"] == "failed" and task["error"]["type"] == "dependency_install_failed", task
    message = task["error"]["message"]
    assert "more than the 1 MB a requirement set may (TASKMESH_DEPS_SET_MAX_BYTES)" in message, message

    deps = stack.root / "deps"
    leftovers = [p.name for p in deps.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert leftovers == []  # neither the set nor its partial build
    deadline = time.monotonic() + 30
    while size_of(deps) > CACHE_MAX_BYTES:  # what the failed build put in uv's cache goes too
        assert time.monotonic() < deadline, f"{size_of(deps)} bytes in {deps}"
        await asyncio.sleep(0.2)

    small = await api.submit(code("small", "import six\ndef v():\n    return six.__version__", "v", ["six==1.17.0"]))
    assert (await api.wait_final(small["id"], timeout=180))["result"] == "1.17.0"
