"""Waits and follows hold no store request slot and are capped (429); ids from URLs are checked (400).

A stack without a runner (nothing needs to run) whose store has only 4 request slots and whose
gateway and store admit 8 waits and 2 log follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import nats
import pytest

from proto import api, codec, subjects
from services.gateway.routes import ENDPOINTS
from taskmesh.processes import wait_http
from tests.support import Stack

SLOTS, WAITERS, FOLLOWERS, STORE_WAITERS = 4, 8, 2, 10
UNKNOWN_ID = "0190f0aa-0000-7000-8000-00000000dead"
HOSTILE_IDS = ["a b", "a.b", "..", "a.>", ">", "*", "a*", "x" * 300, "tab\there", "ü", "a%b", "a/b"]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(
        tmp_path,
        env_extra={
            "TASKMESH_MAX_CONCURRENT_REQUESTS": str(SLOTS),
            "TASKMESH_MAX_WAITERS": str(WAITERS),
            "TASKMESH_MAX_FOLLOWERS": str(FOLLOWERS),
            "TASKMESH_STORE_MAX_WAITERS": str(STORE_WAITERS),
        },
    )
    try:
        running.start(names=("store", "scheduler", "gateway"), wait=False)
        wait_http(f"{running.base_url}/api/health", ok_statuses=(200,), timeout=30)
        yield running
    finally:
        running.stop()


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=90) as http:
        yield http


async def pending_task(client: httpx.AsyncClient) -> str:
    """A task that stays pending for ten minutes (and no runner exists anyway)."""
    response = await client.post(
        "/api/tasks",
        json={"name": "later", "task_type": "delayed", "delay_seconds": 600, "api_url": "http://127.0.0.1:9/never"},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def until_refused(client: httpx.AsyncClient, path: str, timeout: float = 15.0, **params: str) -> httpx.Response:
    """Ask until the gateway answers 429 (the open requests have all been admitted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.get(path, params=params)
        if response.status_code == 429:
            return response
        assert response.status_code < 500, response.text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} was never refused with 429")


