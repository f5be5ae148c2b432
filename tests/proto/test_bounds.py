"""Bounds on a submission (issue 13): what is accepted can never crash a consumer later.

Each hostile body below was accepted before ``proto.bounds`` and then broke the scheduler, the
runner or a decoder; now it is refused at the edge, naming its field.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import bounds, codec, events, streams, subjects, tasks
from proto.errors import FieldError
from proto.retry import backoff
from tests.proto.test_task_spec import API_TASK, CODE_TASK, body, submit

SCHEDULED = {**API_TASK, "task_type": "scheduled", "cron_expression": "0 * * * *"}


def nested(depth: int, leaf: bytes = b"1", kind: str = "list") -> bytes:
    """JSON of ``depth`` nested lists (or objects), built as bytes: no encoder recursion involved."""
    if kind == "list":
        return b"[" * depth + leaf + b"]" * depth
    return b'{"k":' * depth + leaf + b"}" * depth


def with_raw(base: dict[str, Any], field: str, raw: bytes) -> bytes:
    """``base`` as JSON with ``field`` set to the raw JSON ``raw``."""
    return body(base)[:-1] + b', "' + field.encode() + b'": ' + raw + b"}"


def deep_value(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


HOSTILE = [
    pytest.param(
        body(API_TASK, start_deadline_seconds=1e12), "start_deadline_seconds", id="start-deadline-beyond-any-datetime"
    ),
    pytest.param(
        body(API_TASK, max_retries=1, retry_delay_seconds=1e12, retry_delay_max_seconds=1e12),
        "retry_delay_seconds",
        id="retry-delay-beyond-any-datetime",
    ),
    pytest.param(
        body(API_TASK, max_retries=1, retry_delay_max_seconds=1e12),
        "retry_delay_max_seconds",
        id="retry-delay-cap-beyond-any-datetime",
    ),
    pytest.param(body(API_TASK, timeout=1e12), "timeout", id="timeout-beyond-a-year"),
    pytest.param(body(CODE_TASK, cpus=1e-10), "cpus", id="cpus-that-round-to-no-limit"),
    pytest.param(body(CODE_TASK, cpus=0.009), "cpus", id="cpus-below-a-hundredth"),
    pytest.param(body(CODE_TASK, memory_mb=16), "memory_mb", id="memory-too-small-to-start-python"),
    pytest.param(with_raw(API_TASK, "data", nested(980)), "data", id="data-980-lists-deep"),
    pytest.param(with_raw(API_TASK, "data", nested(10_000, kind="object")), "data", id="data-10000-objects-deep"),
    pytest.param(with_raw(API_TASK, "data", nested(33)), "data", id="data-33-deep"),
    pytest.param(with_raw(CODE_TASK, "args", nested(980)), "args", id="args-980-deep"),
    pytest.param(with_raw(CODE_TASK, "kwargs", b'{"x": ' + nested(2000) + b"}"), "kwargs", id="kwargs-2000-deep"),
    pytest.param(with_raw(API_TASK, "headers", b'{"X": ' + nested(2000) + b"}"), "headers", id="headers-2000-deep"),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="0 * * * *", max_runs=10**12),
        "max_runs",
        id="max-runs-beyond-a-billion",
    ),
    pytest.param(body(SCHEDULED, start_at="9999-12-31T23:00:00Z"), "start_at", id="start-at-near-datetime-max"),
    pytest.param(body(SCHEDULED, end_at="9999-12-31T23:00:00Z"), "end_at", id="end-at-near-datetime-max"),
    pytest.param(body(CODE_TASK, function_name="f" * 201), "function_name", id="function-name-too-long"),
    pytest.param(body(SCHEDULED, timezone="A" * 65), "timezone", id="timezone-too-long"),
    pytest.param(body(SCHEDULED, cron_expression="0 " * 101), "cron_expression", id="cron-expression-too-long"),
    pytest.param(body(API_TASK, method="G" * 17), "method", id="method-too-long"),
    pytest.param(body(API_TASK, headers={"X": "v" * 8193}), "headers", id="header-value-too-long"),
    pytest.param(body(API_TASK, headers={"X" * 257: "v"}), "headers", id="header-name-too-long"),
    pytest.param(body(API_TASK, headers={f"X-{i}": "v" for i in range(51)}), "headers", id="too-many-headers"),
    pytest.param(body(CODE_TASK, requirements=["a" * 201]), "requirements", id="requirement-too-long"),
    pytest.param(body(CODE_TASK, args=list(range(257))), "args", id="too-many-args"),
    pytest.param(body(CODE_TASK, kwargs={f"k{i}": i for i in range(257)}), "kwargs", id="too-many-kwargs"),
    pytest.param(body(CODE_TASK, kwargs={"k" * 201: 1}), "kwargs", id="kwargs-key-too-long"),
    pytest.param(body(API_TASK, expected_status=[200] * 65), "expected_status", id="too-many-expected-statuses"),
    pytest.param(
        body(CODE_TASK, args=["x" * 600_000], kwargs={"y": "y" * 600_000}),
        "kwargs",
        id="args-and-kwargs-over-a-mebibyte",
    ),
    pytest.param(body(API_TASK, data="x" * (bounds.MAX_VALUE_BYTES + 1)), "data", id="data-over-a-mebibyte"),
]


@pytest.mark.parametrize(("data", "field"), HOSTILE)
def test_a_hostile_submission_is_refused_naming_its_field(data: bytes, field: str) -> None:
    with pytest.raises(FieldError) as raised:
        submit(data)

    assert (raised.value.field, raised.value.code) == (field, "invalid_field"), raised.value.message


def test_a_deep_value_is_refused_before_the_decoder_recurses_into_it() -> None:
    # 100 000 levels: msgspec itself would raise RecursionError on any Python version
    with pytest.raises(FieldError) as raised:
        codec.decode_spec(with_raw(API_TASK, "data", nested(100_000)))

    assert raised.value.field == "data"
    assert str(bounds.MAX_NESTING_DEPTH) in raised.value.message


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    spec = submit(body(API_TASK, data={"text": "[[[[{{{{" * 100, "quoted": '\\"[[[[' * 100}))

    assert spec.data["text"].startswith("[[[[")


def test_unbalanced_brackets_are_refused_as_invalid_json() -> None:
    with pytest.raises(FieldError) as raised:
        codec.decode_spec(with_raw(API_TASK, "data", b"[" * 50_000 + b"}"))

    assert raised.value.code == "invalid_json"


GOOD = [
    pytest.param(with_raw(API_TASK, "data", nested(bounds.MAX_NESTING_DEPTH)), id="data-at-max-depth"),
    pytest.param(with_raw(CODE_TASK, "args", nested(bounds.MAX_NESTING_DEPTH)), id="args-at-max-depth"),
    pytest.param(
        with_raw(CODE_TASK, "kwargs", b'{"x": ' + nested(bounds.MAX_NESTING_DEPTH - 1, kind="object") + b"}"),
        id="kwargs-at-max-depth",
    ),
    pytest.param(body(CODE_TASK, cpus=0.01, memory_mb=32), id="smallest-sandbox"),
    pytest.param(
        body(
            API_TASK,
            max_retries=20,
            retry_delay_seconds=86400,
            retry_backoff=10,
            retry_delay_max_seconds=86400,
            start_deadline_seconds=366 * 86400.0,
        ),
        id="longest-waits",
    ),
    pytest.param(body(CODE_TASK, args=list(range(256)), kwargs={f"k{i}": i for i in range(256)}), id="most-arguments"),
]


@pytest.mark.parametrize("data", GOOD)
def test_a_submission_at_the_bounds_is_accepted(data: bytes) -> None:
    assert submit(data).name


def test_the_nesting_walk_needs_no_recursion() -> None:
    assert bounds.nesting_depth(deep_value(100_000)) == bounds.MAX_NESTING_DEPTH + 1
    assert bounds.nesting_depth({"a": [1, {"b": []}], "c": 2}) == 4
    assert bounds.nesting_depth("scalar") == 0


durations = st.floats(min_value=0, max_value=1e300, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    delay=durations,
    cap=durations,
    factor=st.floats(min_value=1, max_value=1e6),
    retries=st.integers(0, 25),
    deadline=st.floats(min_value=1e-9, max_value=1e300),
)
def test_every_accepted_timing_yields_a_representable_time(
    delay: float, cap: float, factor: float, retries: int, deadline: float
) -> None:
    try:
        spec = submit(
            body(
                SCHEDULED,
                max_retries=retries,
                retry_delay_seconds=delay,
                retry_backoff=factor,
                retry_delay_max_seconds=cap,
                start_deadline_seconds=deadline,
                end_at="2999-12-31T00:00:00Z",
            )
        )
    except FieldError:
        return
    latest = bounds.LATEST_INSTANT
    for retry in range(1, spec.max_retries + 2):
        assert latest + backoff(spec, retry) > latest - timedelta(days=1)
    assert latest + timedelta(seconds=spec.start_deadline_seconds or 0) < datetime.max.replace(tzinfo=UTC)


def test_an_event_that_would_not_read_back_is_refused_before_publishing() -> None:
    # built in-process, so msgspec's bounds never ran: the read-back check is the last guard
    spec = tasks.TaskSpec(
        name="x", task_type="immediate", function_code="def f():\n    return 1\n", function_name="f", memory_mb=1
    )
    event = events.TaskSubmitted(event_id="e", occurred_at=datetime.now(UTC), task_id="t", spec=spec)

    with pytest.raises(FieldError) as raised:
        codec.accepted_event(event)

    assert raised.value.code == "invalid_field" and "memory_mb" in raised.value.message


def test_an_event_too_deep_to_encode_is_refused_not_raised() -> None:
    spec = tasks.TaskSpec(name="x", task_type="immediate", api_url="http://a/", data=deep_value(50_000))
    event = events.TaskSubmitted(event_id="e", occurred_at=datetime.now(UTC), task_id="t", spec=spec)

    with pytest.raises(FieldError):
        codec.accepted_event(event)


def test_an_accepted_event_reads_back_equal() -> None:
    spec = submit(with_raw(API_TASK, "data", nested(bounds.MAX_NESTING_DEPTH, kind="object")))
    event = events.TaskSubmitted(event_id="e", occurred_at=datetime.now(UTC), task_id="t", spec=spec)

    data, decoded = codec.accepted_event(event)

    assert decoded == event and json.loads(data)["spec"]["data"] == spec.data
    assert msgspec.json.decode(data)["type"] == "task_submitted"


def _uuid7_at(unix_seconds: float) -> str:
    return str(uuid.UUID(int=int(unix_seconds * 1000) << 80 | 0x7 << 76 | 0x123 << 64 | 0b10 << 62 | 12345))


@pytest.mark.parametrize(
    ("age_seconds", "accepted"),
    [
        (0.0, True),
        (bounds.SUBMISSION_ID_MAX_AGE_SECONDS - 1, True),
        (bounds.SUBMISSION_ID_MAX_AGE_SECONDS + 1, False),  # a repeat JetStream may no longer recognise
        (-bounds.SUBMISSION_ID_MAX_SKEW_SECONDS + 1, True),  # the gateway's clock a little ahead
        (-bounds.SUBMISSION_ID_MAX_SKEW_SECONDS - 1, False),
    ],
)
def test_a_submission_id_is_accepted_only_inside_the_duplicate_window(age_seconds: float, accepted: bool) -> None:
    now = 1_800_000_000.0
    submission_id = _uuid7_at(now - age_seconds)
    if accepted:
        bounds.check_submission_id(submission_id, now)
    else:
        with pytest.raises(FieldError) as refused:
            bounds.check_submission_id(submission_id, now)
        assert refused.value.field == "Taskmesh-Submission-Id"


def test_the_window_for_submission_ids_fits_inside_the_tasks_streams_duplicate_window() -> None:
    window = streams.streams()[subjects.STREAM_TASKS].config.duplicate_window
    assert window > bounds.SUBMISSION_ID_MAX_AGE_SECONDS + bounds.SUBMISSION_ID_MAX_SKEW_SECONDS
