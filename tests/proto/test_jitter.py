"""Schedule jitter: each slot of a task is delayed by a fixed, hashed offset below ``jitter_seconds``."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from proto.schedules import CronTimer, jitter_offset, jittered, next_fire
from proto.tasks import TaskSpec

SLOT = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def spec(jitter_seconds: float = 60.0) -> TaskSpec:
    return TaskSpec(
        name="hourly",
        task_type="scheduled",
        api_url="https://example.com/",
        cron_expression="0 * * * *",
        jitter_seconds=jitter_seconds,
    )


def test_the_offset_of_a_slot_is_the_same_every_time_it_is_computed() -> None:
    first = [jitter_offset(f"task-{i}", SLOT, 60.0) for i in range(100)]
    again = [jitter_offset(f"task-{i}", SLOT, 60.0) for i in range(100)]

    assert first == again
    assert len(set(first)) > 90  # different tasks, different offsets


def test_the_offset_changes_from_slot_to_slot_of_one_task() -> None:
    offsets = {jitter_offset("task", SLOT + timedelta(hours=h), 3600.0) for h in range(50)}

    assert len(offsets) > 45


def test_the_offset_lies_in_zero_to_jitter_to_the_millisecond() -> None:
    for jitter in (0.001, 0.5, 1.0, 7.25, 3600.0):
        for i in range(2000):
            offset = jitter_offset(f"task-{i}", SLOT, jitter)
            assert timedelta(0) <= offset < timedelta(seconds=jitter)
            assert offset.microseconds % 1000 == 0


def test_no_jitter_means_no_offset() -> None:
    assert {jitter_offset(f"task-{i}", SLOT, 0.0) for i in range(100)} == {timedelta(0)}
    assert jittered("task", spec(0.0), SLOT) == SLOT


def test_offsets_spread_roughly_uniformly_over_the_window() -> None:
    # Given 10,000 tasks with 10 s of jitter, counted per 1-second bucket
    buckets = Counter(int(jitter_offset(f"task-{i}", SLOT, 10.0).total_seconds()) for i in range(10_000))

    # Then every bucket holds close to a tenth (binomial sd ≈ 30: 150 is five of them)
    assert set(buckets) == set(range(10))
    assert all(abs(count - 1000) < 150 for count in buckets.values()), buckets


def test_a_schedule_timer_fires_at_its_slot_plus_the_offset_and_reports_that_as_next_run() -> None:
    timer = CronTimer(task_id="task", spec=spec(), due_at=SLOT)

    assert timer.fire_at == SLOT + jitter_offset("task", SLOT, 60.0)
    assert next_fire("task", spec(), SLOT - timedelta(minutes=1)) == timer.fire_at
