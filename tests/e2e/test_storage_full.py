"""A JetStream at its storage limit refuses new tasks with a clear 507, and nothing else stops."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest

from proto import subjects
from services.store.storage import full_reason
from tests.support import Api, Stack, TargetServer


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {"TASKMESH_STORAGE_LIMIT_BYTES": "1"}  # whatever the streams hold is more


async def test_new_tasks_are_refused_with_507_while_reads_go_on(stack: Stack, api: Api, target: TargetServer) -> None:
    body = {"name": "too much", "task_type": "immediate", "api_url": f"{target.url}/hello"}
    deadline = time.monotonic() + 15  # the store reads JetStream's usage every few seconds
    while True:
        response = await api.client.post("/api/tasks", json=body)
        if response.status_code == 507:
            break
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.2)
    error = response.json()["error"]
    assert error["code"] == "insufficient_storage" and "JetStream holds" in error["message"], error
    assert (await api.get("/api/tasks"))["tasks"] is not None  # reads are answered

    # over NATS: an error reply with the code, as the HTTP one
    assert stack.nats is not None
    nc = await nats.connect(stack.nats.url)
    try:
        reply = await nc.request(subjects.SUBMIT_TASK, json.dumps(body).encode(), timeout=5)
    finally:
        await nc.close()
    assert reply.headers and reply.headers.get(subjects.HEADER_ERROR) == "insufficient_storage", reply.data


def test_submissions_stop_at_the_limit_and_never_without_one() -> None:
    assert full_reason(99, 100) is None
    assert full_reason(100, 100) is not None
    assert full_reason(10**12, 0) is None
