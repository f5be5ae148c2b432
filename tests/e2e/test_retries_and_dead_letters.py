"""Retries with backoff, dead letters for runs that keep losing their runner, and a store that
comes back after kill -9 with the same answers."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest
from aiohttp import web

from taskmesh.processes import free_port
from tests.support import Api, Stack, TargetServer


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_a_failing_api_task_retries_with_backoff_then_fails(api: Api, target: TargetServer) -> None:
    created = await api.submit(
        {
            "name": "always 500",
            "task_type": "immediate",
            "api_url": f"{target.url}/status/500",
            "max_retries": 2,
            "retry_delay_seconds": 0.4,
            "retry_backoff": 2,
        }
    )
    task = await api.wait_final(created["id"], timeout=30)
    assert task["status"] == "failed" and task["error"]["type"] == "http_status"
    run = (await api.runs(task["id"]))[0]
    assert [a["attempt"] for a in run["attempts"]] == [1, 2, 3]
    assert all(a["status"] == "failed" for a in run["attempts"])
    assert target.hits["/status"] == 3
    gaps = [
        (ts(b["started_at"]) - ts(a["finished_at"])).total_seconds()
        for a, b in zip(run["attempts"], run["attempts"][1:], strict=False)
    ]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4  # 0.4 s then 0.8 s, with jitter in the upper half


async def test_a_flaky_endpoint_succeeds_on_a_retry(api: Api) -> None:
    calls = 0

    async def flaky(_: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({"call": calls}, status=503 if calls < 3 else 200)

    app = web.Application()
    app.router.add_get("/flaky", flaky)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        created = await api.submit(
            {
                "name": "flaky",
                "task_type": "immediate",
                "api_url": f"http://127.0.0.1:{port}/flaky",
                "max_retries": 5,
                "retry_delay_seconds": 0.1,
            }
        )
        task = await api.wait_final(created["id"], timeout=30)
        assert task["status"] == "succeeded" and task["result"]["body"] == {"call": 3}
        assert [a["status"] for a in (await api.runs(task["id"]))[0]["attempts"]] == ["failed", "failed", "succeeded"]
    finally:
        await runner.cleanup()


async def test_while_waiting_for_a_retry_the_task_says_so(api: Api, target: TargetServer) -> None:
    created = await api.submit(
        {
            "name": "retry later",
            "task_type": "immediate",
            "api_url": f"{target.url}/status/502",
            "max_retries": 1,
            "retry_delay_seconds": 3,
        }
    )
    task = await api.wait_for(created["id"], lambda t: t["status"] == "retrying", timeout=10)
    assert task["next_retry_at"] is not None and task["error"]["type"] == "http_status"
    cancelled = (await api.client.post(f"/api/tasks/{created['id']}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    await asyncio.sleep(3.5)
    assert target.hits["/status"] == 1  # the cancelled retry never ran


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {"TASKMESH_POISON_DELIVERIES": "1"}


async def test_a_run_whose_runner_keeps_dying_goes_to_the_dead_letters(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    created = await api.submit(
        {"name": "poison", "task_type": "immediate", "api_url": f"{target.url}/slow?seconds=30", "timeout": 60}
    )
    await api.wait_for(created["id"], lambda t: t["status"] == "running", timeout=10)
    stack.services["runner"].kill()
    stack.start_service("runner", key="runner")
    task = await api.wait_final(created["id"], timeout=60)  # redelivered after the 10 s ack wait
    assert task["status"] == "failed" and task["error"]["type"] == "poison"
    assert "delivered 2 times" in task["error"]["message"]
    letters = (await api.get("/api/dead-letters"))["dead_letters"]
    assert [(d["task_id"], d["deliveries"]) for d in letters] == [(created["id"], 2)]
    assert letters[0]["due"]["spec"]["api_url"].endswith("/slow?seconds=30")
    assert (await api.get("/api/stats"))["dead_letters"] == 1


async def test_a_store_killed_and_restarted_gives_the_same_answers(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    for i in range(5):
        await api.wait_final(
            (await api.submit({"name": f"keep {i}", "task_type": "immediate", "api_url": f"{target.url}/hello"}))["id"]
        )
    schedule = await api.submit(
        {
            "name": "keep schedule",
            "task_type": "scheduled",
            "cron_expression": "0 0 1 1 *",
            "api_url": f"{target.url}/hello",
        },
        path="/api/scheduled-tasks",
    )
    # The store knows next_run_at at acceptance; the scheduler's own view of the schedule comes
    # after it and moves updated_at. Answers compared before it has come would differ for good.
    await api.wait_for(schedule["id"], lambda t: t["updated_at"] != t["created_at"])
    before = {path: await api.get(path) for path in ("/api/tasks", "/api/scheduled-tasks")}
    stats_before = await api.get("/api/stats")
    stack.services["store"].kill()
    stack.start_service("store", key="store")
    stack.wait_ready()
    # What the killed store had applied but not yet written comes back to the new one when the
    # consumers' ack wait (10 s) has passed: the answers are the same by then, never different.
    keys = ("tasks_total", "tasks_by_status", "runs_total", "runs_by_status", "success_rate")
    deadline = time.monotonic() + 30
    while True:
        after = {path: await api.get(path) for path in ("/api/tasks", "/api/scheduled-tasks")}
        stats_after = await api.get("/api/stats")
        if after == before and all(stats_after[key] == stats_before[key] for key in keys):
            break
        assert time.monotonic() < deadline, (after, before, stats_after, stats_before)
        await asyncio.sleep(0.5)


async def test_finished_tasks_are_deleted_after_their_retention(tmp_path, target: TargetServer) -> None:
    stack = Stack(
        tmp_path, env_extra={"TASKMESH_TASK_RETENTION": "1", "TASKMESH_RETENTION_SWEEP_INTERVAL": "0.3"}
    ).start()
    api = Api(stack.base_url)
    try:
        done = await api.submit({"name": "short lived", "task_type": "immediate", "api_url": f"{target.url}/hello"})
        await api.wait_final(done["id"])
        schedule = await api.submit(
            {
                "name": "kept",
                "task_type": "scheduled",
                "cron_expression": "0 0 1 1 *",
                "api_url": f"{target.url}/hello",
            },
            path="/api/scheduled-tasks",
        )
        deadline = asyncio.get_running_loop().time() + 30
        while (last := await api.client.get(f"/api/tasks/{done['id']}")).status_code != 404:
            assert asyncio.get_running_loop().time() < deadline, (
                f"the finished task is still there: {last.status_code} {last.text}\n{stack.logs()}"
            )
            await asyncio.sleep(0.2)
        assert (await api.client.get(f"/api/tasks/{schedule['id']}")).status_code == 200
    finally:
        await api.close()
        stack.stop()
