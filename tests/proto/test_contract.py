"""The contract is locked: every message round-trips, every name is valid, the schema export is current."""

from __future__ import annotations

import inspect
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from proto import api, codec, control, errors, events, flow, records, runs, schedules, schema, streams, subjects, tasks

ROOT = Path(__file__).resolve().parents[2]
TASK_ID = "0195f3a2-7c41-7d3e-9a10-4b2c8e6f1a23"
RUN_ID = runs.run_id_for(TASK_ID, runs.ONCE_SLOT)
INSTANCE_ID = "1a2b3c4d5e6f"
AT = datetime(2026, 3, 8, 6, 59, 59, 125000, tzinfo=UTC)

CODE_SPEC = tasks.TaskSpec(
    name="数据分析任务",
    task_type="scheduled",
    function_code="def analyze(x):\n    return x * 2\n",
    function_name="analyze",
    args=[21],
    kwargs={"scale": 1.5},
    requirements=["pandas==1.5.0"],
    cron_expression="0 30 2 * * *",
    timezone="America/New_York",
    start_at=AT,
    end_at=AT + timedelta(days=30),
    max_runs=10,
    overlap_policy="forbid",
    misfire_policy="run_all",
    start_deadline_seconds=60.0,
    timeout=120.0,
    isolated=True,
    network=True,
    memory_mb=256,
    cpus=1.0,
    max_retries=3,
    retry_delay_seconds=2.0,
    retry_backoff=3.0,
    retry_delay_max_seconds=60.0,
)
API_SPEC = tasks.TaskSpec(
    name="延时API请求",
    task_type="delayed",
    delay_seconds=300.0,
    api_url="https://httpbin.org/post",
    method="POST",
    headers={"Authorization": "Bearer x"},
    data={"message": "延时请求", "n": [1, None]},
    expected_status=[200, 201],
    timeout=30.0,
)
ERROR = runs.RunError(
    type="exception",
    message="ZeroDivisionError: division by zero",
    exc_type="ZeroDivisionError",
    traceback="Traceback (most recent call last): ...",
)
TIMINGS = runs.RunTimings(deps_install_ms=1200.5, start_ms=80.0, run_ms=12.25, total_ms=1300.0)
RUN_DUE = runs.RunDue(
    task_id=TASK_ID,
    run_id=RUN_ID,
    slot=runs.slot_for_fire(AT),
    spec=CODE_SPEC,
    scheduled_for=AT,
    queued_at=AT + timedelta(milliseconds=3),
    attempt=2,
    retry=1,
    deadline_at=AT + timedelta(minutes=1),
)
LOG_CHUNK = runs.LogChunk(task_id=TASK_ID, run_id=RUN_ID, attempt=1, seq=0, stream="stdout", data="hello\n", at=AT)
HEARTBEAT = control.Heartbeat(
    service="runner",
    instance_id=INSTANCE_ID,
    host="node-1",
    version="0.1.0",
    started_at=AT,
    sent_at=AT,
    leader=False,
    slots={"code": control.SlotUsage(total=4, busy=1), "api": control.SlotUsage(total=64, busy=0)},
    sandbox=control.SandboxStatus(usable=True, image="taskmesh-sandbox:py3.11", pool_ready=2),
    runs_finished=7,
)
TASK_RECORD = records.TaskRecord(
    id=TASK_ID,
    name=API_SPEC.name,
    kind="api",
    task_type="delayed",
    status="failed",
    spec=API_SPEC,
    created_at=AT,
    updated_at=AT,
    queued_at=AT,
    started_at=AT,
    finished_at=AT + timedelta(seconds=1),
    duration_ms=1000.0,
    result={"status": 500},
    error=ERROR,
    last_run=records.RunSummary(
        run_id=RUN_ID, attempt=1, status="failed", scheduled_for=AT, started_at=AT, finished_at=AT, duration_ms=1000.0
    ),
    next_run_at=None,
    run_count=1,
    idempotency_key="order-42",
    event_seq=17,
)
RUN_RECORD = records.RunRecord(
    task_id=TASK_ID,
    run_id=RUN_ID,
    slot=runs.ONCE_SLOT,
    status="succeeded",
    attempt=2,
    retry=1,
    scheduled_for=AT,
    queued_at=AT,
    started_at=AT,
    finished_at=AT,
    lag_ms=4.5,
    duration_ms=20.0,
    runner_id=INSTANCE_ID,
    result=[1, "two", {"three": 3.0}],
    exit_code=0,
    deps_cache_hit=True,
    timings=TIMINGS,
    log_bytes=6,
    attempts=[
        records.AttemptRecord(
            attempt=1,
            runner_id="r1",
            status="failed",
            started_at=AT,
            finished_at=AT,
            error_type="oom_killed",
            log_bytes=3,
        ),
        records.AttemptRecord(attempt=2, runner_id="r2", status="succeeded", started_at=AT, finished_at=AT),
    ],
)
HISTOGRAM = api.Histogram(bounds=[5.0, 10.0], counts=[1, 2, 3], sum=21.5, count=3)

