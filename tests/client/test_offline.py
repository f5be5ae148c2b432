"""What the client refuses before or without a gateway: functions that cannot travel, non-JSON arguments, bad URLs."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

import pytest

import taskmesh
from taskmesh import functions
from taskmesh._http import UNANSWERED_RETRY_SECONDS, LogEvent, server_sent_events
from tests.client import tasks

NOWHERE = "http://127.0.0.1:9"
"""A gateway that is not there: these checks must fail before any request is made."""


def test_a_function_reading_a_module_global_is_refused_at_decoration_naming_it() -> None:
    tm = taskmesh.Client(NOWHERE)
    with pytest.raises(
        taskmesh.FunctionNotPortable,
        match=r"global 'THRESHOLD' \(int\).*move 'THRESHOLD' inside "
        r"over_threshold, or pass it as an argument",
    ):
        tm.function(tasks.over_threshold)


def test_a_closure_variable_a_lambda_and_a_method_are_refused() -> None:
    tm = taskmesh.Client(NOWHERE)
    limit = 3

    def inner(x: int) -> bool:
        return x > limit

    with pytest.raises(taskmesh.FunctionNotPortable, match="'limit' from the function around it"):
        tm.function(inner)
    with pytest.raises(taskmesh.FunctionNotPortable, match="lambda"):
        tm.function(lambda: 1)

    class Holder:
        def method(self) -> int:
            return 1

    with pytest.raises(taskmesh.FunctionNotPortable, match="is a method"):
        tm.function(Holder.method)


def test_the_sent_source_is_the_function_without_decorators_plus_the_imports_it_uses() -> None:
    tm = taskmesh.Client(NOWHERE)
    code = tm.function(tasks.mean).source.function_code
    assert "from math import fsum" in code and "import json" not in code and "import time" not in code
    assert re.search(r"^def mean\(xs: list\[float\]\) -> float:\n    return fsum\(xs\) / len\(xs\)$", code, re.M)
    compile(code, "task.py", "exec")
    namespace: dict[str, object] = {}
    exec(code, namespace)  # the code runs on its own, as in the sandbox
    assert namespace["mean"]([1.0, 2.0]) == 1.5  # type: ignore[operator]


def test_arguments_that_are_not_json_fail_before_sending() -> None:
    tm = taskmesh.Client(NOWHERE)
    mean = tm.function(tasks.mean)
    with pytest.raises(
        taskmesh.ArgumentsNotJson, match=r"args\[0\]\[1\] is not a JSON value \(type datetime\); pass value.isoformat"
    ):
        mean.submit([1, datetime(2026, 1, 1)])
    with pytest.raises(taskmesh.ArgumentsNotJson, match="nan"):
        mean.submit([float("nan")])


def test_a_parameter_named_like_a_submit_option_is_refused() -> None:
    tm = taskmesh.Client(NOWHERE)
    with pytest.raises(taskmesh.FunctionNotPortable, match=r"parameter 'delay_seconds'.*rename"):
        tm.function(_clash)


def _clash(delay_seconds: float) -> float:
    return delay_seconds


def _jitter_clash(xs: list[float], jitter_seconds: float) -> float:
    return jitter_seconds


def test_a_parameter_named_jitter_seconds_is_refused_as_a_schedule_option() -> None:
    tm = taskmesh.Client(NOWHERE)
    with pytest.raises(taskmesh.FunctionNotPortable, match=r"parameter 'jitter_seconds'.*rename"):
        tm.function(_jitter_clash)


def test_flow_options_are_sent_only_when_given() -> None:
    tm = taskmesh.Client(NOWHERE)
    plain = tm.function(tasks.mean)
    assert plain.execution.fields() == {}  # the server's defaults apply (priority 3, no key, no hosts)
    keys = ["a", "b"]
    limited = tm.function(
        network=True,
        allow_hosts=["api.example.com"],
        concurrency_key=keys,
        max_concurrency=2,
        rate_limit="10/s",
        priority=5,
        fairness_key="tenant:1",
    )(tasks.mean)
    keys.append("c")  # the decorator kept its own copy
    spec = functions.code_spec(limited.source, limited.execution, ([1.0],), {}, **functions.trigger_fields(None))
    assert {key: spec[key] for key in ("allow_hosts", "concurrency_key", "max_concurrency")} == {
        "allow_hosts": ["api.example.com"],
        "concurrency_key": ["a", "b"],
        "max_concurrency": 2,
    }
    assert (spec["rate_limit"], spec["priority"], spec["fairness_key"]) == ("10/s", 5, "tenant:1")
    trigger = functions.schedule_fields("0 * * * *", None, jitter_seconds=30.0, max_runs=None)
    scheduled = functions.code_spec(plain.source, plain.execution, (), {}, **trigger)
    assert scheduled["jitter_seconds"] == 30.0 and "max_runs" not in scheduled and "priority" not in scheduled
    http = functions.http_spec("https://api.example.com/x", concurrency_key="k", priority=None, allow_hosts=None)
    assert http["concurrency_key"] == "k" and "priority" not in http and "allow_hosts" not in http


def test_an_unreachable_gateway_is_one_clear_error_after_the_retries() -> None:
    tm = taskmesh.Client(NOWHERE, submit_retry_seconds=0.5)
    with pytest.raises(taskmesh.GatewayUnreachable, match=r"not reachable at http://127\.0\.0\.1:9"):
        tm.function(tasks.mean).submit([1])
    with pytest.raises(taskmesh.GatewayUnreachable):
        tm.tasks()


def test_a_gateway_that_never_answered_is_an_error_within_seconds_not_the_whole_retry_budget() -> None:
    tm = taskmesh.Client(NOWHERE, submit_retry_seconds=60)
    started = time.monotonic()
    with pytest.raises(taskmesh.GatewayUnreachable, match="is `taskmesh up` running"):
        tm.http("http://127.0.0.1:9/")
    assert time.monotonic() - started < UNANSWERED_RETRY_SECONDS + 5


def test_a_url_that_can_never_work_fails_at_once_without_retries() -> None:
    tm = taskmesh.Client("localhost:5001", submit_retry_seconds=30)
    started = time.monotonic()
    with pytest.raises(taskmesh.GatewayUnreachable, match=r"'localhost:5001' is not a gateway URL such as http://"):
        tm.http("http://127.0.0.1:9/")
    assert time.monotonic() - started < 5


def test_a_followed_log_yields_each_chunk_once_even_when_the_stream_repeats_it() -> None:
    def chunk(attempt: int, seq: int, data: str) -> list[str]:
        body = json.dumps({"run_id": "r", "attempt": attempt, "seq": seq, "stream": "stdout", "data": data})
        return ["event: log", f"id: {attempt}:{seq}", f"data: {body}", ""]

    lines = [
        *chunk(1, 0, "a\n"),
        *chunk(1, 1, "b\n"),
        ": keepalive",
        "",
        *chunk(1, 0, "a\n"),
        *chunk(1, 1, "b\n"),
        *chunk(2, 0, "a again\n"),
        "event: end",
        'data: {"run_id": "r", "status": "succeeded"}',
        "",
    ]
    events = list(server_sent_events(lines))
    assert [e.data.get("data") for e in events if e.event == "log"] == ["a\n", "b\n", "a again\n"]
    assert events[-1] == LogEvent("end", {"run_id": "r", "status": "succeeded"})
