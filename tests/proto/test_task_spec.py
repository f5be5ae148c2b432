"""Task submissions: every seed example is accepted, and each kind of bad input names its field.

A submission goes through ``proto.codec.decode_spec`` (types, unknown fields) and then
``proto.tasks.check_spec`` (rules the types cannot express), exactly as the store does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from proto import codec, tasks
from proto.errors import FieldError

LIMITS = tasks.Limits()

CODE_TASK: dict[str, Any] = {
    "name": "calc",
    "task_type": "immediate",
    "function_code": "def calculate(x=1):\n    return x + 2 * 3\n",
    "function_name": "calculate",
}
API_TASK: dict[str, Any] = {
    "name": "ping",
    "task_type": "immediate",
    "api_url": "https://example.com/status",
    "method": "GET",
}
DROP = object()
"""In a change set: remove this field from the base body."""


def body(base: dict[str, Any], **changes: Any) -> bytes:
    """``base`` with ``changes`` applied (``DROP`` removes a field), as JSON bytes."""
    merged = {**base, **changes}
    return json.dumps({k: v for k, v in merged.items() if v is not DROP}).encode()


def submit(payload: bytes | str, *, route: str = "/api/tasks", limits: tasks.Limits = LIMITS) -> tasks.TaskSpec:
    """Decode and check a body as the store does for ``route``; return the spec as stored."""
    data = payload.encode() if isinstance(payload, str) else payload
    spec = codec.decode_spec(data)
    if route == "/api/tasks/isolated":
        spec = tasks.normalised(spec, isolated=True)
    tasks.check_spec(spec, limits)
    return spec


# The curl -d bodies of the seed documents (shared/seeds/*.txt), verbatim, with their endpoint.
SEED_BODIES = [
    pytest.param(
        "/api/tasks/isolated",
        r"""{
    "name": "数据分析任务",
    "task_type": "immediate",
    "function_code": "import pandas as pd\ndef analyze():\n    df = pd.DataFrame({\"A\": [1,2,3,4,5]})\n    return df.describe().to_dict()",
    "function_name": "analyze",
    "requirements": ["pandas==1.5.0", "numpy==1.24.0"]
  }""",
        id="isolated-code-immediate-pandas",
    ),
    pytest.param(
        "/api/tasks/isolated",
        r"""{
    "name": "延时数据分析",
    "task_type": "delayed",
    "delay_seconds": 60,
    "function_code": "import numpy as np\ndef generate_data():\n    return np.random.rand(10).tolist()",
    "function_name": "generate_data",
    "requirements": ["numpy==1.24.0"]
  }""",
        id="isolated-code-delayed-numpy",
    ),
    pytest.param(
        "/api/tasks/isolated",
        r"""{
    "name": "定时数据收集",
    "task_type": "scheduled",
    "cron_expression": "0 */6 * * *",
    "function_code": "import requests\ndef collect_data():\n    response = requests.get(\"https://api.example.com/data\")\n    return response.json()",
    "function_name": "collect_data",
    "requirements": ["requests==2.28.0"]
  }""",
        id="isolated-code-scheduled-requests",
    ),
    pytest.param(
        "/api/tasks/isolated",
        r"""{
    "name": "隔离GET请求",
    "task_type": "immediate",
    "api_url": "https://httpbin.org/get",
    "method": "GET",
    "timeout": 30,
    "requirements": ["requests==2.28.0"]
  }""",
        id="isolated-api-get",
    ),
    pytest.param(
        "/api/tasks/isolated",
        r"""{
    "name": "隔离POST请求",
    "task_type": "immediate",
    "api_url": "https://httpbin.org/post",
    "method": "POST",
    "data": {"message": "Hello from isolated task"},
    "timeout": 30,
    "requirements": ["requests==2.28.0"]
  }""",
        id="isolated-api-post",
    ),
    pytest.param(
        "/api/tasks",
        r"""{
    "name": "立即计算任务",
    "task_type": "immediate",
    "function_code": "def calculate():\n    return 1 + 2 * 3",
    "function_name": "calculate"
  }""",
        id="code-immediate",
    ),
    pytest.param(
        "/api/tasks",
        r"""{
    "name": "延时计算任务",
    "task_type": "delayed",
    "delay_seconds": 60,
    "function_code": "def calculate():\n    return 1 + 2 * 3",
    "function_name": "calculate"
  }""",
        id="code-delayed",
    ),
    pytest.param(
        "/api/scheduled-tasks",
        r"""{
    "name": "定时计算任务",
    "task_type": "scheduled",
    "cron_expression": "0 0 * * *",
    "function_code": "def daily_report():\n    return \"日报生成完成\"",
    "function_name": "daily_report"
  }""",
        id="code-scheduled",
    ),
    pytest.param(
        "/api/tasks",
        r"""{
    "name": "立即API请求",
    "task_type": "immediate",
    "api_url": "https://httpbin.org/get",
    "method": "GET",
    "timeout": 30
  }""",
        id="api-immediate-get",
    ),
    pytest.param(
        "/api/tasks",
        r"""{
    "name": "延时API请求",
    "task_type": "delayed",
    "delay_seconds": 300,
    "api_url": "https://httpbin.org/post",
    "method": "POST",
    "data": {"message": "延时请求"},
    "timeout": 30
  }""",
        id="api-delayed-post",
    ),
    pytest.param(
        "/api/scheduled-tasks",
        r"""{
    "name": "定时API请求",
    "task_type": "scheduled",
    "cron_expression": "*/5 * * * *",
    "api_url": "https://httpbin.org/status/200",
    "method": "GET",
    "timeout": 30
  }""",
        id="api-scheduled-get",
    ),
]


@pytest.mark.parametrize(("route", "payload"), SEED_BODIES)
def test_every_seed_example_is_accepted(route: str, payload: str) -> None:
    spec = submit(payload, route=route)

    sent = json.loads(payload)
    assert spec.name == sent["name"]
    assert spec.task_type == sent["task_type"]
    assert spec.kind == ("code" if "function_code" in sent else "api")
    if route == "/api/scheduled-tasks":
        assert spec.task_type == "scheduled"
    if route == "/api/tasks/isolated":
        assert spec.isolated and spec.sandboxed


def test_an_isolated_api_task_without_requirements_gets_the_seed_default_requests() -> None:
    spec = submit(json.dumps(API_TASK), route="/api/tasks/isolated")

    assert spec.requirements == ["requests"]


def test_the_method_is_stored_upper_case() -> None:
    spec = tasks.normalised(submit(json.dumps({**API_TASK, "method": "post"})))

    assert spec.method == "POST"


BAD_BODIES = [
    # (body, field the error must name, code)
    pytest.param(b'{"name": "x", "task_type": ', None, "invalid_json", id="truncated-json"),
    pytest.param(b"{name: 'x'}", None, "invalid_json", id="json-with-bare-keys"),
    pytest.param(b"", None, "invalid_json", id="empty-body"),
    pytest.param(b"[]", None, "invalid_field", id="array-instead-of-object"),
    pytest.param(body(API_TASK, task_type="soon"), "task_type", "invalid_field", id="unknown-task-type"),
    pytest.param(body(API_TASK, task_type=DROP), "task_type", "invalid_field", id="missing-task-type"),
    pytest.param(body(API_TASK, name=DROP), "name", "invalid_field", id="missing-name"),
    pytest.param(body(API_TASK, name=""), "name", "invalid_field", id="empty-name"),
    pytest.param(body(API_TASK, name="n" * 201), "name", "invalid_field", id="name-too-long"),
    pytest.param(
        body(CODE_TASK, function_name=DROP), "function_name", "invalid_field", id="code-task-without-function-name"
    ),
    pytest.param(
        body(CODE_TASK, function_code=DROP), "function_code", "invalid_field", id="function-name-without-function-code"
    ),
    pytest.param(
        body({"name": "x", "task_type": "immediate", "method": "POST", "data": {"a": 1}}),
        "api_url",
        "invalid_field",
        id="api-task-without-api-url",
    ),
    pytest.param(
        body({"name": "x", "task_type": "immediate"}), "function_code", "invalid_field", id="neither-code-nor-url"
    ),
    pytest.param(
        body(CODE_TASK, api_url="https://example.com/"), "api_url", "invalid_field", id="both-function-code-and-api-url"
    ),
    pytest.param(body(API_TASK, api_url="ftp://example.com/file"), "api_url", "invalid_field", id="ftp-url"),
    pytest.param(body(API_TASK, api_url="file:///etc/passwd"), "api_url", "invalid_field", id="file-url"),
    pytest.param(body(API_TASK, api_url="example.com/path"), "api_url", "invalid_field", id="url-without-scheme"),
    pytest.param(body(API_TASK, api_url="http://"), "api_url", "invalid_field", id="url-without-host"),
    pytest.param(
        body(API_TASK, api_url="http://example.com:99999/"), "api_url", "invalid_field", id="url-with-bad-port"
    ),
    pytest.param(
        body(API_TASK, api_url="http://example.com/a b"), "api_url", "invalid_field", id="url-with-whitespace"
    ),
    pytest.param(body(API_TASK, method="BREW"), "method", "invalid_field", id="unknown-http-method"),
    pytest.param(body(API_TASK, headers={"bad header": "x"}), "headers", "invalid_field", id="header-name-with-space"),
    pytest.param(
        body(API_TASK, headers={"X-A": "a\r\nInjected: yes"}),
        "headers",
        "invalid_field",
        id="header-value-with-newline",
    ),
    pytest.param(
        body(API_TASK, task_type="delayed", delay_seconds=-5),
        "delay_seconds",
        "invalid_field",
        id="negative-delay-seconds",
    ),
    pytest.param(
        body(API_TASK, task_type="delayed"), "delay_seconds", "invalid_field", id="delayed-without-delay-seconds"
    ),
    pytest.param(
        body(API_TASK, delay_seconds=10), "delay_seconds", "invalid_field", id="delay-seconds-on-an-immediate-task"
    ),
    pytest.param(
        body(API_TASK, task_type="delayed", delay_seconds="60"),
        "delay_seconds",
        "invalid_field",
        id="delay-seconds-as-string",
    ),
    pytest.param(body(API_TASK, timeout="30"), "timeout", "invalid_field", id="timeout-as-string"),
    pytest.param(body(API_TASK, headers={"X-Count": 1}), "headers", "invalid_field", id="header-value-not-string"),
    pytest.param(body(CODE_TASK, args={"x": 1}), "args", "invalid_field", id="args-as-object"),
    pytest.param(body(CODE_TASK, kwargs=[1]), "kwargs", "invalid_field", id="kwargs-as-array"),
    pytest.param(body(API_TASK, max_retries=True), "max_retries", "invalid_field", id="max-retries-as-bool"),
    pytest.param(body(API_TASK, max_retries=21), "max_retries", "invalid_field", id="max-retries-above-20"),
    pytest.param(
        body(API_TASK, expected_status=[99]), "expected_status", "invalid_field", id="expected-status-below-100"
    ),
    pytest.param(body(API_TASK, frobnicate=1), "frobnicate", "invalid_field", id="unknown-field"),
    pytest.param(body(API_TASK, cron=1), "cron", "invalid_field", id="misspelt-cron-expression"),
    pytest.param(
        body(API_TASK, task_type="scheduled"),
        "cron_expression",
        "invalid_field",
        id="scheduled-without-cron-expression",
    ),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="61 * * * *"),
        "cron_expression",
        "invalid_field",
        id="cron-minute-out-of-range",
    ),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="* * *"),
        "cron_expression",
        "invalid_field",
        id="cron-with-three-fields",
    ),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="@every 5m"),
        "cron_expression",
        "invalid_field",
        id="cron-unknown-alias",
    ),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="0 0 30 2 *"),
        "cron_expression",
        "invalid_field",
        id="cron-that-never-fires",
    ),
    pytest.param(
        body(API_TASK, cron_expression="0 * * * *"),
        "cron_expression",
        "invalid_field",
        id="cron-expression-on-an-immediate-task",
    ),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="0 * * * *", timezone="Mars/Olympus"),
        "timezone",
        "invalid_field",
        id="unknown-timezone",
    ),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="0 * * * *", timezone=""),
        "timezone",
        "invalid_field",
        id="empty-timezone",
    ),
    pytest.param(
        body(
            API_TASK,
            task_type="scheduled",
            cron_expression="0 * * * *",
            start_at="2026-02-01T00:00:00Z",
            end_at="2026-01-01T00:00:00Z",
        ),
        "end_at",
        "invalid_field",
        id="end-at-before-start-at",
    ),
    pytest.param(body(API_TASK, max_runs=3), "max_runs", "invalid_field", id="max-runs-on-an-immediate-task"),
    # A time without a UTC offset cannot be compared with the scheduler's aware clock.
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="0 * * * *", start_at="2026-01-01T00:00:00"),
        "start_at",
        "invalid_field",
        id="start-at-without-utc-offset",
    ),
    pytest.param(
        body(
            API_TASK,
            task_type="scheduled",
            cron_expression="0 * * * *",
            start_at="2026-01-01T00:00:00Z",
            end_at="2026-02-01T00:00:00",
        ),
        "end_at",
        "invalid_field",
        id="end-at-without-utc-offset",
    ),
    pytest.param(
        body(CODE_TASK, function_code="def calculate(:\n    return 1"),
        "function_code",
        "invalid_field",
        id="syntax-error-in-function-code",
    ),
    pytest.param(body(CODE_TASK, function_code="   \n"), "function_code", "invalid_field", id="blank-function-code"),
    pytest.param(
        body(CODE_TASK, function_name="main"), "function_name", "invalid_field", id="function-name-not-defined"
    ),
    pytest.param(
        body(CODE_TASK, function_code="def outer():\n    def calculate():\n        return 1\n"),
        "function_name",
        "invalid_field",
        id="function-defined-only-inside-another",
    ),
    pytest.param(
        body(CODE_TASK, function_name="class"), "function_name", "invalid_field", id="function-name-is-a-keyword"
    ),
    pytest.param(
        body(CODE_TASK, function_name="not-an-identifier"),
        "function_name",
        "invalid_field",
        id="function-name-not-an-identifier",
    ),
    pytest.param(
        body(CODE_TASK, requirements=["https://evil.example/pkg.whl"]),
        "requirements",
        "invalid_field",
        id="requirement-is-a-url",
    ),
    pytest.param(
        body(CODE_TASK, requirements=["pkg @ https://evil.example/pkg.whl"]),
        "requirements",
        "invalid_field",
        id="requirement-with-direct-url",
    ),
    pytest.param(
        body(CODE_TASK, requirements=["--index-url x"]),
        "requirements",
        "invalid_field",
        id="requirement-is-an-index-url-option",
    ),
    pytest.param(
        body(CODE_TASK, requirements=["-r requirements.txt"]),
        "requirements",
        "invalid_field",
        id="requirement-is-a-requirements-file",
    ),
    pytest.param(
        body(CODE_TASK, requirements=["./local/path"]), "requirements", "invalid_field", id="requirement-is-a-path"
    ),
    pytest.param(
        body(CODE_TASK, requirements=["numpy; rm -rf /"]),
        "requirements",
        "invalid_field",
        id="requirement-with-shell-text",
    ),
    pytest.param(
        body(CODE_TASK, requirements=[f"pkg{i}" for i in range(51)]),
        "requirements",
        "invalid_field",
        id="too-many-requirements",
    ),
    pytest.param(
        body(API_TASK, requirements=["requests"]),
        "requirements",
        "invalid_field",
        id="requirements-on-a-plain-api-task",
    ),
    pytest.param(
        body(API_TASK, function_name="calculate"), "function_name", "invalid_field", id="function-name-on-an-api-task"
    ),
    pytest.param(body(API_TASK, args=[1]), "args", "invalid_field", id="args-on-an-api-task"),
    pytest.param(body(CODE_TASK, headers={"X-A": "b"}), "headers", "invalid_field", id="headers-on-a-code-task"),
    pytest.param(body(API_TASK, timeout=3600.5), "timeout", "invalid_field", id="timeout-above-maximum"),
    pytest.param(body(API_TASK, timeout=0), "timeout", "invalid_field", id="zero-timeout"),
    pytest.param(body(CODE_TASK, memory_mb=4096), "memory_mb", "invalid_field", id="memory-above-maximum"),
    pytest.param(body(CODE_TASK, memory_mb=8), "memory_mb", "invalid_field", id="memory-below-minimum"),
    pytest.param(body(CODE_TASK, cpus=2.5), "cpus", "invalid_field", id="cpus-above-maximum"),
    pytest.param(body(CODE_TASK, cpus=0), "cpus", "invalid_field", id="zero-cpus"),
    pytest.param(body(API_TASK, memory_mb=256), "memory_mb", "invalid_field", id="memory-on-a-plain-api-task"),
    pytest.param(body(API_TASK, network=True), "network", "invalid_field", id="network-on-a-plain-api-task"),
    pytest.param(
        body(API_TASK, allow_hosts=["https://example.com"]), "allow_hosts", "invalid_field", id="allow-host-with-scheme"
    ),
    pytest.param(
        body(API_TASK, allow_hosts=["example.com:443"]), "allow_hosts", "invalid_field", id="allow-host-with-port"
    ),
    pytest.param(body(API_TASK, allow_hosts=["*"]), "allow_hosts", "invalid_field", id="allow-host-bare-wildcard"),
    pytest.param(
        body(API_TASK, allow_hosts=["a.*.example.com"]), "allow_hosts", "invalid_field", id="allow-host-inner-wildcard"
    ),
    pytest.param(
        body(API_TASK, allow_hosts=["10.0.0.0/8"]), "allow_hosts", "invalid_field", id="allow-host-address-range"
    ),
    pytest.param(body(API_TASK, allow_hosts=[""]), "allow_hosts", "invalid_field", id="allow-host-empty"),
    pytest.param(
        body(API_TASK, allow_hosts=["a" * 254]), "allow_hosts", "invalid_field", id="allow-host-longer-than-dns"
    ),
    pytest.param(
        body(API_TASK, allow_hosts=[f"h{i}.example.com" for i in range(33)]),
        "allow_hosts",
        "invalid_field",
        id="too-many-allow-hosts",
    ),
    pytest.param(
        body(API_TASK, allow_hosts=["other.example.org"]),
        "allow_hosts",
        "invalid_field",
        id="api-url-host-outside-allow-hosts",
    ),
    pytest.param(
        body(CODE_TASK, allow_hosts=["example.com"]), "allow_hosts", "invalid_field", id="allow-hosts-without-network"
    ),
    pytest.param(body(API_TASK, jitter_seconds=5), "jitter_seconds", "invalid_field", id="jitter-on-a-one-shot-task"),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="0 * * * *", jitter_seconds=3600.5),
        "jitter_seconds",
        "invalid_field",
        id="jitter-above-an-hour",
    ),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="0 * * * *", jitter_seconds=-1),
        "jitter_seconds",
        "invalid_field",
        id="negative-jitter",
    ),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="*/10 * * * * *", jitter_seconds=10.5),
        "jitter_seconds",
        "invalid_field",
        id="jitter-longer-than-the-period",
    ),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="0,1 * * * *", jitter_seconds=90),
        "jitter_seconds",
        "invalid_field",
        id="jitter-longer-than-the-shortest-gap",
    ),
]


@pytest.mark.parametrize(("data", "field", "code"), BAD_BODIES)
def test_a_bad_submission_is_rejected_naming_its_field(data: bytes, field: str | None, code: str) -> None:
    with pytest.raises(FieldError) as raised:
        submit(data)

    assert (raised.value.field, raised.value.code) == (field, code), raised.value.message
    assert raised.value.message


def test_an_error_becomes_the_error_body_clients_see() -> None:
    with pytest.raises(FieldError) as raised:
        submit(body(API_TASK, task_type="soon"))

    assert codec.encode(raised.value.body()) == (
        b'{"error":{"code":"invalid_field","message":"task_type: Invalid enum value \'soon\'","field":"task_type"}}'
    )


GOOD_BODIES = [
    pytest.param(body(CODE_TASK, args=[1], kwargs={"y": [1, {"z": None}]}), id="code-with-args-and-kwargs"),
    pytest.param(
        body(CODE_TASK, requirements=["pandas==2.2.3", "numpy >= 1.24, <2", "requests[socks]~=2.31"]),
        id="requirements-with-versions-and-extras",
    ),
    pytest.param(body(CODE_TASK, function_code="from math import *\n"), id="star-import-may-define-the-function"),
    pytest.param(
        body(CODE_TASK, function_code="import sys\nif sys:\n    def calculate():\n        return 1\n"),
        id="conditionally-defined-function",
    ),
    pytest.param(body(CODE_TASK, function_code="calculate = lambda: 1\n"), id="function-bound-by-assignment"),
    pytest.param(body(CODE_TASK, function_code="async def calculate():\n    return 1\n"), id="async-function"),
    pytest.param(body(CODE_TASK, timeout=3600, memory_mb=2048, cpus=2.0, network=True), id="limits-at-maximum"),
    pytest.param(body(API_TASK, task_type="delayed", delay_seconds=0), id="zero-delay"),
    pytest.param(
        body(API_TASK, method="patch", headers={"X-Trace": "1"}, expected_status=[200, 204]),
        id="lower-case-method-and-headers",
    ),
    pytest.param(body(API_TASK, api_url="http://[::1]:8080/path?q=1"), id="ipv6-literal-url"),
    pytest.param(
        body(
            API_TASK,
            task_type="scheduled",
            cron_expression="*/30 0 9 * * mon-fri",
            timezone="Europe/Berlin",
            start_at="2026-01-01T00:00:00Z",
            end_at="2026-12-31T00:00:00Z",
            max_runs=10,
            overlap_policy="forbid",
            misfire_policy="skip",
        ),
        id="scheduled-with-seconds-zone-window-and-policies",
    ),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="0 * * * *", jitter_seconds=3600),
        id="hourly-with-an-hour-of-jitter",
    ),
    pytest.param(
        body(API_TASK, task_type="scheduled", cron_expression="* * * * * *", jitter_seconds=1),
        id="per-second-with-a-second-of-jitter",
    ),
    pytest.param(
        body(API_TASK, isolated=True, requirements=["httpx==0.28.1"], network=True, memory_mb=256),
        id="isolated-api-task-with-requirements",
    ),
    pytest.param(body(API_TASK, allow_hosts=["EXAMPLE.com", "*.example.org"]), id="allow-hosts-any-case"),
    pytest.param(body(API_TASK, allow_hosts=["*.com"]), id="allow-hosts-wildcard-covers-the-url"),
    pytest.param(body(CODE_TASK, network=True, allow_hosts=["pypi.org", "*.pythonhosted.org"]), id="code-allow-hosts"),
]


@pytest.mark.parametrize("data", GOOD_BODIES)
def test_a_valid_submission_is_accepted(data: bytes) -> None:
    spec = submit(data)

    assert spec.name


def test_lower_limits_set_by_the_operator_are_enforced() -> None:
    strict = tasks.Limits(max_timeout_seconds=10, max_memory_mb=128, max_cpus=0.5, allow_network=False)

    for change, field in [
        ({"timeout": 11}, "timeout"),
        ({"memory_mb": 256}, "memory_mb"),
        ({"cpus": 1.0}, "cpus"),
        ({"network": True}, "network"),
    ]:
        with pytest.raises(FieldError) as raised:
            submit(body(CODE_TASK, **change), limits=strict)
        assert raised.value.field == field


def test_requirements_are_normalised_into_a_stable_cache_key() -> None:
    assert tasks.normalise_requirements(["numpy >= 1.24", "pandas==2.2.3", "numpy>=1.24"]) == [
        "numpy>=1.24",
        "pandas==2.2.3",
    ]


def test_allow_hosts_match_exact_names_in_any_case_and_wildcards_only_subdomains() -> None:
    patterns = ["api.example.com", "*.files.example.org"]

    assert tasks.host_allowed("API.Example.com.", patterns)
    assert tasks.host_allowed("a.b.files.example.org", patterns)
    assert not tasks.host_allowed("files.example.org", patterns)
    assert not tasks.host_allowed("evilfiles.example.org", patterns)
    assert not tasks.host_allowed("api.example.com.evil.net", patterns)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"concurrency_key": ""}, "concurrency_key"),
        ({"concurrency_key": "has space"}, "concurrency_key"),
        ({"concurrency_key": []}, "concurrency_key"),
        ({"concurrency_key": ["a", "a"]}, "concurrency_key"),
        ({"concurrency_key": ["a", "b", "c", "d", "e"]}, "concurrency_key"),
        ({"concurrency_key": "k" * 129}, "concurrency_key"),
        ({"max_concurrency": 2}, "max_concurrency"),
        ({"concurrency_key": "k", "max_concurrency": 0}, "max_concurrency"),
        ({"rate_limit": "10 per second"}, "rate_limit"),
        ({"rate_limit": "0/s"}, "rate_limit"),
        ({"rate_limit": "99999/s"}, "rate_limit"),
        ({"priority": 0}, "priority"),
        ({"priority": 6}, "priority"),
        ({"fairness_key": "tenant-a"}, "fairness_key"),
        ({"concurrency_key": "k", "fairness_key": "a b"}, "fairness_key"),
    ],
)
def test_a_bad_flow_control_field_is_rejected_naming_it(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldError) as caught:
        tasks.check_spec(codec.decode_spec(body(API_TASK, **changes)), LIMITS)
    assert caught.value.field == field


def test_flow_control_fields_are_accepted_and_a_single_key_reads_as_a_list() -> None:
    spec = codec.decode_spec(
        body(
            API_TASK,
            concurrency_key="partner",
            max_concurrency=2,
            rate_limit="100/m",
            priority=5,
            fairness_key="tenant:acme",
        )
    )
    tasks.check_spec(spec, LIMITS)
    assert spec.concurrency_keys == ["partner"] and spec.limited
    rate_only = codec.decode_spec(body(API_TASK, rate_limit="1000/h"))
    tasks.check_spec(rate_only, LIMITS)
    assert rate_only.limited and rate_only.concurrency_keys == []
    assert not codec.decode_spec(body(API_TASK)).limited
