"""Scheduler faults: the leader is killed, the only scheduler restarts. Nothing doubled, nothing lost."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime

import httpx
import pytest

from tests.support import Api, Stack, TargetServer


@pytest.fixture
def stack_env() -> dict[str, str]:
    """A misfire grace longer than a takeover (lease TTL 10 s + a renewal period): fires due
    while no scheduler leads are then late, not missed."""
    return {"TASKMESH_MISFIRE_GRACE": "20"}


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def leader_key(stack: Stack) -> tuple[str, str]:
    """(leader key in stack.services, the other scheduler's key), from /api/health's view."""
    health = httpx.get(f"{stack.base_url}/api/health", timeout=5).json()
    detail = health["checks"]["scheduler"]["detail"]
    for key in ("scheduler", "scheduler-2"):
        log = stack.services[key].log()
        if "leading" in log and detail.split()[1].strip(",") in log:
            return key, ("scheduler-2" if key == "scheduler" else "scheduler")
    raise AssertionError(f"no leader found: {detail}")


async def test_killing_the_leader_hands_over_without_doubled_or_lost_fires(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    stack.start_service("scheduler", key="scheduler-2")
    await asyncio.sleep(1.0)
    schedules = [
        await api.submit(
            {
                "name": f"tick {i}",
                "task_type": "scheduled",
                "cron_expression": "*/1 * * * * *",
                "api_url": f"{target.url}/echo",
                "method": "POST",
                "data": {"task": i},
            },
            path="/api/scheduled-tasks",
        )
        for i in range(3)
    ]
    delayed = [
        await api.submit(
            {
                "name": f"later {i}",
                "task_type": "delayed",
                "delay_seconds": 3 + i,
                "api_url": f"{target.url}/echo",
                "method": "POST",
                "data": {"delayed": i},
            }
        )
        for i in range(3)
    ]
    await asyncio.sleep(2.0)
    killed, standby = leader_key(stack)
    stack.services[killed].kill()
    killed_at = time.time()
    # the standby takes over within its polling period: the killed leader's ping has no responders
    deadline = time.monotonic() + 20
    while "leading" not in stack.services[standby].log():
        assert time.monotonic() < deadline, stack.services[standby].log()
        await asyncio.sleep(0.1)
    takeover_s = time.time() - killed_at
    assert "lease taken over from a holder that is gone" in stack.services[standby].log()
    await asyncio.sleep(3.0)
    for task in schedules:
        await api.client.post(f"/api/scheduled-tasks/{task['id']}/pause")
    await asyncio.sleep(1.5)  # fires in flight land

    for i, task in enumerate(schedules):
        runs = await api.runs(task["id"])
        slots = sorted(ts(r["scheduled_for"]) for r in runs)
        assert len(slots) == len(set(slots))
        # every second from the first fire to the last has exactly one run: none lost in the takeover
        span = int((slots[-1] - slots[0]).total_seconds()) + 1
        assert len(slots) == span, (takeover_s, [s.isoformat() for s in slots])
        # and each run hit the target exactly once: no fire was executed twice
        executed = Counter(b.get("task") for b in target.bodies if isinstance(b, dict) and "task" in b)
        finished = sum(1 for r in runs if r["status"] == "succeeded")
        assert finished <= executed[i] <= len(runs)
    for task in delayed:
        done = await api.wait_final(task["id"], timeout=30)
        assert done["status"] == "succeeded"
    delayed_hits = Counter(b.get("delayed") for b in target.bodies if isinstance(b, dict) and "delayed" in b)
    assert delayed_hits == Counter({0: 1, 1: 1, 2: 1})


async def test_a_restarted_scheduler_fires_pending_delays_and_applies_the_misfire_policy(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    schedule = await api.submit(
        {
            "name": "catch up",
            "task_type": "scheduled",
            "cron_expression": "*/1 * * * * *",
            "api_url": f"{target.url}/hello",
        },
        path="/api/scheduled-tasks",
    )
    skipper = await api.submit(
        {
            "name": "skip missed",
            "task_type": "scheduled",
            "cron_expression": "*/1 * * * * *",
            "misfire_policy": "skip",
            "api_url": f"{target.url}/hello",
        },
        path="/api/scheduled-tasks",
    )
    await api.wait_for(schedule["id"], lambda t: t["fired_count"] >= 1, timeout=10)
    stack.services["scheduler"].stop()
    delayed = await api.submit(
        {"name": "while down", "task_type": "delayed", "delay_seconds": 1, "api_url": f"{target.url}/hello"}
    )
    before = (await api.task(schedule["id"]))["fired_count"]
    await asyncio.sleep(4.0)  # > misfire grace of 2 s set below: these fires are missed
    stack.start_service("scheduler", key="scheduler", TASKMESH_MISFIRE_GRACE="2")

    done = await api.wait_final(delayed["id"], timeout=30)
    assert done["status"] == "succeeded"  # accepted while no scheduler ran: still fires
    caught_up = await api.wait_for(schedule["id"], lambda t: t["missed_count"] >= 2, timeout=15)
    ledger = await api.get(f"/api/scheduled-tasks/{schedule['id']}/ledger")
    missed = [e for e in ledger["entries"] if e["state"] == "missed"]
    assert missed and "run_once" in missed[0]["reason"] and "1 caught up" in missed[0]["reason"]
    assert caught_up["fired_count"] >= before + 1  # the one catch-up run, then on schedule again
    skipped = await api.wait_for(skipper["id"], lambda t: t["missed_count"] >= 3, timeout=15)
    skip_ledger = await api.get(f"/api/scheduled-tasks/{skipper['id']}/ledger")
    assert any("policy skip, 0 caught up" in (e.get("reason") or "") for e in skip_ledger["entries"])
    assert skipped["status"] == "active"
