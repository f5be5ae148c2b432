"""Cron expressions: the accepted forms, the errors, and the daylight-saving rule on real transitions.

The rule (``proto/cron.py``): a wall time in a spring-forward gap fires once, at the first valid
instant after the gap; a wall time that exists twice fires once, at its first occurrence.
All instants are fixed; no test reads the clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proto.cron import CronError, CronSchedule, load_zone, wall_to_instant


def utc(text: str) -> datetime:
    """An aware UTC instant from ``YYYY-MM-DDTHH:MM[:SS]``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- accepted forms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        pytest.param(
            "*/5 * * * *",
            "UTC",
            "2026-01-01T00:02",
            ["2026-01-01T00:05", "2026-01-01T00:10"],
            id="five-fields-every-5-minutes",
        ),
        pytest.param(
            "0 9 * * 1-5",
            "UTC",
            "2026-01-02T10:00",
            ["2026-01-05T09:00", "2026-01-06T09:00"],
            id="five-fields-weekdays-skip-the-weekend",
        ),
        pytest.param(
            "0 9 * * mon",
            "UTC",
            "2026-01-01T00:00",
            ["2026-01-05T09:00", "2026-01-12T09:00"],
            id="five-fields-weekday-name",
        ),
        pytest.param(
            "30 0 12 * * *",
            "UTC",
            "2026-01-01T00:00",
            ["2026-01-01T12:00:30", "2026-01-02T12:00:30"],
            id="six-fields-seconds-first",
        ),
        pytest.param(
            "*/15 * * * * *",
            "UTC",
            "2026-01-01T00:00",
            ["2026-01-01T00:00:15", "2026-01-01T00:00:30"],
            id="six-fields-every-15-seconds",
        ),
        pytest.param(
            "0 9 * * *",
            "Europe/Berlin",
            "2026-01-01T00:00",
            ["2026-01-01T08:00", "2026-01-02T08:00"],
            id="wall-time-in-winter-berlin",
        ),
        pytest.param(
            "0 9 * * *",
            "Europe/Berlin",
            "2026-07-01T00:00",
            ["2026-07-01T07:00", "2026-07-02T07:00"],
            id="wall-time-in-summer-berlin",
        ),
        pytest.param(
            "  0   9 * *   *  ",
            "UTC",
            "2026-01-01T00:00",
            ["2026-01-01T09:00", "2026-01-02T09:00"],
            id="extra-whitespace-is-ignored",
        ),
        pytest.param("@hourly", "UTC", "2026-01-01T00:00", ["2026-01-01T01:00", "2026-01-01T02:00"], id="alias-hourly"),
        pytest.param("@daily", "UTC", "2026-01-01T00:00", ["2026-01-02T00:00", "2026-01-03T00:00"], id="alias-daily"),
        pytest.param(
            "@midnight",
            "Europe/Berlin",
            "2026-01-01T12:00",
            ["2026-01-01T23:00", "2026-01-02T23:00"],
            id="alias-midnight-in-local-time",
        ),
        pytest.param(
            "@weekly",
            "UTC",
            "2026-01-01T00:00",
            ["2026-01-04T00:00", "2026-01-11T00:00"],
            id="alias-weekly-is-sunday-midnight",
        ),
        pytest.param(
            "@monthly", "UTC", "2026-01-15T00:00", ["2026-02-01T00:00", "2026-03-01T00:00"], id="alias-monthly"
        ),
        pytest.param("@yearly", "UTC", "2026-01-01T00:00", ["2027-01-01T00:00", "2028-01-01T00:00"], id="alias-yearly"),
        pytest.param(
            "@annually", "UTC", "2026-06-01T00:00", ["2027-01-01T00:00", "2028-01-01T00:00"], id="alias-annually"
        ),
        pytest.param(
            "@HOURLY", "UTC", "2026-01-01T00:00", ["2026-01-01T01:00", "2026-01-01T02:00"], id="alias-in-upper-case"
        ),
        pytest.param(
            "0 0 29 2 *", "UTC", "2026-01-01T00:00", ["2028-02-29T00:00", "2032-02-29T00:00"], id="leap-day-only"
        ),
    ],
)
def test_an_expression_fires_at_the_expected_instants(
    expression: str, zone: str, after: str, expected: list[str]
) -> None:
    schedule = CronSchedule(expression, zone)

    fires = schedule.fires_between(utc(after), utc(after) + timedelta(days=10 * 366), len(expected))

    assert fires == [utc(t) for t in expected]


def test_the_next_fire_is_strictly_after_the_given_instant() -> None:
    schedule = CronSchedule("0 * * * *")

    assert schedule.next_after(utc("2026-01-01T05:00")) == utc("2026-01-01T06:00")


