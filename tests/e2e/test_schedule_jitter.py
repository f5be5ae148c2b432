"""Schedule jitter end to end: fires of many schedules on one cron spread over the window, each
slot fires once, and a scheduler failover repeats no fire (a slot's offset is a hash, not a draw)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from proto.schedules import jitter_offset
from tests.support import Api, Stack, TargetServer

SPREAD_SCHEDULES = 400
PERIOD_SECONDS = 10


@pytest.fixture
def stack_env() -> dict[str, str]:
    """A misfire grace longer than a takeover (lease TTL 10 s + a renewal period)."""
    return {"TASKMESH_MISFIRE_GRACE": "20"}


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def slot_time(slot: str) -> datetime:
    """The cron time of a slot named ``cron:<epoch ms>``."""
    return datetime.fromtimestamp(int(slot.removeprefix("cron:")) / 1000, UTC)


def leader_key(stack: Stack) -> tuple[str, str]:
    """(leader key in stack.services, the other scheduler's key), from /api/health's view."""
    health = httpx.get(f"{stack.base_url}/api/health", timeout=5).json()
    detail = health["checks"]["scheduler"]["detail"]
    for key in ("scheduler", "scheduler-2"):
        log = stack.services[key].log()
        if "leading" in log and detail.split()[1].strip(",") in log:
            return key, ("scheduler-2" if key == "scheduler" else "scheduler")
    raise AssertionError(f"no leader found: {detail}")


async def runs_at_least(api: Api, task_id: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The task's runs once the store has recorded at least ``count`` of them (or at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = await api.runs(task_id)
        if len(runs) >= count or time.monotonic() > deadline:
            return runs
        await asyncio.sleep(0.2)


async def submit_all(api: Api, bodies: list[dict[str, Any]], in_flight: int = 16) -> list[dict[str, Any]]:
    """Submit every body as a schedule, a few at a time."""
    gate = asyncio.Semaphore(in_flight)

    async def one(body: dict[str, Any]) -> dict[str, Any]:
        async with gate:
            return await api.submit(body, path="/api/scheduled-tasks")

    return await asyncio.gather(*(one(body) for body in bodies))


async def wait_all(api: Api, ids: set[str], predicate: Any, timeout: float) -> list[dict[str, Any]]:
    """Poll the schedule list until ``predicate`` holds for every schedule in ``ids``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [s for s in (await api.get("/api/scheduled-tasks"))["schedules"] if s["id"] in ids]
        if len(found) == len(ids) and all(predicate(s) for s in found):
            return found
        waiting = [s for s in found if not predicate(s)][:3]
        assert time.monotonic() < deadline, f"{len(ids) - len(found)} missing, e.g. not yet: {waiting}"
        await asyncio.sleep(0.5)


async def test_many_jittered_schedules_on_one_cron_spread_their_fires_and_fire_each_slot_once(
    api: Api, target: TargetServer
) -> None:
    # Given 400 schedules every 10 s, each with 10 s of jitter and two runs
    created = await submit_all(
        api,
        [
            {
                "name": f"spread {i}",
                "task_type": "scheduled",
                "cron_expression": f"*/{PERIOD_SECONDS} * * * * *",
                "jitter_seconds": PERIOD_SECONDS,
                "max_runs": 2,
                "api_url": f"{target.url}/hello",
            }
            for i in range(SPREAD_SCHEDULES)
        ],
    )
    # next_run_at shows the jittered time from the first answer on
    for task in created[:20]:
        slot = ts(task["next_run_at"]).replace(microsecond=0)
        slot -= timedelta(seconds=slot.second % PERIOD_SECONDS)
        assert ts(task["next_run_at"]) == slot + jitter_offset(task["id"], slot, PERIOD_SECONDS)

    # When every schedule has fired its two slots
    ids = {task["id"] for task in created}
    await wait_all(api, ids, lambda s: s["status"] == "completed" and s["fired_count"] == 2, timeout=120)

    # Then each slot fired once, and the ledger records it at its jittered time
    fired_after_slot: list[float] = []
    for task_id in ids:
        runs = await api.runs(task_id)
        assert len(runs) == 2 and len({r["slot"] for r in runs}) == 2, runs
        ledger = await api.get(f"/api/scheduled-tasks/{task_id}/ledger")
        expected = sorted(
            slot_time(r["slot"]) + jitter_offset(task_id, slot_time(r["slot"]), PERIOD_SECONDS) for r in runs
        )
        assert sorted(ts(e["scheduled_for"]) for e in ledger["entries"]) == expected, ledger
        assert (ledger["fired_count"], ledger["missed_count"], ledger["skipped_count"]) == (2, 0, 0)
        fired_after_slot += [(ts(r["queued_at"]) - slot_time(r["slot"])).total_seconds() for r in runs]

    # And the fires (when the scheduler published them) spread over the window instead of all at :00
    buckets = Counter(min(int(seconds), PERIOD_SECONDS) for seconds in fired_after_slot)
    busiest = max(buckets.values()) / len(fired_after_slot)
    print(f"fires per second after the slot: {sorted(buckets.items())}; busiest {busiest:.0%}")
    assert busiest <= 0.25, buckets  # a uniform spread puts 10% in each second
    assert sum(1 for b in range(PERIOD_SECONDS) if buckets[b] >= len(fired_after_slot) * 0.04) >= 8, buckets
    assert min(fired_after_slot) >= -0.05  # never before its slot


async def test_jittered_schedules_fire_each_slot_once_across_a_scheduler_failover(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    # Given two schedulers and 20 per-second schedules, each fire jittered within its second
    stack.start_service("scheduler", key="scheduler-2")
    await asyncio.sleep(1.0)
    schedules = await submit_all(
        api,
        [
            {
                "name": f"tick {i}",
                "task_type": "scheduled",
                "cron_expression": "*/1 * * * * *",
                "jitter_seconds": 1,
                "api_url": f"{target.url}/echo",
                "method": "POST",
                "data": {"task": i},
            }
            for i in range(20)
        ],
    )
    await asyncio.sleep(2.5)

    # When the leader is killed and the standby takes over
    killed, standby = leader_key(stack)
    stack.services[killed].kill()
    deadline = time.monotonic() + 25
    while "leading" not in stack.services[standby].log():
        assert time.monotonic() < deadline, stack.services[standby].log()
        await asyncio.sleep(0.1)
    await asyncio.sleep(3.0)
    for task in schedules:
        response = await api.client.post(f"/api/scheduled-tasks/{task['id']}/pause")
        assert response.status_code == 200, response.text
    await asyncio.sleep(2.0)  # fires in flight land

    # Then every second from the first slot to the last has exactly one run, at its jittered time,
    # and no run hit the target twice
    executed = Counter(b.get("task") for b in target.bodies if isinstance(b, dict) and "task" in b)
    for i, task in enumerate(schedules):
        # the store records a run's events after the run hit the target, by up to a consumer batch
        runs = await runs_at_least(api, task["id"], executed[i])
        slots = sorted(slot_time(r["slot"]) for r in runs)
        assert len(slots) == len(set(slots)), runs
        span = int((slots[-1] - slots[0]).total_seconds()) + 1
        assert len(slots) == span, [s.isoformat() for s in slots]
        for run in runs:
            slot = slot_time(run["slot"])
            assert ts(run["scheduled_for"]) == slot + jitter_offset(task["id"], slot, 1.0)
        finished = sum(1 for r in runs if r["status"] == "succeeded")
        assert finished <= executed[i] <= len(runs)
