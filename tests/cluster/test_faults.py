"""Faults on a 3-node cluster under load: a node killed, a scheduler killed, a rolling restart.

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


async def _submit(client: httpx.AsyncClient, target: TargetServer, label: str, i: int,
                  answered: dict[int, Any]) -> None:
    """Submit API task ``i``; ``answered[i]`` becomes (status code or the error's name, task id)."""
    try:
        response = await client.post("/api/tasks", json={
            "name": f"{label} {i}", "task_type": "immediate", "api_url": f"{target.url}/echo",
            "method": "POST", "data": {label: i}})
        answered[i] = (response.status_code, response.json().get("id"))
    except httpx.HTTPError as exc:
        answered[i] = (type(exc).__name__, None)


async def _submit_all(stack: ClusterStack, target: TargetServer, label: str, count: int, concurrency: int,
                      answered: dict[int, Any]) -> None:
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


async def _assert_each_201_succeeded_once(api: Api, target: TargetServer, label: str,
                                          answered: dict[int, Any], timeout: float = 120) -> Counter[Any]:
    """Every 201 ends succeeded and hit the target exactly once; nothing hit twice."""
    accepted = {i: task_id for i, (status, task_id) in answered.items() if status == 201}
    deadline = time.monotonic() + timeout
    hits: Counter[Any] = Counter()
    while True:
        hits = Counter(body[label] for body in target.bodies if isinstance(body, dict) and label in body)
        if all(hits[i] for i in accepted):
            break
        missing = [i for i in accepted if not hits[i]]
        assert time.monotonic() < deadline, f"{len(missing)} accepted tasks never ran, e.g. {missing[:5]}"
        await asyncio.sleep(0.2)
    doubled = {i: n for i, n in hits.items() if n > 1}
    if doubled:
        runs = {i: await api.runs(answered[i][1]) for i in doubled if answered[i][1]}
        raise AssertionError(f"hit more than once: {doubled}; ids {[answered[i] for i in doubled]}; runs {runs}")
    for task_id in accepted.values():
        task = await api.wait_for(task_id, lambda t: t["status"] in FINAL, timeout=max(1.0, deadline - time.monotonic()))
        assert task["status"] == "succeeded", task
    return hits


async def test_killing_the_node_that_leads_tasks_mid_burst_answers_everyone_and_doubles_nothing(
        cluster: NatsCluster, cluster_stack: ClusterStack, cluster_api: Api, target: TargetServer) -> None:
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
    print(f"killed {leader.name} after {killed_after} answers: {dict(statuses)}; "
          f"503s that ran anyway: {sum(1 for i, (s, _) in answered.items() if s == 503 and hits[i])}")


async def test_a_rolling_restart_of_every_node_under_steady_load_loses_and_doubles_nothing(
        cluster: NatsCluster, cluster_stack: ClusterStack, cluster_api: Api, target: TargetServer) -> None:
    answered: dict[int, Any] = {}
    stop = asyncio.Event()

    async def steady_load() -> int:
        sent = 0
        async with httpx.AsyncClient(base_url=cluster_stack.base_url, timeout=CLIENT_TIMEOUT_SECONDS,
                                     limits=httpx.Limits(max_connections=50)) as client:
            in_flight = set()
            while not stop.is_set():  # ~10 a second, whatever the answers take
                sent += 1
                in_flight.add(asyncio.create_task(_submit(client, target, "rolling", sent, answered)))
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
    assert statuses[201] == sent, statuses  # not one refused, not one hanging
    await _assert_each_201_succeeded_once(cluster_api, target, "rolling", answered)
    print(f"rolling restart under {sent} submissions: {dict(statuses)}")