EXAMPLES: list[Any] = [
    flow.WaitingRun(
        task_id=TASK_ID, run_id=RUN_ID, spec=API_SPEC, slot="once", scheduled_for=AT, since=AT, attempt=2, retry=1
    ),
    flow.Permit(task_id=TASK_ID, run_id=RUN_ID, attempt=1, keys=["partner", "tenant:acme"], granted_at=AT),
    flow.KeyLimit(key="partner", max_concurrency=2, rate_limit="10/s"),
    flow.SetLimitRequest(key="partner", max_concurrency=5),
    flow.LimitView(
        key="task:x",
        max_concurrency=None,
        rate_limit="5/s",
        source="task",
        running=0,
        waiting=3,
        admitted_total=1,
        rate_waits_total=2,
    ),
    flow.LimitsReply(
        limits=[
            flow.LimitView(
                key="partner",
                max_concurrency=2,
                rate_limit="10/s",
                source="operator",
                running=2,
                waiting=18,
                admitted_total=40,
                rate_waits_total=3,
            )
        ]
    ),
    # tasks, errors
    CODE_SPEC,
    API_SPEC,
    tasks.Limits(max_timeout_seconds=600.0, allow_network=False),
    errors.ErrorBody(error=errors.ErrorDetail(code="invalid_field", message="task_type: bad", field="task_type")),
    errors.ErrorDetail(code="not_found", message="no task 42"),
    # task lifecycle events
    events.TaskSubmitted(event_id="e1", occurred_at=AT, task_id=TASK_ID, spec=CODE_SPEC, idempotency_key="k"),
    events.TaskCancelled(event_id="e2", occurred_at=AT, task_id=TASK_ID, reason="no longer needed"),
    events.TaskDeleted(event_id="e3", occurred_at=AT, task_id=TASK_ID, cancel_running=False),
    events.SchedulePaused(event_id="e4", occurred_at=AT, task_id=TASK_ID),
    events.ScheduleResumed(event_id="e5", occurred_at=AT, task_id=TASK_ID),
    events.ScheduleTriggered(event_id="e6", occurred_at=AT, task_id=TASK_ID),
    # schedule bookkeeping events
    events.ScheduleUpdated(
        event_id="e7",
        occurred_at=AT,
        task_id=TASK_ID,
        state="active",
        next_run_at=AT,
        fired_count=3,
        missed_count=2,
        skipped_count=1,
        last_fire_at=AT,
    ),
    events.SlotSkipped(event_id="e8", occurred_at=AT, task_id=TASK_ID, scheduled_for=AT, reason="overlap forbid"),
    events.SlotsMissed(
        event_id="e9",
        occurred_at=AT,
        task_id=TASK_ID,
        count=5,
        first=AT,
        last=AT + timedelta(hours=4),
        policy="run_once",
        caught_up=1,
    ),
    # runs
    RUN_DUE,
    runs.RunQueued(
        event_id="e10",
        occurred_at=AT,
        task_id=TASK_ID,
        run_id=RUN_ID,
        slot=runs.ONCE_SLOT,
        scheduled_for=AT,
        attempt=1,
        retry=0,
        deadline_at=AT + timedelta(minutes=1),
    ),
    runs.RunQueued(
        event_id="e10b",
        occurred_at=AT,
        task_id=TASK_ID,
        run_id=RUN_ID,
        slot="cron:1",
        scheduled_for=AT,
        schedule=runs.ScheduleView(
            next_run_at=AT + timedelta(seconds=1), fired_count=4, missed_count=1, skipped_count=2
        ),
    ),
    runs.ScheduleView(next_run_at=AT, fired_count=1),
    runs.RunStarted(
        event_id="e11",
        occurred_at=AT,
        task_id=TASK_ID,
        run_id=RUN_ID,
        attempt=1,
        runner_id=INSTANCE_ID,
        scheduled_for=AT,
    ),
    runs.Execution(status="succeeded", result={"rows": 3}, exit_code=0, deps_cache_hit=True, timings=TIMINGS),
    runs.RunFinished(
        event_id="e12",
        occurred_at=AT,
        task_id=TASK_ID,
        run_id=RUN_ID,
        attempt=1,
        runner_id=INSTANCE_ID,
        status="failed",
        slot=runs.ONCE_SLOT,
        scheduled_for=AT,
        started_at=AT,
        result=None,
        error=ERROR,
        exit_code=1,
        deps_cache_hit=False,
        timings=TIMINGS,
        output_truncated=True,
        log_bytes=1 << 20,
        will_retry=True,
        retry=1,
        retry_at=AT + timedelta(seconds=2),
    ),
    runs.RunFinished(
        event_id="e13",
        occurred_at=AT,
        task_id=TASK_ID,
        run_id=RUN_ID,
        attempt=2,
        runner_id=INSTANCE_ID,
        status="succeeded",
        result={"answer": 42, "items": [1.5, "x", None]},
    ),
    runs.RunCancelRequested(event_id="e14", occurred_at=AT, task_id=TASK_ID, run_id=RUN_ID, reason="replace"),
    ERROR,
    runs.RunError(type="http_status", message="HTTP 503", status_code=503),
    TIMINGS,
    LOG_CHUNK,
    runs.DeadLetter(task_id=TASK_ID, run_id=RUN_ID, attempt=6, deliveries=6, reason="poison", at=AT, due=RUN_DUE),
    # control
    control.CancelRun(task_id=TASK_ID, run_id=RUN_ID, reason="task deleted"),
    control.CancelRun(task_id=TASK_ID),
    control.RunnerPing(nonce=bytes(range(control.PING_NONCE_BYTES)), run_id=RUN_ID),
    control.RunnerPing(nonce=bytes(control.PING_NONCE_BYTES)),
    control.RunnerPong(answer="holding", signature=bytes(control.PONG_SIGNATURE_BYTES)),
    HEARTBEAT,
    control.SlotUsage(total=4, busy=4),
    control.SandboxStatus(usable=False, detail="Docker客户端初始化失败"),
    # records
    TASK_RECORD,
    RUN_RECORD,
    records.RunSummary(run_id=RUN_ID, status="running"),
    records.AttemptRecord(attempt=1),
    # timers
    schedules.OnceTimer(task_id=TASK_ID, spec=API_SPEC, due_at=AT),
    schedules.RetryTimer(
        task_id=TASK_ID,
        spec=API_SPEC,
        due_at=AT,
        run_id=RUN_ID,
        slot=runs.ONCE_SLOT,
        attempt=2,
        retry=1,
        scheduled_for=AT,
    ),
    schedules.CronTimer(
        task_id=TASK_ID,
        spec=CODE_SPEC,
        due_at=AT,
        state="paused",
        fired_count=4,
        missed_count=1,
        skipped_count=2,
        last_fire_at=AT,
        active_runs=[RUN_ID],
    ),
    # requests and replies
    api.TaskRef(id=TASK_ID),
    api.SubmitAccepted(id=TASK_ID, status="pending", task=TASK_RECORD, replayed=True),
    api.ListTasksRequest(
        status="running",
        kind="code",
        task_type="scheduled",
        name="数据",
        created_after=AT,
        created_before=AT + timedelta(days=1),
        limit=500,
        cursor=TASK_ID,
    ),
    api.TaskPage(tasks=[TASK_RECORD], next_cursor=TASK_ID),
    api.WaitTaskRequest(id=TASK_ID, timeout_seconds=10.0),
    api.WaitReply(done=False, task=TASK_RECORD),
    api.CancelTaskRequest(id=TASK_ID, reason="stop"),
    api.DeleteTaskRequest(id=TASK_ID, cancel_running=False),
    api.DeleteReply(id=TASK_ID, deleted=True, runs_removed=3),
    api.ListRunsRequest(id=TASK_ID, limit=10, cursor=RUN_ID),
    api.RunPage(runs=[RUN_RECORD], next_cursor=None),
    api.RunRef(id=TASK_ID, run_id=RUN_ID),
    api.RunVerdict(verdict="cancelled"),
    api.RunVerdictsRequest(runs=[api.RunRef(id="t-1", run_id="once"), api.RunRef(id="t-2", run_id="once")]),
    api.RunVerdicts(verdicts=[api.RunVerdict(verdict="run"), api.RunVerdict(verdict="deleted")]),
    api.GetLogsRequest(id=TASK_ID, run_id=RUN_ID, attempt=2, after=10),
    api.LogsReply(task_id=TASK_ID, run_id=RUN_ID, attempt=1, chunks=[LOG_CHUNK], finished=True, truncated=True),
    api.ScheduleSummary(
        id=TASK_ID,
        name="定时计算任务",
        kind="code",
        status="active",
        cron_expression="0 0 * * *",
        timezone="UTC",
        next_run_at=AT,
        last_run={"run_id": RUN_ID},
        fired_count=1,
        missed_count=0,
        skipped_count=0,
        created_at=AT,
    ),
    api.ScheduleList(schedules=[]),
    api.LedgerRequest(id=TASK_ID, limit=20),
    api.LedgerEntry(scheduled_for=AT, state="missed", reason="no scheduler ran", count=3),
    api.LedgerEntry(scheduled_for=AT, state="succeeded", run_id=RUN_ID, lag_ms=3.5),
    api.Ledger(
        id=TASK_ID,
        entries=[api.LedgerEntry(scheduled_for=AT, state="skipped")],
        fired_count=1,
        missed_count=2,
        skipped_count=3,
    ),
    api.StatsRequest(),
    api.Percentiles(p50=12.5, p95=99.0, count=20),
    HISTOGRAM,
    api.QueueDepth(code_pending=1, api_pending=2, code_in_flight=3, api_in_flight=4),
    api.Stats(
        tasks_total=3,
        tasks_by_status={"running": 1, "succeeded": 2},
        tasks_by_kind={"code": 3},
        tasks_by_trigger={"immediate": 3},
        runs_total=4,
        runs_by_status={"succeeded": 4},
        runs_per_minute=[0] * 59 + [4],
        success_rate=1.0,
        duration_ms=api.Percentiles(),
        duration_histogram=HISTOGRAM,
        schedule_lag_histogram=HISTOGRAM,
        queue=api.QueueDepth(),
        runners=[HEARTBEAT],
        services=[HEARTBEAT],
        stale_outcomes_rejected=1,
        dead_letters=2,
    ),
    api.DeadLetterList(dead_letters=[]),
    api.StoreHealth(ready=True, tasks=3, services=[HEARTBEAT]),
    api.TriggerReply(task=TASK_RECORD, run_id=RUN_ID),
    api.DependencyHealth(status="degraded", detail="no runner with a usable sandbox", count=0),
    api.Health(status="ok", version="0.1.0", checks={"nats": api.DependencyHealth(status="ok")}, runners=[HEARTBEAT]),
]