def test_the_next_fire_is_returned_in_utc_whatever_the_zone_of_the_argument() -> None:
    schedule = CronSchedule("0 9 * * *", "Asia/Tokyo")
    after = datetime(2026, 1, 1, 10, 0, tzinfo=load_zone("Asia/Tokyo"))

    found = schedule.next_after(after)

    assert found == utc("2026-01-02T00:00") and found.utcoffset() == timedelta(0)


def test_no_fire_within_the_horizon_gives_none() -> None:
    schedule = CronSchedule("@yearly")

    assert schedule.next_after(utc("2026-01-01T00:00"), horizon=timedelta(days=30)) is None


@pytest.mark.parametrize(
    ("expression", "zone"),
    [
        pytest.param("", "UTC", id="empty"),
        pytest.param("   ", "UTC", id="blank"),
        pytest.param("* * *", "UTC", id="three-fields"),
        pytest.param("* * * *", "UTC", id="four-fields"),
        pytest.param("* * * * * * *", "UTC", id="seven-fields"),
        pytest.param("61 * * * *", "UTC", id="minute-out-of-range"),
        pytest.param("* 24 * * *", "UTC", id="hour-out-of-range"),
        pytest.param("* * 32 * *", "UTC", id="day-out-of-range"),
        pytest.param("* * * 13 *", "UTC", id="month-out-of-range"),
        pytest.param("* * * * 8", "UTC", id="weekday-out-of-range"),
        pytest.param("60 * * * * *", "UTC", id="second-out-of-range"),
        pytest.param("a b c d e", "UTC", id="letters"),
        pytest.param("*/0 * * * *", "UTC", id="step-zero"),
        pytest.param("@every 5m", "UTC", id="unknown-alias"),
        pytest.param("@reboot", "UTC", id="reboot-alias"),
        pytest.param("0 0 30 2 *", "UTC", id="february-30th-never-fires"),
        pytest.param("0 0 31 4 *", "UTC", id="april-31st-never-fires"),
        pytest.param("* * * * *", "Mars/Olympus", id="unknown-zone"),
        pytest.param("* * * * *", "", id="empty-zone"),
        pytest.param("* * * * *", "../../etc/passwd", id="zone-path-traversal"),
        pytest.param("* * * * *", "Europe/" + "x" * 80, id="zone-name-too-long"),
        pytest.param("* * * * *", "+02:00", id="offset-instead-of-zone"),
    ],
)
def test_an_invalid_expression_or_zone_raises_cron_error(expression: str, zone: str) -> None:
    with pytest.raises(CronError) as raised:
        CronSchedule(expression, zone)

    assert str(raised.value)


# --- daylight saving on real transitions ----------------------------------------------------------

