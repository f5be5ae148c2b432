"""Faults on a 3-node cluster under load: a node killed, the leading store killed, a scheduler
killed, a rolling restart.

Every submission gets an answer (201 or 503, never a hang); every 201 ends ``succeeded`` and hit
the target once; no schedule fire is doubled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx

from tests.cluster.nodes import NatsCluster
from tests.cluster.stack import ClusterStack
from tests.support import FINAL, Api, TargetServer

CLIENT_TIMEOUT_SECONDS = 40.0
"""Longer than the gateway's wait on the store (20 s here): a client timeout would be a hang."""


async def _submit(
    client: httpx.AsyncClient, target: TargetServer, label: str, i: int, answered: dict[int, Any], retries: int = 0
) -> None:
    """Submit API task ``i``; ``answered[i]`` becomes (status code or the error's name, task id).

    With ``retries``, a 503 is repeated with the same Idempotency-Key, as a careful client does.
    """
    headers = {"Idempotency-Key": f"{label}-{i}"} if retries else {}
    for attempt in range(retries + 1):
        try:
            response = await client.post(
                "/api/tasks",
                headers=headers,
                json={
                    "name": f"{label} {i}",
                    "task_type": "immediate",
                    "api_url": f"{target.url}/echo",
                    "method": "POST",
                    "data": {label: i},
                },
            )
            answered[i] = (response.status_code, response.json().get("id"))
        except httpx.HTTPError as exc:
            answered[i] = (type(exc).__name__, None)
        if answered[i][0] != 503 or attempt == retries:
            return
        REPEATED[label] += 1
        await asyncio.sleep(0.5)


REPEATED: Counter[str] = Counter()
"""503s repeated by the careful client, by test label (printed)."""


async def _submit_all(
    stack: ClusterStack, target: TargetServer, label: str, count: int, concurrency: int, answered: dict[int, Any]
) -> None:
    """Submit ``count`` API tasks, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=CLIENT_TIMEOUT_SECONDS) as client:

        async def submit(i: int) -> None:
            async with gate:
                await _submit(client, target, label, i, answered)

        await asyncio.gather(*(submit(i) for i in range(count)))


async def _wait_answered(answered: dict[int, Any], count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(answered) < count:
        assert time.monotonic() < deadline, f"only {len(answered)} of {count} answered"
        await asyncio.sleep(0.05)


async def _assert_each_201_succeeded_once(
    api: Api, target: TargetServer, label: str, answered: dict[int, Any], timeout: float = 120
) -> Counter[Any]:
    """Every 201 ends succeeded, and no submission made two tasks; returns the target's hits."""
    accepted = {i: task_id for i, (status, task_id) in answered.items() if status == 201}
    deadline = time.monotonic() + timeout
    while True:
        hits = Counter(body[label] for body in target.bodies if isinstance(body, dict) and label in body)
        missing = [i for i in accepted if not hits[i]]
        if not missing:
            break
        assert time.monotonic() < deadline, f"{len(missing)} accepted tasks never ran, e.g. {missing[:5]}"
        await asyncio.sleep(0.2)
    for task_id in accepted.values():
        task = await api.wait_for(
            task_id, lambda t: t["status"] in FINAL, timeout=max(1.0, deadline - time.monotonic()), unavailable_ok=True
        )
        assert task["status"] == "succeeded", task
    refused_but_created = sum(1 for i, (status, _) in answered.items() if status != 201 and hits[i])
    created = len(accepted) + refused_but_created
    # the counts are written behind, in batches: wait for them to catch up, never past
    while (total := (await api.get("/api/stats"))["tasks_by_kind"].get("api", 0)) < created:
        assert time.monotonic() < deadline + 30, f"stats count {total} tasks, {created} were created"
        await asyncio.sleep(0.2)
    assert total == created, f"a submission was created twice: {total} tasks for {created} submissions"
    return hits


def _executed_twice(hits: Counter[Any]) -> None:
    """No run executed twice: a runner starts user code only once its `started` event is confirmed."""
    doubled = {i: n for i, n in hits.items() if n > 1}
    assert not doubled, f"runs executed more than once: {sorted(doubled)[:10]}"