ABSTRACT_BASES = {events.Event, schedules.Timer, api.Request}
"""Bases that are never sent themselves; their subclasses are."""


def proto_structs() -> set[type]:
    """Every public Struct class defined in a proto module."""
    found = set()
    for module in (api, control, errors, events, flow, records, runs, schedules, tasks):
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, msgspec.Struct)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found.add(value)
    return found - ABSTRACT_BASES


def example_id(example: Any) -> str:
    return type(example).__name__


def test_every_proto_struct_has_a_round_trip_example() -> None:
    missing = proto_structs() - {type(example) for example in EXAMPLES}

    assert not missing, f"add an example to EXAMPLES for: {sorted(t.__name__ for t in missing)}"


@pytest.mark.parametrize("message", EXAMPLES, ids=example_id)
def test_a_message_round_trips_through_the_codec(message: Any) -> None:
    data = codec.encode(message)

    assert codec.decode(type(message), data) == message
    assert codec.encode(codec.decode(type(message), data)) == data


UNIONS = [
    (events.TaskEvent, codec.task_event_decoder),
    (events.ScheduleEvent, codec.run_event_decoder),
    (runs.RunEvent, codec.run_event_decoder),
    (schedules.AnyTimer, codec.decoder(schedules.AnyTimer)),
]


