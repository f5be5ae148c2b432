"""``taskmesh submit``: from flags, a JSON or YAML spec, a Python file; --wait and its exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Taskmesh
from tests.support import Api, TargetServer


async def test_submit_from_flags_creates_an_api_task_and_its_json_parses_back(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    result = await taskmesh("submit", "--api-url", f"{target.url}/hello", "--name", "ping", "--json")
    assert result.code == 0, result
    task = result.json()
    assert task["name"] == "ping" and task["kind"] == "api" and task["task_type"] == "immediate"
    shown = await taskmesh("show", task["id"], "--json")
    assert shown.code == 0, shown
    assert shown.json()["id"] == task["id"]


async def test_submit_wait_prints_the_result_and_exits_zero_when_the_task_succeeds(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    result = await taskmesh(
        "submit",
        "--api-url",
        f"{target.url}/echo",
        "--method",
        "post",
        "--data",
        '{"n": 1}',
        "-H",
        "X-Trace: cli",
        "--wait",
        "--json",
    )
    assert result.code == 0, result
    task = result.json()
    assert task["status"] == "succeeded"
    assert task["result"]["body"]["body"] == {"n": 1}
    assert target.headers[-1]["X-Trace"] == "cli"


async def test_submit_wait_shows_the_outcome_to_people(taskmesh: Taskmesh, target: TargetServer) -> None:
    result = await taskmesh("submit", "--api-url", f"{target.url}/hello", "--wait")
    assert result.code == 0, result
    assert "✓ succeeded" in result.stdout
    assert '"hello": "world"' in result.stdout


async def test_submit_wait_exits_one_when_the_task_fails(taskmesh: Taskmesh, target: TargetServer) -> None:
    result = await taskmesh("submit", "--api-url", f"{target.url}/status/500", "--wait")
    assert result.code == 1, result
    assert "✗ failed" in result.stdout
    assert "HTTP 500" in result.stdout


async def test_submit_wait_exits_four_when_the_wait_timeout_runs_out_first(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    result = await taskmesh(
        "submit", "--api-url", f"{target.url}/hello", "--delay", "600", "--wait", "--wait-timeout", "1", "--json"
    )
    assert result.code == 4, result
    assert result.json()["status"] == "pending"


async def test_submit_quiet_prints_only_the_task_id(taskmesh: Taskmesh, api: Api, target: TargetServer) -> None:
    result = await taskmesh("submit", "--api-url", f"{target.url}/hello", "-q")
    assert result.code == 0, result
    task_id = result.stdout.strip()
    assert (await api.task(task_id))["id"] == task_id


async def test_submit_reads_a_yaml_spec_and_flags_override_its_fields(
    taskmesh: Taskmesh, target: TargetServer, tmp_path: Path
) -> None:
    spec = tmp_path / "nightly.yaml"
    spec.write_text(
        f"name: nightly\ntask_type: scheduled\ncron_expression: '0 3 * * *'\n"
        f"timezone: Europe/Paris\napi_url: {target.url}/hello\n"
    )
    result = await taskmesh("submit", str(spec), "--name", "nightly report", "--json")
    assert result.code == 0, result
    task = result.json()
    assert task["name"] == "nightly report" and task["task_type"] == "scheduled" and task["status"] == "active"
    assert task["spec"]["timezone"] == "Europe/Paris"


async def test_submit_reads_a_json_spec_file(taskmesh: Taskmesh, target: TargetServer, tmp_path: Path) -> None:
    spec = tmp_path / "task.json"
    spec.write_text(json.dumps({"name": "from json", "task_type": "immediate", "api_url": f"{target.url}/hello"}))
    result = await taskmesh("submit", str(spec), "--wait", "--json")
    assert result.code == 0, result
    assert result.json()["name"] == "from json"
    assert result.json()["status"] == "succeeded"


async def test_submit_runs_a_function_from_a_python_file_with_its_arguments(
    taskmesh: Taskmesh, tmp_path: Path, docker_engine: None
) -> None:
    job = tmp_path / "job.py"
    job.write_text(
        "def helper(x):\n    return x * 2\n\ndef main(n, mode='slow'):\n    return {'n': helper(n), 'mode': mode}\n"
    )
    result = await taskmesh(
        "submit", str(job), "--function", "main", "--arg", "21", "--kwarg", "mode=fast", "--wait", "--json"
    )
    assert result.code == 0, result
    task = result.json()
    assert task["name"] == "main"
    assert task["result"] == {"n": 42, "mode": "fast"}


async def test_a_python_file_with_one_function_needs_no_function_flag(
    taskmesh: Taskmesh, tmp_path: Path, docker_engine: None
) -> None:
    job = tmp_path / "calc.py"
    job.write_text("def calculate():\n    return 1 + 2 * 3\n")
    result = await taskmesh("submit", str(job), "--wait", "--json")
    assert result.code == 0, result
    assert result.json()["result"] == 7


async def test_requirements_from_flags_are_kept_in_the_spec(taskmesh: Taskmesh, api: Api, tmp_path: Path) -> None:
    # delayed by an hour and deleted: the requirements are checked, never installed
    job = tmp_path / "job.py"
    job.write_text("import six\n\ndef main():\n    return six.__version__\n")
    result = await taskmesh(
        "submit", str(job), "--requirement", "six==1.17.0", "-r", "tzdata", "--delay", "3600", "--json"
    )
    assert result.code == 0, result
    task = result.json()
    assert task["task_type"] == "delayed"
    assert sorted(task["spec"]["requirements"]) == ["six==1.17.0", "tzdata"]
    assert (await taskmesh("delete", task["id"])).code == 0


async def test_flow_control_and_egress_flags_reach_the_spec_and_a_bad_rate_is_named(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    url = f"{target.url}/hello"
    flow = ("--concurrency-key", "cli-partner", "--max-concurrency", "2", "--rate-limit", "10/s")
    flow += ("--priority", "5", "--fairness-key", "tenant-a", "--allow-host", "127.0.0.1")
    result = await taskmesh("submit", "--api-url", url, *flow, "--wait", "--json")
    assert result.code == 0, result
    spec = result.json()["spec"]
    assert (spec["concurrency_key"], spec["max_concurrency"], spec["rate_limit"]) == ("cli-partner", 2, "10/s")
    assert (spec["priority"], spec["fairness_key"], spec["allow_hosts"]) == (5, "tenant-a", ["127.0.0.1"])

    two = await taskmesh("submit", "--api-url", url, "--concurrency-key", "a", "--concurrency-key", "b", "--json")
    assert two.code == 0, two
    assert two.json()["spec"]["concurrency_key"] == ["a", "b"]

    scheduled = await taskmesh("submit", "--api-url", url, "--cron", "0 * * * *", "--jitter", "90", "--json")
    assert scheduled.code == 0, scheduled
    assert scheduled.json()["spec"]["jitter_seconds"] == 90
    assert (await taskmesh("delete", scheduled.json()["id"])).code == 0

    bad = await taskmesh("submit", "--api-url", url, "--concurrency-key", "k", "--rate-limit", "fast", "--json")
    assert bad.code == 3, bad
    assert bad.json()["error"]["field"] == "rate_limit"


async def test_an_idempotency_key_makes_a_second_submission_return_the_first_task(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    args = ("submit", "--api-url", f"{target.url}/hello", "--idempotency-key", "order-42", "-q")
    first, second = await taskmesh(*args), await taskmesh(*args)
    assert first.code == second.code == 0
    assert first.stdout == second.stdout


async def test_an_invalid_field_is_one_line_naming_the_field_and_exit_code_three(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    result = await taskmesh("submit", "--api-url", f"{target.url}/hello", "--set", "task_type=soon")
    assert result.code == 3, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: task_type: Invalid enum value 'soon' (invalid_field, field task_type)")
    assert "Traceback" not in result.stderr


async def test_an_invalid_field_with_json_prints_the_error_body(taskmesh: Taskmesh, target: TargetServer) -> None:
    result = await taskmesh("submit", "--api-url", f"{target.url}/hello", "--timeout", "-1", "--json")
    assert result.code == 3, result
    assert result.json()["error"]["field"] == "timeout"
    assert result.json()["error"]["code"] == "invalid_field"


async def test_submit_without_anything_to_run_is_a_usage_error(taskmesh: Taskmesh) -> None:
    result = await taskmesh("submit", "--name", "nothing")
    assert result.code == 2, result
    assert "nothing to run" in result.stderr