DST_CASES = [
    # America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z); 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z)
    pytest.param(
        "30 2 * * *",
        "America/New_York",
        "2026-03-07T12:00",
        "2026-03-10T12:00",
        ["2026-03-08T07:00", "2026-03-09T06:30", "2026-03-10T06:30"],
        id="new-york-spring-gap-02:30-fires-once-at-03:00-edt",
    ),
    pytest.param(
        "*/20 2 * * *",
        "America/New_York",
        "2026-03-07T12:00",
        "2026-03-09T12:00",
        ["2026-03-08T07:00", "2026-03-09T06:00", "2026-03-09T06:20", "2026-03-09T06:40"],
        id="new-york-spring-gap-every-20-min-collapses-into-one-fire",
    ),
    pytest.param(
        "0 2,3 * * *",
        "America/New_York",
        "2026-03-07T12:00",
        "2026-03-09T12:00",
        ["2026-03-08T07:00", "2026-03-09T06:00", "2026-03-09T07:00"],
        id="new-york-spring-gap-02:00-and-03:00-fire-once-together",
    ),
    pytest.param(
        "0 * * * *",
        "America/New_York",
        "2026-03-08T05:00",
        "2026-03-08T09:00",
        ["2026-03-08T06:00", "2026-03-08T07:00", "2026-03-08T08:00", "2026-03-08T09:00"],
        id="new-york-spring-hourly-has-no-02:00",
    ),
    pytest.param(
        "30 1 * * *",
        "America/New_York",
        "2026-10-31T12:00",
        "2026-11-02T12:00",
        ["2026-11-01T05:30", "2026-11-02T06:30"],
        id="new-york-fall-01:30-fires-once-at-first-occurrence",
    ),
    pytest.param(
        "*/20 * * * *",
        "America/New_York",
        "2026-11-01T04:50",
        "2026-11-01T07:10",
        ["2026-11-01T05:00", "2026-11-01T05:20", "2026-11-01T05:40", "2026-11-01T07:00"],
        id="new-york-fall-repeated-hour-does-not-fire-again",
    ),
    # Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z); 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z)
    pytest.param(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00",
        "2026-03-30T12:00",
        ["2026-03-29T01:00", "2026-03-30T00:30"],
        id="berlin-spring-gap-02:30-fires-at-03:00-cest",
    ),
    pytest.param(
        "0 30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00",
        "2026-03-30T12:00",
        ["2026-03-29T01:00", "2026-03-30T00:30"],
        id="berlin-spring-gap-six-field-form",
    ),
    pytest.param(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T12:00",
        "2026-10-26T12:00",
        ["2026-10-25T00:30", "2026-10-26T01:30"],
        id="berlin-fall-02:30-fires-once-in-cest",
    ),
    pytest.param(
        "15 30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T12:00",
        "2026-10-26T12:00",
        ["2026-10-25T00:30:15", "2026-10-26T01:30:15"],
        id="berlin-fall-six-field-form",
    ),
    # Australia/Sydney: 2026-04-05 03:00 AEDT -> 02:00 AEST (16:00Z on 04-04);
    #                   2026-10-04 02:00 AEST -> 03:00 AEDT (16:00Z on 10-03)
    pytest.param(
        "30 2 * * *",
        "Australia/Sydney",
        "2026-04-03T12:00",
        "2026-04-06T12:00",
        ["2026-04-03T15:30", "2026-04-04T15:30", "2026-04-05T16:30"],
        id="sydney-april-02:30-fires-once-in-aedt",
    ),
    pytest.param(
        "*/20 * * * *",
        "Australia/Sydney",
        "2026-04-04T14:30",
        "2026-04-04T17:10",
        ["2026-04-04T14:40", "2026-04-04T15:00", "2026-04-04T15:20", "2026-04-04T15:40", "2026-04-04T17:00"],
        id="sydney-april-repeated-hour-does-not-fire-again",
    ),
    pytest.param(
        "30 2 * * *",
        "Australia/Sydney",
        "2026-10-02T12:00",
        "2026-10-05T12:00",
        ["2026-10-02T16:30", "2026-10-03T16:00", "2026-10-04T15:30"],
        id="sydney-october-gap-02:30-fires-at-03:00-aedt",
    ),
    pytest.param(
        "*/20 * * * *",
        "Australia/Sydney",
        "2026-10-03T15:30",
        "2026-10-03T16:30",
        ["2026-10-03T15:40", "2026-10-03T16:00", "2026-10-03T16:20"],
        id="sydney-october-gap-collapses-into-one-fire",
    ),
    # Half-hour and midnight transitions
    pytest.param(
        "15 2 * * *",
        "Australia/Lord_Howe",
        "2026-10-02T12:00",
        "2026-10-05T12:00",
        ["2026-10-02T15:45", "2026-10-03T15:30", "2026-10-04T15:15"],
        id="lord-howe-half-hour-gap-02:15-fires-at-02:30",
    ),
    pytest.param(
        "0 0 * * *",
        "America/Santiago",
        "2026-09-04T12:00",
        "2026-09-08T12:00",
        ["2026-09-05T04:00", "2026-09-06T04:00", "2026-09-07T03:00", "2026-09-08T03:00"],
        id="santiago-missing-midnight-fires-at-01:00",
    ),
    # UTC has no transitions: same instants on every transition date above
    pytest.param(
        "30 2 * * *",
        "UTC",
        "2026-03-07T12:00",
        "2026-03-10T12:00",
        ["2026-03-08T02:30", "2026-03-09T02:30", "2026-03-10T02:30"],
        id="utc-march",
    ),
    pytest.param(
        "30 1 * * *",
        "UTC",
        "2026-10-31T12:00",
        "2026-11-02T12:00",
        ["2026-11-01T01:30", "2026-11-02T01:30"],
        id="utc-november",
    ),
]


@pytest.mark.parametrize(("expression", "zone", "after", "until", "expected"), DST_CASES)
def test_daylight_saving_transitions_follow_the_rule(
    expression: str, zone: str, after: str, until: str, expected: list[str]
) -> None:
    fires = CronSchedule(expression, zone).fires_between(utc(after), utc(until), 100)

    assert fires == [utc(t) for t in expected]


@pytest.mark.parametrize("day", ["2026-03-08", "2026-03-29", "2026-04-05", "2026-10-04", "2026-10-25", "2026-11-01"])
def test_an_hourly_utc_job_fires_24_times_on_every_transition_day(day: str) -> None:
    start = utc(f"{day}T00:00") - timedelta(seconds=1)

    fires = CronSchedule("0 * * * *", "UTC").fires_between(start, start + timedelta(days=1), 100)

    assert len(fires) == 24
    assert all(b - a == timedelta(hours=1) for a, b in zip(fires, fires[1:], strict=False))