@pytest.mark.parametrize(
    "message",
    [m for m in EXAMPLES if any(isinstance(m, union.__args__) for union, _ in UNIONS)],
    ids=example_id,
)
def test_a_tagged_message_decodes_through_its_union_as_its_own_type(message: Any) -> None:
    decoder = next(d for union, d in UNIONS if isinstance(message, union.__args__))

    decoded = decoder.decode(codec.encode(message))

    assert type(decoded) is type(message)
    assert decoded == message


@pytest.mark.parametrize(
    ("message", "decoder"),
    [
        (RUN_DUE, codec.run_due_decoder),
        (LOG_CHUNK, codec.log_chunk_decoder),
        (HEARTBEAT, codec.heartbeat_decoder),
        (control.CancelRun(task_id=TASK_ID, run_id=RUN_ID), codec.cancel_decoder),
    ],
    ids=example_id,
)
def test_the_prebuilt_decoders_read_what_the_encoder_writes(message: Any, decoder: msgspec.json.Decoder) -> None:
    assert decoder.decode(codec.encode(message)) == message


def test_events_carry_their_type_tag_on_the_wire() -> None:
    event = runs.RunStarted(event_id="e", occurred_at=AT, task_id=TASK_ID, run_id=RUN_ID, attempt=1, runner_id="r")

    assert msgspec.json.decode(codec.encode(event))["type"] == "run_started"


