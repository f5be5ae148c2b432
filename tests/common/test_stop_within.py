"""stop_within: tasks that do not stop in time are cancelled, and the log says where they waited."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.common.lifecycle import stop_within


async def _waits_for_ever(never: asyncio.Future[None]) -> None:
    await _inner_wait(never)


async def _inner_wait(never: asyncio.Future[None]) -> None:
    await never


async def test_a_task_stuck_past_the_deadline_is_cancelled_and_logged_with_where_it_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stuck = asyncio.create_task(_waits_for_ever(never), name="stuck-loop")
    quick = asyncio.create_task(asyncio.sleep(0), name="quick-loop")
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(stop_within([stuck, quick], 0.1, "the test"), 5)
    assert stuck.cancelled() and quick.done() and not quick.cancelled()
    (record,) = [r for r in caplog.records if "still running" in r.getMessage()]
    assert "stuck-loop" in record.getMessage() and "after the test" in record.getMessage()
    assert "_waits_for_ever" in record.waiting_in and "_inner_wait" in record.waiting_in


async def test_tasks_that_end_in_time_are_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    tasks = [asyncio.create_task(asyncio.sleep(0.01)) for _ in range(3)]
    with caplog.at_level(logging.WARNING):
        await stop_within(tasks, 5, "the test")
    assert all(t.done() and not t.cancelled() for t in tasks)
    assert not [r for r in caplog.records if "still running" in r.getMessage()]