async def test_killing_the_node_that_leads_tasks_mid_burst_answers_everyone_and_doubles_nothing(
    cluster: NatsCluster, cluster_stack: ClusterStack, cluster_api: Api, target: TargetServer
) -> None:
    count = 1000
    answered: dict[int, Any] = {}
    burst = asyncio.create_task(_submit_all(cluster_stack, target, "burst", count, 20, answered))
    await _wait_answered(answered, count // 4)
    leader = await asyncio.to_thread(cluster.stream_leader, "TASKS")
    leader.kill()
    killed_after = len(answered)
    await asyncio.wait_for(burst, 300)

    statuses = Counter(status for status, _ in answered.values())
    assert set(statuses) <= {201, 503}, statuses  # an answer for everyone, never a timeout
    assert statuses[201] >= count // 2, statuses
    hits = await _assert_each_201_succeeded_once(cluster_api, target, "burst", answered)
    print(
        f"killed {leader.name} after {killed_after} answers: {dict(statuses)}; "
        f"503s that ran anyway: {sum(1 for i, (s, _) in answered.items() if s == 503 and hits[i])}"
    )
    _executed_twice(hits)


async def test_killing_the_leading_store_mid_burst_hands_over_to_the_standby_and_doubles_nothing(
    cluster: NatsCluster, cluster_stack: ClusterStack, cluster_api: Api, target: TargetServer
) -> None:
    standby = cluster_stack.start_service("store", key="store-2")
    deadline = time.monotonic() + 30
    while "standing by" not in standby.log():
        assert time.monotonic() < deadline and standby.alive(), standby.log()
        await asyncio.sleep(0.1)
    count = 1000
    answered: dict[int, Any] = {}
    burst = asyncio.create_task(_submit_all(cluster_stack, target, "handover", count, 20, answered))
    await _wait_answered(answered, count // 4)
    cluster_stack.services["store"].kill()
    killed_after = len(answered)
    await asyncio.wait_for(burst, 300)

    assert "store ready" in standby.log()
    statuses = Counter(status for status, _ in answered.values())
    assert set(statuses) <= {201, 503}, statuses  # an answer for everyone, never a timeout
    assert statuses[201] >= count // 2, statuses
    hits = await _assert_each_201_succeeded_once(cluster_api, target, "handover", answered)
    print(f"killed the leading store after {killed_after} answers: {dict(statuses)}")
    _executed_twice(hits)


async def test_a_rolling_restart_of_every_node_under_steady_load_loses_and_doubles_nothing(
    cluster: NatsCluster, cluster_stack: ClusterStack, cluster_api: Api, target: TargetServer
) -> None:
    answered: dict[int, Any] = {}
    stop = asyncio.Event()

    async def steady_load() -> int:
        sent = 0
        async with httpx.AsyncClient(
            base_url=cluster_stack.base_url, timeout=CLIENT_TIMEOUT_SECONDS, limits=httpx.Limits(max_connections=50)
        ) as client:
            in_flight = set()
            while not stop.is_set():  # ~10 a second, whatever the answers take
                sent += 1
                in_flight.add(asyncio.create_task(_submit(client, target, "rolling", sent, answered, retries=5)))
                await asyncio.sleep(0.1)
            await asyncio.gather(*in_flight)
        return sent

    load = asyncio.create_task(steady_load())
    await _wait_answered(answered, 20)
    for node in cluster.nodes:
        await asyncio.to_thread(node.terminate)  # SIGTERM: its leaderships move first
        await asyncio.to_thread(cluster.start_node, node)  # back, and every replica current
    await asyncio.sleep(1.0)
    stop.set()
    sent = await load
    await _wait_answered(answered, sent)

    statuses = Counter(status for status, _ in answered.values())
    assert statuses[201] == sent, statuses  # every submission accepted in the end, none hanging
    hits = await _assert_each_201_succeeded_once(cluster_api, target, "rolling", answered)
    print(f"rolling restart under {sent} submissions: {dict(statuses)}, {REPEATED['rolling']} 503s repeated")
    _executed_twice(hits)


def _scheduler_leader(stack: ClusterStack) -> tuple[str, str]:
    """(the leading scheduler's key in stack.services, the standby's), from /api/health."""
    detail = httpx.get(f"{stack.base_url}/api/health", timeout=5).json()["checks"]["scheduler"]["detail"]
    for key, other in (("scheduler", "scheduler-2"), ("scheduler-2", "scheduler")):
        log = stack.services[key].log()
        if "leading" in log and detail.split()[1].strip(",") in log:
            return key, other
    raise AssertionError(f"no scheduler leader found: {detail}")


async def test_killing_the_scheduler_leader_while_a_node_is_down_neither_doubles_nor_drops_a_fire(
    cluster: NatsCluster, cluster_stack: ClusterStack, cluster_api: Api, target: TargetServer
) -> None:
    second = cluster_stack.start_service("scheduler", key="scheduler-2")
    deadline = time.monotonic() + 30
    while "standing by" not in second.log():
        assert time.monotonic() < deadline and second.alive(), second.log()
        await asyncio.sleep(0.1)
    schedules = [
        await cluster_api.submit(
            {
                "name": f"tick {i}",
                "task_type": "scheduled",
                "cron_expression": "*/1 * * * * *",
                "api_url": f"{target.url}/echo",
                "method": "POST",
                "data": {"tick": i},
            },
            path="/api/scheduled-tasks",
        )
        for i in range(3)
    ]
    await cluster_api.wait_for(schedules[0]["id"], lambda t: t["fired_count"] >= 3, timeout=30)
    down = await asyncio.to_thread(cluster.stream_leader, "KV_leases")
    down.kill()  # the lease bucket elects a new leader while the scheduler renews through it
    await _until_answered(cluster_api, schedules[0]["id"])  # clients of the dead node reconnected
    killed, standby = await asyncio.to_thread(_scheduler_leader, cluster_stack)
    cluster_stack.services[killed].kill()
    killed_at = time.monotonic()
    deadline = killed_at + 30  # the lease TTL (10 s) + a renewal period + the election of a node
    while "leading" not in cluster_stack.services[standby].log():
        assert time.monotonic() < deadline, cluster_stack.services[standby].log()
        await asyncio.sleep(0.1)
    takeover_s = time.monotonic() - killed_at
    # The node that went down may have led the store's lease too: the store can lose it while its
    # bucket elects a leader, and answer 503 until it leads again (its own failover, not this test's).
    await cluster_api.wait_for(schedules[0]["id"], lambda t: t["fired_count"] >= 3, timeout=30, unavailable_ok=True)
    first_fires = {
        s["id"]: (await cluster_api.wait_for(s["id"], lambda t: True, timeout=30, unavailable_ok=True))["fired_count"]
        for s in schedules
    }
    await cluster_api.wait_for(
        schedules[0]["id"],
        lambda t: t["fired_count"] >= first_fires[schedules[0]["id"]] + 3,
        timeout=15,
        unavailable_ok=True,
    )  # firing on schedule again
    for task in schedules:
        await _answered(cluster_api, "POST", f"/api/scheduled-tasks/{task['id']}/pause")
    await asyncio.sleep(2.0)  # fires in flight land

    hits = Counter(b["tick"] for b in target.bodies if isinstance(b, dict) and "tick" in b)
    for i, task in enumerate(schedules):
        runs = (await _answered(cluster_api, "GET", f"/api/tasks/{task['id']}/runs", limit=500))["runs"]
        slots = sorted(r["scheduled_for"] for r in runs)
        assert len(slots) == len(set(slots)), "a slot fired twice"
        ledger = await _answered(cluster_api, "GET", f"/api/scheduled-tasks/{task['id']}/ledger", limit=500)
        missed = sum(e.get("count", 1) for e in ledger["entries"] if e["state"] in ("missed", "skipped"))
        span = len({e["scheduled_for"] for e in ledger["entries"]})
        # every second from the first slot to the last is a run or accounted for by the misfire policy
        first, last = slots[0], slots[-1]
        seconds = int((_ts(last) - _ts(first)).total_seconds()) + 1
        assert len(slots) + missed >= seconds, (takeover_s, slots, ledger["entries"])
        assert span >= 1
        finished = sum(1 for r in runs if r["status"] == "succeeded")
        assert finished <= hits[i] <= len(runs), "a run executed twice"
    print(f"scheduler takeover with {down.name} down: {takeover_s:.1f} s")


async def _until_answered(api: Api, task_id: str, timeout: float = 20) -> None:
    """Wait until the API answers 200 again (a 503 while the gateway reconnects is its answer)."""
    deadline = time.monotonic() + timeout
    while (await api.client.get(f"/api/tasks/{task_id}")).status_code != 200:
        assert time.monotonic() < deadline, "the API never answered again"
        await asyncio.sleep(0.2)


async def _answered(api: Api, method: str, path: str, timeout: float = 30, **params: Any) -> Any:
    """The 200 answer to one call, repeated while it is 503 (the store leading again after losing
    its lease to the election of the lease bucket; its own failover, not what these tests check)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await api.client.request(method, path, params=params)
        if response.status_code != 503:
            assert response.status_code == 200, response.text
            return response.json()
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.2)


def _ts(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))
