"""Flow control with real services: per-key concurrency, rate limits, priorities and fairness,
observed by a local target that counts the requests it is serving at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from taskmesh.processes import free_port, wait_http
from tests.support import Api, Stack


class InFlightTarget:
    """An HTTP server whose /slow?seconds=&tag= records how many requests it serves at once, and when each began."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0
        self.started: list[tuple[float, str]] = []
        self.released = asyncio.Event()  # requests with hold=1 answer only once this is set
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> InFlightTarget:
        app = web.Application()
        app.router.add_get("/slow", self._slow)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _slow(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.started.append((time.monotonic(), request.query.get("tag", "")))
        try:
            if request.query.get("hold") == "1":
                await asyncio.wait_for(self.released.wait(), timeout=60)
            await asyncio.sleep(float(request.query.get("seconds", "0.5")))
        finally:
            self.in_flight -= 1
        return web.json_response({"ok": True})


@pytest.fixture
async def counting_target() -> AsyncIterator[InFlightTarget]:
    server = await InFlightTarget().start()
    try:
        yield server
    finally:
        await server.stop()


def slow_call(
    target: InFlightTarget, i: int, seconds: float = 0.5, tag: str = "", hold: bool = False, **flow: Any
) -> dict[str, Any]:
    return {
        "name": f"call {i}",
        "task_type": "immediate",
        "api_url": f"{target.url}/slow?seconds={seconds}&tag={tag}" + ("&hold=1" if hold else ""),
        "timeout": 30,
        **flow,
    }


async def until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.1)


async def limit_of(api: Api, key: str) -> dict[str, Any]:
    return next(limit for limit in (await api.get("/api/limits"))["limits"] if limit["key"] == key)


async def settles_idle(api: Api, key: str, timeout: float = 60.0) -> None:
    """The key ends with nothing running or waiting; outcomes reach the leader after the runs end,
    and ones a killed leader fetched but never acknowledged come back only after the ack wait."""
    deadline = time.monotonic() + timeout
    while ((limit := await limit_of(api, key))["running"], limit["waiting"]) != (0, 0):
        assert time.monotonic() < deadline, limit
        await asyncio.sleep(0.2)


async def submit_all(api: Api, bodies: list[dict[str, Any]]) -> list[str]:
    slots = asyncio.Semaphore(20)

    async def one(body: dict[str, Any]) -> str:
        async with slots:
            return str((await api.submit(body))["id"])

    return list(await asyncio.gather(*(one(b) for b in bodies)))


