"""Fault injection: runners killed or stopped mid-run, nats-server restarted mid-burst, the store
killed mid-burst. Whatever was accepted ends succeeded, once; nothing is left behind."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from taskmesh.processes import NatsServer
from tests.support import Api, Stack, TargetServer

SLEEPY = "import time\ndef nap(i):\n    time.sleep(0.5)\n    return i"


def sleepy(i: int) -> dict[str, object]:
    return {"name": f"nap {i}", "task_type": "immediate", "function_code": SLEEPY, "function_name": "nap", "args": [i]}


async def submit_all(api: Api, bodies: list[dict[str, object]], concurrency: int = 20) -> list[dict[str, object]]:
    slots = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, object]) -> dict[str, object]:
        async with slots:
            return await api.submit(body)

    return list(await asyncio.gather(*(one(b) for b in bodies)))


def only_one_success(run: dict[str, object]) -> bool:
    return sum(1 for a in run["attempts"] if a["status"] == "succeeded") == 1  # type: ignore[union-attr]


def containers_of(stack: Stack) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=org.taskmesh.instance={stack.instance}"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {"TASKMESH_CODE_SLOTS": "4", "TASKMESH_POOL_SIZE": "0"}


async def test_killing_a_runner_mid_run_loses_nothing_and_leaves_no_container(
    stack: Stack, api: Api, docker_engine: None
) -> None:
    stack.start_service("runner", key="runner-2")
    stack.wait_ready(runners=2)
    created = await submit_all(api, [sleepy(i) for i in range(200)])
    # wait until the victim holds runs, then kill it without a chance to clean up
    deadline = time.monotonic() + 60
    while True:
        health = httpx.get(f"{stack.base_url}/api/health").json()
        busy = {r["instance_id"]: r["slots"]["code"]["busy"] for r in health["runners"]}
        if len(busy) == 2 and all(busy.values()):
            break
        assert time.monotonic() < deadline, health
        await asyncio.sleep(0.2)
    stack.services["runner"].kill()

    tasks = [await api.wait_final(c["id"], timeout=300) for c in created]
    assert Counter(t["status"] for t in tasks) == Counter({"succeeded": 200})
    assert sorted(t["result"] for t in tasks) == list(range(200))
    redelivered = 0
    for task in tasks:
        runs = await api.runs(task["id"])
        assert len(runs) == 1 and only_one_success(runs[0]), runs
        redelivered += runs[0]["attempt"] > 1
    assert redelivered >= 1  # the killed runner's runs were finished by the other one
    # its orphaned containers are reaped by the surviving runner (by label, once the victim's ping fails)
    deadline = time.monotonic() + 60
    while containers_of(stack):
        assert time.monotonic() < deadline, containers_of(stack)
        await asyncio.sleep(0.5)


async def test_a_stopped_runner_finishes_or_hands_back_its_runs(stack: Stack, api: Api, target: TargetServer) -> None:
    stack.services["runner"].stop()
    stack.start_service("runner", key="runner", TASKMESH_SHUTDOWN_GRACE="1")
    stack.start_service("runner", key="runner-2")
    stack.wait_ready(runners=2)
    created = await submit_all(
        api,
        [
            {
                "name": f"slow {i}",
                "task_type": "immediate",
                "timeout": 30,
                "api_url": f"{target.url}/slow?seconds={0.2 if i % 2 else 3}",
            }
            for i in range(20)
        ],
    )
    await asyncio.sleep(0.8)
    victim = stack.services["runner"]
    victim.stop()  # SIGTERM: short runs finish within the 1 s grace, long ones are handed back
    assert victim.process.returncode == 0
    log = victim.log()
    assert "handed_back=" in log
    tasks = [await api.wait_final(c["id"], timeout=60) for c in created]
    assert all(t["status"] == "succeeded" for t in tasks), [t["status"] for t in tasks]
    for task in tasks:
        runs = await api.runs(task["id"])
        assert len(runs) == 1 and only_one_success(runs[0])


async def test_restarting_nats_mid_burst_keeps_every_accepted_task(tmp_path: Path, target: TargetServer) -> None:
    stack = Stack(tmp_path).start()
    api = Api(stack.base_url)
    accepted: list[str] = []
    refused = 0
    try:

        async def submit(i: int) -> None:
            nonlocal refused
            try:
                response = await api.client.post(
                    "/api/tasks",
                    timeout=30,
                    json={"name": f"burst {i}", "task_type": "immediate", "api_url": f"{target.url}/hello"},
                )
            except httpx.HTTPError:
                raise AssertionError("the gateway must answer (503), not hang or drop the connection") from None
            if response.status_code == 201:
                accepted.append(response.json()["id"])
            else:
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] in ("unavailable", "timeout")
                refused += 1

        async def burst() -> None:
            slots = asyncio.Semaphore(16)

            async def limited(i: int) -> None:
                async with slots:
                    await submit(i)

            await asyncio.gather(*(limited(i) for i in range(1000)))

        answered_at_bounce = 0

        async def bounce() -> None:
            nonlocal answered_at_bounce
            while len(accepted) < 300:
                await asyncio.sleep(0.05)
            assert stack.nats is not None
            answered_at_bounce = len(accepted) + refused
            stack.nats.stop()
            await asyncio.sleep(1.0)
            stack.nats = NatsServer(
                stack.nats.data_dir,
                port=stack.nats.port,
                monitor_port=stack.nats.monitor_port,
                log_path=stack.nats.log_path,
            ).start()

        await asyncio.gather(burst(), bounce())
        assert len(accepted) + refused == 1000
        assert answered_at_bounce < 900  # NATS went away with most of the burst still to come
        # the gateway repeats a submission through the outage (same task id), so few if any are refused
        assert len(accepted) > 900, (len(accepted), refused)
        for task_id in accepted:
            task = await api.wait_final(task_id, timeout=180)
            assert task["status"] == "succeeded", task
    finally:
        await api.close()
        stack.stop()


async def test_killing_the_store_mid_burst_keeps_states_and_counts_right(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    accepted: list[str] = []
    unknown = 0  # submissions the store may have taken before it died: the gateway says so

    async def submit(i: int) -> None:
        nonlocal unknown
        response = await api.client.post(
            "/api/tasks",
            timeout=30,
            json={"name": f"store burst {i}", "task_type": "immediate", "api_url": f"{target.url}/hello"},
        )
        if response.status_code == 201:
            accepted.append(response.json()["id"])
            return
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        if error["code"] == "timeout":  # the store may have taken it before it died: the gateway says so
            assert "Idempotency-Key" in error["message"], error
            unknown += 1

    first = [asyncio.ensure_future(submit(i)) for i in range(150)]
    while len(accepted) < 100:
        await asyncio.sleep(0.02)
    stack.services["store"].kill()
    await asyncio.gather(*first)
    stack.start_service("store", key="store")
    stack.wait_ready()
    await asyncio.gather(*(submit(i) for i in range(150, 250)))

    tasks = [await api.wait_final(task_id, timeout=120) for task_id in accepted]
    assert all(t["status"] == "succeeded" for t in tasks)
    for task in tasks:
        assert task["run_count"] == 1
    # every task that exists ran once and succeeded; the only extra ones are submissions whose
    # outcome the gateway called unknown (no responders, for one, means it was never taken)
    deadline = time.monotonic() + 60
    while True:
        stats = await api.get("/api/stats")
        total = stats["tasks_total"]
        if stats["tasks_by_status"] == stats["runs_by_status"] == {"succeeded": total}:
            break
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.2)
    assert len(accepted) <= total <= len(accepted) + unknown, (len(accepted), unknown, total)
    assert target.hits["/hello"] >= len(accepted)


async def test_a_store_restarted_mid_burst_is_ridden_out_and_each_submission_makes_one_task(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    answers: dict[int, tuple[int, dict[str, object]]] = {}

    async def submit(i: int) -> None:
        response = await api.client.post(
            "/api/tasks",
            timeout=60,
            json={"name": f"restart burst {i}", "task_type": "immediate", "api_url": f"{target.url}/hello"},
        )
        answers[i] = (response.status_code, response.json())

    burst = [asyncio.ensure_future(submit(i)) for i in range(250)]
    deadline = time.monotonic() + 60
    while len(answers) < 80:
        assert time.monotonic() < deadline, answers
        await asyncio.sleep(0.02)
    stack.services["store"].kill()
    answered_at_kill = len(answers)
    # a new store at once, as a supervisor would start one; the gateway repeats submissions meanwhile
    stack.start_service("store", key="store")
    await asyncio.gather(*burst)

    assert answered_at_kill < 200  # the kill landed mid-burst
    statuses = Counter(status for status, _ in answers.values())
    assert statuses == {201: 250}, [body for status, body in answers.values() if status != 201][:3]
    ids = {str(body["id"]) for _, body in answers.values()}
    assert len(ids) == 250
    tasks = [await api.wait_final(task_id, timeout=120) for task_id in ids]
    assert all(t["status"] == "succeeded" and t["run_count"] == 1 for t in tasks), [
        t for t in tasks if t["status"] != "succeeded" or t["run_count"] != 1
    ][:3]
    # no task the clients were not told of, and the counters agree
    deadline = time.monotonic() + 60
    while True:
        stats = await api.get("/api/stats")
        if stats["tasks_total"] == 250 and stats["tasks_by_status"] == stats["runs_by_status"] == {"succeeded": 250}:
            break
        assert time.monotonic() < deadline, stats
        await asyncio.sleep(0.2)
    assert target.hits["/hello"] >= 250