def test_an_event_with_a_field_from_a_newer_version_still_decodes() -> None:
    event = events.TaskCancelled(event_id="e", occurred_at=AT, task_id=TASK_ID)
    newer = codec.encode(event)[:-1] + b',"added_later":{"x":1}}'

    assert codec.task_event_decoder.decode(newer) == event


def test_a_request_with_an_unknown_field_is_an_error_naming_it() -> None:
    with pytest.raises(errors.FieldError) as raised:
        codec.decode_request(api.ListTasksRequest, b'{"stauts": "running"}')

    assert raised.value.field == "stauts"


def test_an_empty_request_body_means_an_empty_object() -> None:
    assert codec.decode_request(api.StatsRequest, b"") == api.StatsRequest()


def test_an_error_reply_decodes_to_its_error_body() -> None:
    body = errors.error_body("not_found", "no such task", "id")

    assert codec.error_reply(codec.encode(body)) == body
    assert codec.error_reply(b"not json").error.code == "unavailable"


# --- subjects -----------------------------------------------------------------------------------


def is_valid_subject(subject: str) -> bool:
    """A NATS subject or filter: non-empty tokens without whitespace; ``*`` and ``>`` only as whole
    tokens, ``>`` only last."""
    if not subject or any(c.isspace() for c in subject):
        return False
    tokens = subject.split(".")
    for position, token in enumerate(tokens):
        if not token:
            return False
        if ("*" in token or ">" in token) and token not in ("*", ">"):
            return False
        if token == ">" and position != len(tokens) - 1:
            return False
    return True


