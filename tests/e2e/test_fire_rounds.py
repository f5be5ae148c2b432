"""Fires under load go out in rounds, spaced so the fires of one moment share their writes.

The spacing is 5 ms in production; here it is a second, so the rounds are plain to see on a
loaded machine.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from tests.support import Api, TargetServer

SPACING_S = 1.0


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {"TASKMESH_FIRE_ROUND_SPACING": str(SPACING_S)}


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_timers_due_soon_after_a_round_wait_for_the_next_one_and_a_lone_timer_is_on_time(
    api: Api, target: TargetServer
) -> None:
    def delayed(name: str, delay: float) -> dict[str, object]:
        return {"name": name, "api_url": f"{target.url}/hello", "task_type": "delayed", "delay_seconds": delay}

    first = await api.submit(delayed("alone", 0.5))
    # due 0.4–0.8 s after the first: inside its round's spacing, so they must wait for the next round
    later = await asyncio.gather(*(api.submit(delayed(f"later {i}", 0.9 + i * 0.05)) for i in range(8)))
    tasks = await asyncio.gather(*(api.wait_final(task["id"], timeout=30) for task in [first, *later]))
    assert {task["status"] for task in tasks} == {"succeeded"}
    runs = [(await api.runs(task["id"]))[0] for task in tasks]
    for run in runs:
        assert ts(run["queued_at"]) >= ts(run["scheduled_for"]), run  # never early

    alone, rest = runs[0], runs[1:]
    assert all(ts(run["scheduled_for"]) > ts(alone["queued_at"]) for run in rest), "set-up: due after the first round"
    assert (ts(alone["queued_at"]) - ts(alone["scheduled_for"])).total_seconds() < SPACING_S / 2, alone
    held = [run for run in rest if (ts(run["scheduled_for"]) - ts(alone["queued_at"])).total_seconds() < SPACING_S]
    assert len(held) >= 4, "set-up: most are due within the first round's spacing"
    queued = sorted(ts(run["queued_at"]) for run in held)
    assert (queued[0] - ts(alone["queued_at"])).total_seconds() >= SPACING_S - 0.05, (alone, held)
    assert (queued[-1] - queued[0]).total_seconds() < SPACING_S / 4, held  # one round, not one fire each
