"""A submission made while the gateway answers 503 (NATS down) or restarts is retried with one idempotency key: one task."""

from __future__ import annotations

import asyncio
import time

import httpx

import taskmesh
from taskmesh._http import UNANSWERED_RETRY_SECONDS
from taskmesh.processes import NatsServer
from tests.support import Stack, TargetServer


def restart_nats(stack: Stack) -> None:
    """Start NATS again on the same port and store (the services reconnect by themselves)."""
    assert stack.nats is not None
    stack.nats = NatsServer(
        stack.nats.data_dir, port=stack.nats.port, monitor_port=stack.nats.monitor_port, log_path=stack.nats.log_path
    ).start()


async def test_a_submission_during_a_nats_outage_is_retried_and_creates_exactly_one_task(
    stack: Stack, target: TargetServer
) -> None:
    assert stack.nats is not None
    stack.nats.stop()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        refused = await http.post(
            "/api/tasks", json={"name": "probe", "task_type": "immediate", "api_url": f"{target.url}/hello"}
        )
    assert refused.status_code == 503, refused.text  # the gateway is up and says so

    tm = taskmesh.Client(stack.base_url, submit_retry_seconds=90)
    submission = asyncio.create_task(asyncio.to_thread(tm.http, f"{target.url}/hello", name="through-outage"))
    outage_ends = time.monotonic() + 2.0
    while time.monotonic() < outage_ends:  # the client keeps retrying while NATS is away
        assert not submission.done(), submission
        await asyncio.sleep(0.1)
    restart_nats(stack)

    run = await asyncio.wait_for(submission, 90)
    result = await asyncio.to_thread(run.result, 60)
    assert result["status_code"] == 200
    listed = await asyncio.to_thread(tm.tasks, name="through-outage", limit=500)
    assert [task.id for task in listed] == [run.id]
    assert target.hits["/hello"] == 1
    tm.close()


async def test_the_async_client_retries_a_submission_through_a_nats_outage_too(
    stack: Stack, target: TargetServer
) -> None:
    assert stack.nats is not None
    stack.nats.stop()
    async with taskmesh.AsyncClient(stack.base_url, submit_retry_seconds=90) as atm:
        submission = asyncio.create_task(atm.http(f"{target.url}/hello", name="async-through-outage"))
        await asyncio.sleep(0)  # the first attempt is on its way
        outage_ends = time.monotonic() + 2.0
        while time.monotonic() < outage_ends:
            assert not submission.done(), submission
            await asyncio.sleep(0.1)
        await asyncio.to_thread(restart_nats, stack)
        run = await asyncio.wait_for(submission, 90)
        assert (await run.result(timeout=60))["status_code"] == 200
        assert [task.id for task in await atm.tasks(name="async-through-outage", limit=500)] == [run.id]


async def test_a_submission_while_the_gateway_restarts_waits_for_it_and_creates_one_task(
    stack: Stack, target: TargetServer
) -> None:
    tm = taskmesh.Client(stack.base_url, submit_retry_seconds=90)
    assert tm.tasks(limit=1) is not None  # this client has had an answer from the gateway
    stack.services["gateway"].stop()

    submission = asyncio.create_task(asyncio.to_thread(tm.http, f"{target.url}/hello", name="through-restart"))
    refused_until = time.monotonic() + UNANSWERED_RETRY_SECONDS + 1.0
    while time.monotonic() < refused_until:  # refused for longer than a never-answered gateway would get
        assert not submission.done(), submission
        await asyncio.sleep(0.1)
    stack.start_service("gateway")

    run = await asyncio.wait_for(submission, 90)
    assert (await asyncio.to_thread(run.result, 60))["status_code"] == 200
    assert [task.id for task in await asyncio.to_thread(tm.tasks, name="through-restart", limit=500)] == [run.id]
    assert target.hits["/hello"] == 1
    tm.close()