async def test_waits_beyond_the_store_slots_leave_other_calls_answered_and_past_the_cap_get_429(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    # Given as many waits open as the cap allows, twice the store's request slots
    task_id = await pending_task(client)
    waits = [
        asyncio.create_task(client.get(f"/api/tasks/{task_id}/wait", params={"wait": "60"})) for _ in range(WAITERS)
    ]
    try:
        # When one more wait is asked for, it is refused with a JSON 429
        refused = await until_refused(client, f"/api/tasks/{task_id}/wait", wait="0")
        assert refused.json()["error"]["code"] == "too_many_waiters", refused.text
        assert refused.headers["Retry-After"] == "1"
        # Then every other call is still answered promptly: no wait holds a store slot
        for _ in range(2 * SLOTS):
            started = time.monotonic()
            listed = await client.get("/api/tasks", timeout=3)
            assert listed.status_code == 200, listed.text
            assert time.monotonic() - started < 2.0
        assert (await client.get(f"/api/tasks/{task_id}", timeout=3)).status_code == 200
        # And the store refuses a wait past its own cap too (another gateway, a NATS client)
        assert await direct_waits(stack, task_id, STORE_WAITERS - WAITERS + 1) == ["done=False"] * (
            STORE_WAITERS - WAITERS
        ) + ["too_many_waiters"]
        assert not any(wait.done() for wait in waits)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    # Once their clients hang up, the gateway's places are free again
    await until_metric(client, 'taskmesh_gateway_open{kind="waits"} 0')


async def direct_waits(stack: Stack, task_id: str, count: int) -> list[str]:
    """``count`` one-second waits sent straight to the store over NATS: how each ended."""
    nc = await nats.connect(stack.nats.url)  # type: ignore[union-attr]
    payload = codec.encode(api.WaitTaskRequest(id=task_id, timeout_seconds=1))
    try:
        replies = await asyncio.gather(*(nc.request(subjects.WAIT_TASK, payload, timeout=5) for _ in range(count)))
    finally:
        await nc.close()
    return sorted(
        reply.headers[subjects.HEADER_ERROR]
        if reply.headers and subjects.HEADER_ERROR in reply.headers
        else f"done={codec.decode(api.WaitReply, reply.data).done}"
        for reply in replies
    )


async def until_metric(client: httpx.AsyncClient, line: str, timeout: float = 15.0) -> None:
    """Wait until /metrics shows ``line``."""
    deadline = time.monotonic() + timeout
    while line not in (text := (await client.get("/metrics")).text).splitlines():
        assert time.monotonic() < deadline, f"{line!r} not in /metrics:\n{text}"
        await asyncio.sleep(0.1)


async def test_log_follows_past_the_cap_get_429(stack: Stack, client: httpx.AsyncClient) -> None:
    task_id = await pending_task(client)
    async with open_follows(client, f"/api/tasks/{task_id}/logs", FOLLOWERS):
        refused = await client.get(f"/api/tasks/{task_id}/logs", params={"follow": "true"}, timeout=10)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_waiters"
        assert (await client.get("/api/tasks", timeout=3)).status_code == 200
    await until_metric(client, 'taskmesh_gateway_open{kind="follows"} 0')  # the follows' clients hung up


@contextlib.asynccontextmanager
async def open_follows(client: httpx.AsyncClient, path: str, count: int) -> AsyncIterator[None]:
    """``count`` follows of ``path`` held open (each answered 200) for the block."""
    async with contextlib.AsyncExitStack() as streams:
        for _ in range(count):
            response = await asyncio.wait_for(
                streams.enter_async_context(client.stream("GET", path, params={"follow": "true"})), 10
            )
            assert response.status_code == 200, await response.aread()
        yield


def paths_with(bad: str, slot: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Every endpoint with ``slot`` in its path, ``bad`` there (other ids well-formed), with and without follow."""
    encoded = quote(bad, safe="").replace(".", "%2E")
    for endpoint in ENDPOINTS:
        if "{" + slot + "}" not in endpoint.path:
            continue
        path = endpoint.path.replace("{task_id}", encoded if slot == "task_id" else UNKNOWN_ID)
        path = path.replace("{run_id}", encoded if slot == "run_id" else UNKNOWN_ID)
        yield endpoint.method, path, {}
        if endpoint.path.endswith("/logs"):
            yield endpoint.method, path, {"follow": "true"}


async def test_every_endpoint_answers_a_malformed_id_with_400_naming_the_field(client: httpx.AsyncClient) -> None:
    for slot, field in (("task_id", "id"), ("run_id", "run_id")):
        for bad in HOSTILE_IDS:
            for method, path, params in paths_with(bad, slot):
                response = await client.request(method, path, params=params, timeout=10)
                assert response.status_code == 400, (method, path, params, response.status_code, response.text)
                error = response.json()["error"]
                assert (error["code"], error["field"]) == ("invalid_field", field), (method, path, error)


async def test_a_malformed_run_id_in_the_query_is_400_also_when_following(client: httpx.AsyncClient) -> None:
    for bad in HOSTILE_IDS:
        for params in ({"run_id": bad}, {"run_id": bad, "follow": "true"}):
            response = await client.get(f"/api/tasks/{UNKNOWN_ID}/logs", params=params, timeout=10)
            assert response.status_code == 400, (params, response.text)
            assert response.json()["error"]["field"] == "run_id"


async def test_every_endpoint_answers_a_well_formed_unknown_id_with_404(client: httpx.AsyncClient) -> None:
    for endpoint in ENDPOINTS:
        if "{task_id}" not in endpoint.path:
            continue
        path = endpoint.path.replace("{task_id}", UNKNOWN_ID).replace("{run_id}", UNKNOWN_ID)
        for params in ({"follow": "true"}, {}) if path.endswith("/logs") else ({},):
            response = await client.request(endpoint.method, path, params=params, timeout=10)
            assert response.status_code == 404, (endpoint.method, path, params, response.text)
            assert response.json()["error"]["code"] == "not_found"