def covers(pattern: str, subject: str) -> bool:
    """Whether every subject matching ``subject`` (which may itself have wildcards) matches ``pattern``."""
    wanted, given = pattern.split("."), subject.split(".")
    for position, token in enumerate(wanted):
        if token == ">":
            return len(given) > position
        if position >= len(given):
            return False
        if given[position] == ">":
            return False
        if token != "*" and token != given[position]:
            return False
    return len(given) == len(wanted)


def overlap(first: str, second: str) -> bool:
    """Whether some concrete subject matches both patterns."""
    a, b = first.split("."), second.split(".")
    for position in range(max(len(a), len(b))):
        x = a[position] if position < len(a) else None
        y = b[position] if position < len(b) else None
        if x == ">" or y == ">":
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != "*" and y != "*" and x != y:
            return False
    return True


@pytest.mark.parametrize(
    ("subject", "valid"),
    [
        ("taskmesh.task.abc.submitted", True),
        ("taskmesh.run.*.*.finished", True),
        ("taskmesh.>", True),
        ("taskmesh..x", False),
        ("taskmesh.x.", False),
        ("taskmesh.a b", False),
        ("taskmesh.>.x", False),
        ("taskmesh.ab*", False),
        ("", False),
    ],
)
def test_the_subject_checker_itself_knows_valid_from_invalid(subject: str, valid: bool) -> None:
    assert is_valid_subject(subject) is valid


@pytest.mark.parametrize(
    ("pattern", "subject", "covered", "overlapping"),
    [
        ("taskmesh.run.>", "taskmesh.run.*.*.finished", True, True),
        ("taskmesh.run.*.*.finished", "taskmesh.run.t.r.finished", True, True),
        ("taskmesh.run.*.*.finished", "taskmesh.run.t.r.started", False, False),
        ("taskmesh.run.*.*.finished", "taskmesh.run.>", False, True),
        ("taskmesh.work.code", "taskmesh.work.>", False, True),
        ("taskmesh.api.>", "taskmesh.task.>", False, False),
        ("taskmesh.log.>", "taskmesh.log", False, False),
    ],
)
def test_the_subject_set_checkers_themselves_follow_nats_wildcards(
    pattern: str, subject: str, covered: bool, overlapping: bool
) -> None:
    assert covers(pattern, subject) is covered
    assert overlap(pattern, subject) is overlapping
    assert overlap(subject, pattern) is overlapping


@pytest.mark.parametrize("subject", subjects.ALL_SUBJECT_CONSTANTS)
def test_every_subject_constant_is_a_valid_nats_subject(subject: str) -> None:
    assert is_valid_subject(subject), subject


def test_every_subject_constant_is_listed_for_the_contract_tests() -> None:
    defined = {
        value for name, value in vars(subjects).items() if isinstance(value, str) and value.startswith("taskmesh.")
    }

    assert defined == set(subjects.ALL_SUBJECT_CONSTANTS)


TASK_KINDS = [t.subject_kind for t in events.TaskEvent.__args__]
RUN_KINDS = [t.subject_kind for t in runs.RunEvent.__args__]
SCHEDULE_KINDS = [t.subject_kind for t in events.ScheduleEvent.__args__]