async def all_succeed(api: Api, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    tasks = [await api.wait_final(task_id, timeout=timeout) for task_id in ids]
    assert {t["status"] for t in tasks} == {"succeeded"}, [t for t in tasks if t["status"] != "succeeded"][:3]
    return tasks


async def test_twenty_slow_api_tasks_with_max_concurrency_two_never_put_more_than_two_in_flight(
    stack: Stack, api: Api, counting_target: InFlightTarget
) -> None:
    ids = await submit_all(
        api, [slow_call(counting_target, i, concurrency_key="partner", max_concurrency=2) for i in range(20)]
    )
    waiting = await api.wait_for(ids[-1], lambda t: t["waiting_reason"] is not None or t["status"] != "queued")
    assert waiting["waiting_reason"] == "concurrency:partner" or waiting["status"] != "queued", waiting
    limits = await api.get("/api/limits")
    partner = next(limit for limit in limits["limits"] if limit["key"] == "partner")
    assert partner["max_concurrency"] == 2 and partner["running"] <= 2, partner

    tasks = await all_succeed(api, ids, timeout=120)
    assert counting_target.most_in_flight == 2
    assert all(t["waiting_reason"] is None for t in tasks)
    await settles_idle(api, "partner")
    assert (await limit_of(api, "partner"))["admitted_total"] == 20


async def test_killing_one_of_two_runners_mid_way_neither_leaks_a_permit_nor_exceeds_the_limit(
    stack: Stack, api: Api, counting_target: InFlightTarget
) -> None:
    stack.start_service("runner", key="runner-2")
    stack.wait_ready(runners=2)
    ids = await submit_all(
        api,
        [slow_call(counting_target, i, seconds=1.0, concurrency_key="partner", max_concurrency=2) for i in range(20)],
    )
    # wait until the victim serves a request, then kill it without a chance to clean up
    deadline = time.monotonic() + 60
    while True:
        health = httpx.get(f"{stack.base_url}/api/health").json()
        busy = {r["instance_id"]: r["slots"]["api"]["busy"] for r in health["runners"]}
        if len(busy) == 2 and all(busy.values()):
            break
        assert time.monotonic() < deadline, health
        await asyncio.sleep(0.05)
    stack.services["runner"].kill()

    tasks = await all_succeed(api, ids, timeout=180)
    assert counting_target.most_in_flight <= 2
    assert any(t["last_run"].get("attempt", 1) > 1 for t in tasks)  # the killed runner's run went to the other one
    await settles_idle(api, "partner")  # the killed runner's permit came back


async def test_a_rate_limit_of_five_a_second_over_thirty_tasks_spaces_their_starts(
    stack: Stack, api: Api, counting_target: InFlightTarget
) -> None:
    ids = await submit_all(
        api, [slow_call(counting_target, i, seconds=0.0, concurrency_key="paced", rate_limit="5/s") for i in range(30)]
    )
    await all_succeed(api, ids, timeout=120)
    starts = sorted(at for at, _ in counting_target.started)
    assert len(starts) == 30
    # a token bucket of 5/s with a burst of one second's worth: n starts need (n - 5) / 5 seconds
    assert starts[-1] - starts[0] >= (30 - 5) / 5 - 0.5, starts
    assert all(starts[i + 15] - starts[i] >= (16 - 5) / 5 - 0.5 for i in range(len(starts) - 15)), starts


async def test_when_runs_wait_for_capacity_higher_priority_starts_first(
    stack: Stack, api: Api, counting_target: InFlightTarget
) -> None:
    blocker = await api.submit(
        slow_call(counting_target, 0, seconds=0.0, tag="blocker", hold=True, concurrency_key="one", max_concurrency=1)
    )
    await api.wait_for(blocker["id"], lambda t: t["status"] == "running")
    bodies = [
        slow_call(
            counting_target, i, seconds=0.0, tag=level, concurrency_key="one", max_concurrency=1, priority=priority
        )
        for i in range(8)
        for level, priority in [("low" if i % 2 else "high", 1 if i % 2 else 5)]
    ]
    ids = await submit_all(api, bodies)
    # the blocker holds the key's only permit until every other run is seen waiting for it
    for task_id in ids:
        await api.wait_for(
            task_id, lambda t: t["status"] == "queued" and t["waiting_reason"] == "concurrency:one", timeout=60
        )
    counting_target.released.set()
    await all_succeed(api, [blocker["id"], *ids], timeout=120)
    assert [tag for _, tag in counting_target.started] == ["blocker"] + ["high"] * 4 + ["low"] * 4


async def test_a_tenant_flooding_a_limit_does_not_starve_another_served_round_robin(
    stack: Stack, api: Api, counting_target: InFlightTarget
) -> None:
    def call(tenant: str, i: int) -> dict[str, Any]:
        return slow_call(
            counting_target,
            i,
            seconds=0.5,
            tag=tenant,
            concurrency_key="shared",
            max_concurrency=4,
            fairness_key=tenant,
        )

    await submit_all(api, [call("A", i) for i in range(500)])
    b_ids = await submit_all(api, [call("B", i) for i in range(10)])
    await all_succeed(api, b_ids, timeout=120)
    started_tags = [tag for _, tag in counting_target.started]
    assert started_tags.count("A") < 250, started_tags.count("A")  # B did not wait behind A's flood
    # from B's first start on, B got about every other permit (round-robin), not one in fifty
    first_b = started_tags.index("B")
    assert started_tags[first_b:].count("A") <= 30, started_tags[first_b:]
    shared = next(limit for limit in (await api.get("/api/limits"))["limits"] if limit["key"] == "shared")
    assert shared["waiting"] >= 200 and shared["running"] <= 4, shared  # A's flood is far from done
    assert counting_target.most_in_flight <= 4


async def test_killing_the_scheduler_leader_with_runs_waiting_neither_doubles_nor_loses_nor_exceeds(
    stack: Stack, api: Api, counting_target: InFlightTarget
) -> None:
    stack.start_service("scheduler", key="scheduler-2")
    await until(lambda: "standing by" in stack.services["scheduler-2"].log(), "the second scheduler stands by")
    ids = await submit_all(
        api,
        [slow_call(counting_target, i, seconds=1.0, concurrency_key="partner", max_concurrency=2) for i in range(12)],
    )
    deadline = time.monotonic() + 30
    while (partner := await limit_of(api, "partner"))["waiting"] < 6:
        assert time.monotonic() < deadline, partner
        await asyncio.sleep(0.1)
    leader = next(key for key in ("scheduler", "scheduler-2") if "leading" in stack.services[key].log())
    stack.services[leader].kill()

    tasks = await all_succeed(api, ids, timeout=180)
    assert counting_target.most_in_flight <= 2
    assert len(counting_target.started) == 12  # each ran once: nothing admitted twice by the new leader
    assert all(t["waiting_reason"] is None for t in tasks)
    await settles_idle(api, "partner")


async def test_an_operator_limit_set_over_http_applies_to_the_key_and_bad_input_is_named(
    stack: Stack, api: Api, counting_target: InFlightTarget
) -> None:
    bad = await api.client.put("/api/limits/partner", json={"max_concurrency": 0})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "max_concurrency", bad.text
    bad = await api.client.put("/api/limits/partner", json={"rate_limit": "fast"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "rate_limit", bad.text
    bad = await api.client.put(
        "/api/limits/partner", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json", bad.text
    set_ = await api.client.put("/api/limits/partner", json={"max_concurrency": 1})
    assert set_.status_code == 200 and set_.json()["source"] == "operator", set_.text

    ids = await submit_all(
        api,
        [slow_call(counting_target, i, seconds=0.3, concurrency_key="partner", max_concurrency=5) for i in range(6)],
    )
    await all_succeed(api, ids, timeout=120)
    assert counting_target.most_in_flight == 1  # the operator's 1 wins over the tasks' 5
    metrics = (await api.client.get("/metrics")).text
    assert 'taskmesh_flow_admitted_total{key="partner"} 6' in metrics, metrics
    assert 'taskmesh_flow_max_concurrency{key="partner"} 1' in metrics, metrics
    cleared = await api.client.put("/api/limits/partner", json={"max_concurrency": None})
    assert cleared.json()["max_concurrency"] == 5 and cleared.json()["source"] == "task", cleared.text


async def test_without_a_scheduler_leader_the_limits_api_answers_503_saying_so(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        stack.start(names=("store", "gateway"), wait=False)
        wait_http(f"{stack.base_url}/api/health", ok_statuses=(200, 503), timeout=30)
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
            listed = await client.get("/api/limits")
            assert listed.status_code == 503 and "scheduler leader" in listed.json()["error"]["message"], listed.text
            put = await client.put("/api/limits/k", json={"max_concurrency": 1})
            assert put.status_code == 503, put.text
    finally:
        stack.stop()
