"""Fixtures: a real nats-server per test, a whole stack of real service processes, a local target.

Chain: ``tmp_path → nats_server → nc → js`` for service-level tests, ``stack → api`` for
end-to-end tests. Nothing here is mocked; Docker is required for sandbox tests (they fail, never
skip, without it).
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from taskmesh.processes import NatsServer
from tests import wheelhouse
from tests.support import Api, Stack, TargetServer, WheelServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
def stack_env() -> dict[str, str]:
    """Extra environment for the stack's services (tests override this fixture to change it)."""
    return {}


@pytest.fixture
def stack(tmp_path: Path, stack_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A fresh stack: nats-server, store, scheduler, runner, gateway."""
    running = Stack(tmp_path, env_extra=stack_env)
    try:
        running.start()
        yield running
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(running.logs())
        running.stop()


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    client = Api(stack.base_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def target() -> AsyncIterator[TargetServer]:
    server = await TargetServer().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Fail (never skip) when no Docker engine answers: sandbox tests need a real one."""
    try:
        subprocess.run(["docker", "version"], check=True, capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(
            f"a Docker engine is required for sandbox tests and none answers ({exc}); "
            "start it (see README) and run again",
            pytrace=False,
        )


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


_MARK_BY_FIXTURE = {"docker_engine": "docker", "wheel_server": "docker", "stack": "slow", "api": "slow"}
"""What a fixture costs: a test using one gets the marker (``make test-fast`` deselects them)."""
_MARK_BY_FOLDER = {
    "compose": "compose",
    "e2e": "slow",
    "browser": "browser",
    "cli": "slow",
    "client": "slow",
    "deploy": "slow",
    "cluster": "slow",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by what they start, so the unit loop (``make test-fast``) can leave them out."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        marks = {mark for fixture, mark in _MARK_BY_FIXTURE.items() if fixture in names}
        folder = Path(str(item.path)).parent.name
        if folder in _MARK_BY_FOLDER:
            marks.add(_MARK_BY_FOLDER[folder])
        for mark in sorted(marks):
            item.add_marker(mark)


@pytest.fixture(scope="session")
def wheel_server() -> Iterator[WheelServer]:
    """The test wheelhouse (made by ``python -m tests.wheelhouse``) served on 127.0.0.1."""
    directory = wheelhouse.target_dir()
    if not any(directory.glob("*.whl")):
        pytest.fail(f"no wheels in {directory}: run `python -m tests.wheelhouse` (make test does)", pytrace=False)
    server = WheelServer(directory).start()
    try:
        yield server
    finally:
        server.stop()