BUILT_SUBJECTS = (
    [subjects.task_event(TASK_ID, kind) for kind in TASK_KINDS]
    + [subjects.run_event(TASK_ID, RUN_ID, kind) for kind in RUN_KINDS]
    + [subjects.schedule_event(TASK_ID, kind) for kind in SCHEDULE_KINDS]
    + [
        subjects.run_events_of_task(TASK_ID),
        subjects.log_chunks(TASK_ID, RUN_ID),
        subjects.log_chunks_of_task(TASK_ID),
        subjects.dead_letter(TASK_ID),
        subjects.heartbeat("runner", INSTANCE_ID),
        subjects.runner_ping(INSTANCE_ID),
        subjects.run_event(TASK_ID, "*", "finished"),
    ]
)


@pytest.mark.parametrize("subject", BUILT_SUBJECTS)
def test_every_built_subject_is_a_valid_nats_subject(subject: str) -> None:
    assert is_valid_subject(subject), subject


@pytest.mark.parametrize(
    "key",
    [
        subjects.run_key(TASK_ID, RUN_ID),
        subjects.log_key(TASK_ID, RUN_ID, 2, 7),
        schedules.OnceTimer(task_id=TASK_ID, spec=API_SPEC, due_at=AT).key,
        schedules.CronTimer(task_id=TASK_ID, spec=CODE_SPEC, due_at=AT).key,
        schedules.RetryTimer(
            task_id=TASK_ID, spec=API_SPEC, due_at=AT, run_id=RUN_ID, slot="once", attempt=1, retry=1, scheduled_for=AT
        ).key,
        TASK_ID,
        subjects.LEASE_SCHEDULER,
    ],
)
def test_every_bucket_key_is_a_valid_kv_key(key: str) -> None:
    assert re.fullmatch(r"[-/_=.a-zA-Z0-9]+", key) and not key.startswith(".") and not key.endswith("."), key
    assert ".." not in key


def test_log_keys_sort_in_sequence_order() -> None:
    keys = [subjects.log_key(TASK_ID, RUN_ID, 1, seq) for seq in (0, 2, 10, 100, 9)]

    assert sorted(keys) == [subjects.log_key(TASK_ID, RUN_ID, 1, seq) for seq in (0, 2, 9, 10, 100)]


# --- streams, consumers, buckets ------------------------------------------------------------------

STREAMS = streams.streams()
NAME = re.compile(r"[A-Za-z0-9_-]+")


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_stream_has_a_valid_name_and_valid_subjects(name: str) -> None:
    config = STREAMS[name].config

    assert config.name == name and NAME.fullmatch(name)
    assert config.subjects and all(is_valid_subject(s) for s in config.subjects)


def test_no_two_streams_capture_the_same_subject() -> None:
    pairs = [
        (a, sa, b, sb)
        for a in STREAMS
        for b in STREAMS
        if a < b
        for sa in STREAMS[a].config.subjects
        for sb in STREAMS[b].config.subjects
    ]

    assert [p for p in pairs if overlap(p[1], p[3])] == []


@pytest.mark.parametrize("name", sorted(streams.CONSUMERS))
def test_every_consumer_reads_an_existing_stream_and_its_filter_is_covered(name: str) -> None:
    spec = streams.CONSUMERS[name]
    stream_subjects = STREAMS[spec.stream].config.subjects

    assert spec.config.durable_name == name and NAME.fullmatch(name)
    if spec.config.filter_subject is not None:
        assert is_valid_subject(spec.config.filter_subject)
        assert any(covers(s, spec.config.filter_subject) for s in stream_subjects), (
            f"{name} filters {spec.config.filter_subject!r}, not within {spec.stream} {stream_subjects}"
        )


@pytest.mark.parametrize("name", sorted(streams.buckets()))
def test_every_bucket_has_a_valid_name(name: str) -> None:
    assert streams.buckets()[name].config.bucket == name and NAME.fullmatch(name)


