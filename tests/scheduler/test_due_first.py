"""Runs already due go before a batch of new events (pure ordering logic: the leader's fires are
recorded instead of published, no NATS)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from services.scheduler.leader import DUE_FIRST_MAX_WAIT_SECONDS, Leader
from services.scheduler.settings import SchedulerSettings


def leader_recording(order: list[str]) -> Leader:
    leader = Leader(None, None, SchedulerSettings(), None)  # type: ignore[arg-type]

    async def fire(key: str) -> None:
        order.append(f"fired {key}")

    leader._fire = fire  # type: ignore[method-assign]
    return leader


async def handle_batch(leader: Leader, order: list[str]) -> None:
    """What a consumer does with a pulled batch: wait for due fires, then handle its messages in tasks."""

    async def handle(message: str) -> Any:
        order.append(f"handled {message}")

    await leader._due_fired_first()
    await asyncio.gather(*(handle(message) for message in ("submitted", "cancelled")))


async def test_a_batch_of_new_events_is_handled_after_the_fire_of_what_was_already_due() -> None:
    order: list[str] = []
    leader = leader_recording(order)
    until = asyncio.Event()
    firing = asyncio.create_task(leader._fire_loop(until))
    await asyncio.sleep(0)  # one turn: the fire loop now waits, nothing being due
    leader.heap.put("once.a", time.time() - 1)  # due now; the loop has not looked yet
    try:
        await asyncio.wait_for(handle_batch(leader, order), 5)
    finally:
        until.set()
        leader._wakeup.set()
        await asyncio.wait_for(firing, 5)

    assert order == ["fired once.a", "handled submitted", "handled cancelled"]


async def test_a_batch_waits_only_so_long_for_a_fire_loop_that_does_not_fire() -> None:
    order: list[str] = []
    leader = leader_recording(order)
    leader.heap.put("once.a", time.time() - 1)  # due, and no fire loop runs

    await asyncio.wait_for(handle_batch(leader, order), 20 * DUE_FIRST_MAX_WAIT_SECONDS)

    assert order == ["handled submitted", "handled cancelled"]
