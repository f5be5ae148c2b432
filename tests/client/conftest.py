"""One stack (with Docker sandboxes and the test wheelhouse) per test module, and clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

import taskmesh
from tests.support import Stack, WheelServer


@pytest.fixture(scope="module")
def sandbox_stack(
    tmp_path_factory: pytest.TempPathFactory, wheel_server: WheelServer, docker_engine: None
) -> Iterator[Stack]:
    """A stack whose runner installs requirements from the local wheelhouse only."""
    running = Stack(
        tmp_path_factory.mktemp("client"),
        env_extra={"TASKMESH_FIND_LINKS": wheel_server.url, "TASKMESH_POOL_SIZE": "2"},
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
def tm(sandbox_stack: Stack) -> Iterator[taskmesh.Client]:
    with taskmesh.Client(sandbox_stack.base_url) as client:
        yield client


@pytest.fixture
async def atm(sandbox_stack: Stack) -> AsyncIterator[taskmesh.AsyncClient]:
    async with taskmesh.AsyncClient(sandbox_stack.base_url) as client:
        yield client