STORED = [
    (subjects.STREAM_TASKS, [subjects.task_event(TASK_ID, kind) for kind in TASK_KINDS]),
    (
        subjects.STREAM_EVENTS,
        [subjects.run_event(TASK_ID, RUN_ID, kind) for kind in RUN_KINDS]
        + [subjects.schedule_event(TASK_ID, kind) for kind in SCHEDULE_KINDS],
    ),
    (subjects.STREAM_WORK, [subjects.WORK_CODE, subjects.WORK_API]),
    (subjects.STREAM_LOGS, [subjects.log_chunks(TASK_ID, RUN_ID)]),
    (subjects.STREAM_DEAD_LETTERS, [subjects.dead_letter(TASK_ID)]),
]


@pytest.mark.parametrize(("stream", "published"), STORED, ids=[s for s, _ in STORED])
def test_every_published_event_lands_in_its_stream(stream: str, published: list[str]) -> None:
    for subject in published:
        assert any(covers(s, subject) for s in STREAMS[stream].config.subjects), (stream, subject)


@pytest.mark.parametrize(
    "subject",
    [
        subjects.SUBMIT_TASK,
        subjects.API_ALL,
        subjects.CANCEL_RUNS,
        subjects.PRESENCE_PROBE,
        subjects.HEARTBEATS_ALL,
        subjects.heartbeat("store", INSTANCE_ID),
        subjects.runner_ping(INSTANCE_ID),
    ],
)
def test_no_stream_captures_a_request_or_control_subject(subject: str) -> None:
    # A captured request subject would be answered by a PubAck instead of the store.
    captured = [(name, s) for name, spec in STREAMS.items() for s in spec.config.subjects if overlap(s, subject)]

    assert captured == []


def test_the_scheduler_runs_consumer_sees_only_finished_runs() -> None:
    finished = subjects.run_event(TASK_ID, RUN_ID, "finished")
    started = subjects.run_event(TASK_ID, RUN_ID, "started")
    flt = streams.CONSUMERS[subjects.CONSUMER_SCHEDULER_RUNS].config.filter_subject

    assert covers(flt, finished) and not covers(flt, started)


# --- JSON Schema export -----------------------------------------------------------------------------


def test_the_committed_json_schemas_are_what_proto_generates_now() -> None:
    committed = {path.name: path.read_bytes() for path in (ROOT / "proto" / "schema").glob("*.json")}
    generated = schema.schemas()

    stale = sorted(name for name in generated if committed.get(name) != generated[name])
    extra = sorted(set(committed) - set(generated))
    assert not stale and not extra, (
        f"proto/schema is out of date (changed or missing: {stale}; no longer generated: {extra}); "
        "run `make schema` and commit the result"
    )


def test_run_finished_and_run_record_declare_the_execution_facts_as_execution_does() -> None:
    # They carry them flat (public JSON) and copy them by name: a fact added to one and not the
    # others, or declared with another type or default, would be dropped on the way.
    declared = {f.name: (f.type, f.default) for f in msgspec.structs.fields(runs.Execution)}
    for carrier, names in ((runs.RunFinished, tuple(declared)), (records.RunRecord, runs.EXECUTION_FACTS)):
        fields = {f.name: (f.type, f.default) for f in msgspec.structs.fields(carrier)}
        for name in names:
            assert fields.get(name) == declared[name], f"{carrier.__name__}.{name}"


@pytest.mark.parametrize(
    ("task_id", "slot"),
    [
        (TASK_ID, runs.ONCE_SLOT),
        ("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "cron:1764979200000"),
        ("t", "trigger:évènement ✓"),
        ("", ""),
    ],
)
def test_a_run_id_is_the_uuid5_of_its_task_and_slot_as_every_earlier_version_named_it(task_id: str, slot: str) -> None:
    assert runs.run_id_for(task_id, slot) == str(uuid.uuid5(uuid.NAMESPACE_URL, f"taskmesh:{task_id}:{slot}"))