def test_after_the_first_occurrence_the_repeated_wall_time_waits_for_the_next_day() -> None:
    # Given 01:10 EST, inside the repeated hour, after 01:30 EDT has already fired
    schedule = CronSchedule("30 1 * * *", "America/New_York")

    assert schedule.next_after(utc("2026-11-01T06:10")) == utc("2026-11-02T06:30")


def test_a_per_second_schedule_skips_the_whole_repeated_hour() -> None:
    schedule = CronSchedule("* * * * * *", "America/New_York")

    # 01:59:01..01:59:59 EDT (59 fires), nothing from 01:00:00 EST, then 02:00:00..02:01:00 EST (61 fires)
    assert schedule.count_between(utc("2026-11-01T05:59"), utc("2026-11-01T07:01")) == 120


def test_a_per_second_schedule_fires_once_for_the_whole_gap() -> None:
    schedule = CronSchedule("0 * * * * *", "America/New_York")

    # 01:51..01:59 EST (9 fires), 02:00..02:59 and 03:00 collapse into 07:00Z (1), 03:01..03:10 EDT (10)
    assert schedule.count_between(utc("2026-03-08T06:50"), utc("2026-03-08T07:10")) == 20


@pytest.mark.parametrize(
    ("wall", "zone", "instant"),
    [
        pytest.param("2026-03-08T02:30", "America/New_York", "2026-03-08T07:00", id="gap-maps-to-end-of-gap"),
        pytest.param("2026-03-08T01:59:59", "America/New_York", "2026-03-08T06:59:59", id="just-before-gap"),
        pytest.param("2026-11-01T01:30", "America/New_York", "2026-11-01T05:30", id="overlap-maps-to-first"),
        pytest.param("2026-10-04T02:15", "Australia/Lord_Howe", "2026-10-03T15:30", id="half-hour-gap"),
        pytest.param("2026-07-01T12:00", "Europe/Berlin", "2026-07-01T10:00", id="ordinary-summer-time"),
    ],
)
def test_a_wall_time_maps_to_one_instant(wall: str, zone: str, instant: str) -> None:
    assert wall_to_instant(datetime.fromisoformat(wall), load_zone(zone)) == utc(instant)


# --- fires_between, count_between -------------------------------------------------------------------


def test_fires_between_excludes_the_start_and_includes_the_end() -> None:
    schedule = CronSchedule("0 * * * *")

    fires = schedule.fires_between(utc("2026-01-01T00:00"), utc("2026-01-01T03:00"), 10)

    assert fires == [utc("2026-01-01T01:00"), utc("2026-01-01T02:00"), utc("2026-01-01T03:00")]


def test_fires_between_stops_at_its_limit_keeping_the_oldest() -> None:
    schedule = CronSchedule("* * * * *")

    fires = schedule.fires_between(utc("2026-01-01T00:00"), utc("2026-01-02T00:00"), 3)

    assert fires == [utc("2026-01-01T00:01"), utc("2026-01-01T00:02"), utc("2026-01-01T00:03")]


def test_fires_between_an_empty_window_is_empty() -> None:
    schedule = CronSchedule("0 0 * * *")

    assert schedule.fires_between(utc("2026-01-01T01:00"), utc("2026-01-01T23:00"), 10) == []
    assert schedule.count_between(utc("2026-01-01T01:00"), utc("2026-01-01T01:00")) == 0


@pytest.mark.parametrize(
    ("expression", "zone", "after", "until", "count"),
    [
        pytest.param("*/5 * * * *", "UTC", "2026-01-01T00:00", "2026-01-01T01:00", 12, id="every-5-min-for-an-hour"),
        # local days: 2026-03-08 runs 05:00Z..04:00Z (23 h), 2026-11-01 runs 04:00Z..05:00Z (25 h)
        pytest.param(
            "0 * * * *",
            "America/New_York",
            "2026-03-08T04:59:59",
            "2026-03-09T03:59:59",
            23,
            id="new-york-spring-day-has-23-hourly-fires",
        ),
        pytest.param(
            "0 * * * *",
            "America/New_York",
            "2026-11-01T03:59:59",
            "2026-11-02T04:59:59",
            24,
            id="new-york-fall-day-has-24-hourly-fires-not-25",
        ),
        pytest.param("0 0 * * *", "Europe/Berlin", "2026-01-01T00:00", "2027-01-01T00:00", 365, id="daily-for-a-year"),
    ],
)
def test_count_between_counts_every_fire_in_the_window(
    expression: str, zone: str, after: str, until: str, count: int
) -> None:
    assert CronSchedule(expression, zone).count_between(utc(after), utc(until)) == count


def test_count_between_stops_at_its_cap() -> None:
    schedule = CronSchedule("* * * * *")

    assert schedule.count_between(utc("2026-01-01T00:00"), utc("2026-02-01T00:00"), cap=50) == 50
