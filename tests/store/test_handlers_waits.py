"""The store's request handlers: a wait holds no request slot, and waits past the cap are refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from proto import api, codec, subjects
from services.store.handlers import ApiHandlers

SLOTS, WAITERS = 1, 3


class BlockingQueries:
    """Waits last until ``release`` is set; every other query answers at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def task(self, task_id: str) -> Any:
        return {"id": task_id}

    async def wait(self, request: api.WaitTaskRequest) -> Any:
        self.waiting += 1
        await self.release.wait()
        return {"done": True, "task": {"id": request.id}}


@pytest.fixture
async def queries(nc: Client) -> AsyncIterator[BlockingQueries]:
    blocking = BlockingQueries()
    handlers = ApiHandlers(nc, object(), blocking, max_concurrent=SLOTS, max_waiters=WAITERS)  # type: ignore[arg-type]
    await handlers.start()
    try:
        yield blocking
    finally:
        blocking.release.set()
        await handlers.stop(grace=5)


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_waits_beyond_the_request_slots_leave_other_requests_answered(
    nc: Client, queries: BlockingQueries
) -> None:
    # Given more waits in progress than the store has request slots
    payload = codec.encode(api.WaitTaskRequest(id="t1", timeout_seconds=60))
    waits = [asyncio.create_task(nc.request(subjects.WAIT_TASK, payload, timeout=30)) for _ in range(WAITERS)]
    await until(lambda: queries.waiting == WAITERS)
    # When another request comes, it is answered at once
    reply = await nc.request(subjects.GET_TASK, codec.encode(api.TaskRef(id="t1")), timeout=2)
    assert codec.decode(dict, reply.data) == {"id": "t1"}
    # And one more wait is refused, naming why
    refused = await nc.request(subjects.WAIT_TASK, payload, timeout=2)
    assert refused.headers and refused.headers[subjects.HEADER_ERROR] == "too_many_waiters", refused.data
    assert "try again" in codec.decode(dict, refused.data)["error"]["message"]
    # Then the waits end when their outcome comes, and their places are free again
    queries.release.set()
    assert [codec.decode(dict, r.data)["done"] for r in await asyncio.gather(*waits)] == [True] * WAITERS
    again = await nc.request(subjects.WAIT_TASK, payload, timeout=2)
    assert not (again.headers and subjects.HEADER_ERROR in again.headers), again.data
