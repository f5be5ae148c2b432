"""The planner: when a schedule fires, and what the misfire policy does with fires that were missed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from proto.schedules import CronTimer, jitter_offset
from proto.tasks import TaskSpec
from services.scheduler.planner import fire_time, next_due, plan

GRACE = timedelta(seconds=60)
TASK_ID = "0195f3a2-7c41-7d3e-9a10-4b2c8e6f1a23"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def hourly(**overrides: Any) -> TaskSpec:
    """An hourly (on the hour, UTC) scheduled API task."""
    spec = TaskSpec(name="hourly", task_type="scheduled", api_url="https://example.com/", cron_expression="0 * * * *")
    return msgspec.structs.replace(spec, **overrides)


def timer(spec: TaskSpec, due_at: str, fired_count: int = 0) -> CronTimer:
    return CronTimer(task_id=TASK_ID, spec=spec, due_at=utc(due_at), fired_count=fired_count)


# --- on time ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "now",
    ["2026-01-01T10:00", "2026-01-01T10:00:05", "2026-01-01T10:01"],
    ids=["exactly-due", "five-seconds-late", "late-by-exactly-the-grace"],
)
def test_a_fire_within_the_misfire_grace_fires_once(now: str) -> None:
    result = plan(timer(hourly(), "2026-01-01T10:00"), utc(now), GRACE, run_all_limit=10)

    assert result.fire == [utc("2026-01-01T10:00")]
    assert result.missed == 0 and result.missed_first is None and result.missed_last is None
    assert result.next_due == utc("2026-01-01T11:00")


def test_a_fire_late_within_the_grace_does_not_pick_up_the_next_slot() -> None:
    # Given a per-minute schedule due at 10:00 and a grace of 90 s, planned at 10:01:30
    spec = hourly(cron_expression="* * * * *")

    result = plan(timer(spec, "2026-01-01T10:00"), utc("2026-01-01T10:01:30"), timedelta(seconds=90), 10)

    # Then only the due slot fires, and the next due time is the following slot (still to be planned)
    assert result.fire == [utc("2026-01-01T10:00")]
    assert result.next_due == utc("2026-01-01T10:01")


# --- missed fires: the misfire policy ---------------------------------------------------------------

# Due at 10:00, planned at 13:30: the slots 10:00, 11:00, 12:00 and 13:00 passed (n = 4).
LATE_DUE, LATE_NOW = "2026-01-01T10:00", "2026-01-01T13:30"
ALL_FOUR = ["2026-01-01T10:00", "2026-01-01T11:00", "2026-01-01T12:00", "2026-01-01T13:00"]


@pytest.mark.parametrize(
    ("policy", "run_all_limit", "fired", "missed"),
    [
        pytest.param("run_once", 10, ["2026-01-01T13:00"], 3, id="run-once-fires-the-latest-slot"),
        pytest.param("skip", 10, [], 4, id="skip-fires-nothing"),
        pytest.param("run_all", 10, ALL_FOUR, 0, id="run-all-fires-every-slot"),
        pytest.param("run_all", 4, ALL_FOUR, 0, id="run-all-at-exactly-its-limit"),
        pytest.param("run_all", 2, ["2026-01-01T12:00", "2026-01-01T13:00"], 2, id="run-all-capped-keeps-the-latest"),
        pytest.param("run_all", 1, ["2026-01-01T13:00"], 3, id="run-all-with-limit-one"),
    ],
)
def test_fires_later_than_the_grace_follow_the_misfire_policy(
    policy: str, run_all_limit: int, fired: list[str], missed: int
) -> None:
    result = plan(timer(hourly(misfire_policy=policy), LATE_DUE), utc(LATE_NOW), GRACE, run_all_limit)

    assert result.fire == [utc(t) for t in fired]
    assert result.missed == missed
    if missed:
        assert (result.missed_first, result.missed_last) == (utc(ALL_FOUR[0]), utc(ALL_FOUR[-1]))
    else:
        assert (result.missed_first, result.missed_last) == (None, None)
    assert result.next_due == utc("2026-01-01T14:00")


def test_a_fire_just_past_the_grace_with_no_further_slot_is_one_late_fire() -> None:
    # Given due at 10:00 and planned at 10:02 (grace 60 s), before the 11:00 slot
    result = plan(timer(hourly(), "2026-01-01T10:00"), utc("2026-01-01T10:02"), GRACE, 10)

    # Then run_once still fires that slot, and nothing counts as missed
    assert result.fire == [utc("2026-01-01T10:00")]
    assert result.missed == 0
    assert result.next_due == utc("2026-01-01T11:00")


def test_a_fire_missed_by_days_counts_every_slot() -> None:
    result = plan(timer(hourly(), "2026-01-01T00:00"), utc("2026-01-08T00:30"), GRACE, 10)

    assert result.fire == [utc("2026-01-08T00:00")]
    assert result.missed == 7 * 24
    assert result.next_due == utc("2026-01-08T01:00")


# --- completion: max_runs and end_at ---------------------------------------------------------------


def test_the_last_of_max_runs_fires_and_completes_the_schedule() -> None:
    result = plan(timer(hourly(max_runs=3), "2026-01-01T10:00", fired_count=2), utc("2026-01-01T10:00"), GRACE, 10)

    assert result.fire == [utc("2026-01-01T10:00")]
    assert result.next_due is None


def test_a_schedule_below_max_runs_continues() -> None:
    result = plan(timer(hourly(max_runs=3), "2026-01-01T10:00", fired_count=1), utc("2026-01-01T10:00"), GRACE, 10)

    assert result.fire == [utc("2026-01-01T10:00")]
    assert result.next_due == utc("2026-01-01T11:00")


def test_a_schedule_that_already_reached_max_runs_fires_no_more() -> None:
    result = plan(timer(hourly(max_runs=3), "2026-01-01T10:00", fired_count=3), utc("2026-01-01T10:00"), GRACE, 10)

    assert result.fire == []
    assert result.next_due is None


def test_run_all_stops_at_max_runs_and_completes() -> None:
    spec = hourly(max_runs=3, misfire_policy="run_all")

    result = plan(timer(spec, LATE_DUE, fired_count=1), utc(LATE_NOW), GRACE, 10)

    assert len(result.fire) == 2
    assert result.next_due is None


def test_the_last_fire_before_end_at_completes_the_schedule() -> None:
    spec = hourly(start_at=utc("2026-01-01T00:00"), end_at=utc("2026-01-01T11:30"))

    result = plan(timer(spec, "2026-01-01T11:00"), utc("2026-01-01T11:00"), GRACE, 10)

    assert result.fire == [utc("2026-01-01T11:00")]
    assert result.next_due is None


def test_missed_slots_after_end_at_are_neither_fired_nor_counted() -> None:
    spec = hourly(end_at=utc("2026-01-01T11:30"))

    result = plan(timer(spec, LATE_DUE), utc(LATE_NOW), GRACE, 10)

    assert result.fire == [utc("2026-01-01T11:00")]
    assert result.missed == 1
    assert result.next_due is None


def test_a_slot_exactly_at_end_at_still_fires() -> None:
    spec = hourly(end_at=utc("2026-01-01T12:00"))

    assert next_due(spec, utc("2026-01-01T11:00")) == utc("2026-01-01T12:00")
    assert next_due(spec, utc("2026-01-01T12:00")) is None


# --- start_at and next_due ---------------------------------------------------------------------------


def test_start_at_delays_the_first_fire() -> None:
    spec = hourly(start_at=utc("2026-01-05T00:30"))

    assert next_due(spec, utc("2026-01-01T00:00")) == utc("2026-01-05T01:00")


def test_a_slot_exactly_at_start_at_is_the_first_fire() -> None:
    spec = hourly(start_at=utc("2026-01-05T01:00"))

    assert next_due(spec, utc("2026-01-01T00:00")) == utc("2026-01-05T01:00")


def test_start_at_in_the_past_changes_nothing() -> None:
    spec = hourly(start_at=utc("2025-01-01T00:00"))

    assert next_due(spec, utc("2026-01-01T10:15")) == utc("2026-01-01T11:00")


def test_a_window_with_no_slot_has_no_first_fire() -> None:
    spec = hourly(start_at=utc("2026-01-01T10:10"), end_at=utc("2026-01-01T10:50"))

    assert next_due(spec, utc("2026-01-01T00:00")) is None


def test_next_due_follows_the_time_zone_and_its_daylight_saving_rule() -> None:
    spec = hourly(cron_expression="30 2 * * *", timezone="America/New_York")

    assert next_due(spec, utc("2026-03-07T12:00")) == utc("2026-03-08T07:00")
    assert next_due(spec, utc("2026-03-08T07:00")) == utc("2026-03-09T06:30")


def test_missed_slots_across_a_daylight_saving_gap_are_counted_once_each() -> None:
    # Given an every-20-minutes job in New York, due at 01:00 EST on the spring-forward day,
    # planned at 03:30 EDT (07:30Z): 01:00, 01:20, 01:40, the collapsed gap fire at 03:00 EDT, 03:20 EDT
    spec = hourly(cron_expression="*/20 * * * *", timezone="America/New_York", misfire_policy="skip")

    result = plan(timer(spec, "2026-03-08T06:00"), utc("2026-03-08T07:30"), GRACE, 10)

    assert result.fire == []
    assert result.missed == 5
    assert result.next_due == utc("2026-03-08T07:40")


# --- jitter -----------------------------------------------------------------------------------------


def test_a_jittered_slot_is_late_only_from_its_jittered_time() -> None:
    # Given an hourly schedule with an hour of jitter, whose 10:00 slot is offset by more than the grace
    spec = hourly(jitter_seconds=3600.0)
    offset = jitter_offset(TASK_ID, utc("2026-01-01T10:00"), 3600.0)
    assert offset > 2 * GRACE, "pick a task id whose offset at 10:00 passes the grace"

    # When it is planned 30 s after its jittered time
    result = plan(timer(spec, "2026-01-01T10:00"), utc("2026-01-01T10:00") + offset + timedelta(seconds=30), GRACE, 10)

    # Then the slot fires, nothing is missed, and the next run shows the next slot's jittered time
    assert result.fire == [utc("2026-01-01T10:00")] and result.missed == 0
    assert result.next_due == utc("2026-01-01T11:00")
    assert result.next_fire_at == utc("2026-01-01T11:00") + jitter_offset(TASK_ID, utc("2026-01-01T11:00"), 3600.0)


def test_a_missed_slot_whose_jittered_time_is_still_ahead_stays_the_next_due_slot() -> None:
    # Given an hourly jittered schedule due at 10:00, planned (after an outage) just before 13:00's jittered time
    spec = hourly(jitter_seconds=3600.0)
    thirteen = utc("2026-01-01T13:00")
    now = thirteen + jitter_offset(TASK_ID, thirteen, 3600.0) - timedelta(milliseconds=1)

    result = plan(timer(spec, "2026-01-01T10:00"), now, GRACE, 10)

    # Then 10:00-12:00 are late (run_once fires the last of them), and 13:00 waits for its own time
    assert result.fire == [utc("2026-01-01T12:00")]
    assert result.missed == 2
    assert result.missed_first == fire_time(timer(spec, "2026-01-01T10:00"), utc("2026-01-01T10:00"))
    assert result.next_due == thirteen and result.next_fire_at == now + timedelta(milliseconds=1)
