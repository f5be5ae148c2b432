"""Code tasks in Docker sandboxes, end to end: results, failures explained, logs, requirements.

One stack serves the whole module (the runner and its warm pool are shared); every test uses
its own tasks, and requirement tests use their own requirement sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Api, Stack, TargetServer, WheelServer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, wheel_server: WheelServer, docker_engine: None) -> Iterator[Stack]:
    running = Stack(
        tmp_path_factory.mktemp("sandbox"),
        env_extra={"TASKMESH_FIND_LINKS": wheel_server.url, "TASKMESH_POOL_SIZE": "2"},
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


def code(name: str, source: str, function: str, **extra: object) -> dict[str, object]:
    return {"name": name, "task_type": "immediate", "function_code": source, "function_name": function, **extra}


async def run(api: Api, body: dict[str, object], path: str = "/api/tasks") -> dict[str, object]:
    created = await api.submit(body, path=path)
    return await api.wait_final(created["id"], timeout=120)


async def test_the_seed_calculation_returns_its_value(api: Api) -> None:
    task = await run(api, code("立即计算任务", "def calculate():\n    return 1 + 2 * 3", "calculate"))
    assert task["status"] == "succeeded"
    assert task["result"] == 7


async def test_args_and_kwargs_reach_the_function_as_json(api: Api) -> None:
    source = "def combine(a, b, *, scale=1, label=''):\n    return {'sum': (a + b) * scale, 'label': label}"
    task = await run(api, code("args", source, "combine", args=[2, 3], kwargs={"scale": 10, "label": "ü"}))
    assert task["result"] == {"sum": 50, "label": "ü"}


async def test_async_functions_are_awaited(api: Api) -> None:
    source = "import asyncio\nasync def later():\n    await asyncio.sleep(0.01)\n    return 'done'"
    task = await run(api, code("async", source, "later"))
    assert task["result"] == "done"


async def test_an_exception_fails_the_task_with_the_users_traceback(api: Api) -> None:
    source = "def helper(x):\n    return 1 / x\n\ndef divide():\n    return helper(0)\n"
    task = await run(api, code("boom", source, "divide"))
    assert task["status"] == "failed"
    error = task["error"]
    assert error["type"] == "exception"
    assert error["exc_type"] == "ZeroDivisionError"
    assert 'File "task.py", line 5, in divide' in error["traceback"]
    assert 'File "task.py", line 2, in helper' in error["traceback"]
    assert "bootstrap" not in error["traceback"] and "<string>" not in error["traceback"]


async def test_a_return_value_that_is_not_json_fails_with_a_clear_message(api: Api) -> None:
    task = await run(api, code("object", "class Thing:\n    pass\n\ndef f():\n    return Thing()", "f"))
    assert task["status"] == "failed"
    assert task["error"]["type"] == "invalid_result"
    assert "not JSON-serialisable" in task["error"]["message"] and "Thing" in task["error"]["message"]


async def test_sets_tuples_and_nan_become_json(api: Api) -> None:
    task = await run(
        api, code("shapes", "def f():\n    return {'s': {3}, 't': (1, 2), 'n': float('nan'), 1: 'one'}", "f")
    )
    assert task["result"] == {"s": [3], "t": [1, 2], "n": None, "1": "one"}


async def test_a_name_that_is_not_callable_fails_as_function_not_found(api: Api) -> None:
    task = await run(api, code("not callable", "f = 3", "f"))
    assert task["error"]["type"] == "function_not_found"


async def test_a_syntax_error_is_rejected_at_submission(api: Api) -> None:
    response = await api.client.post("/api/tasks", json=code("bad", "def f(:\n  pass", "f"))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "function_code"
    assert "syntax error" in response.json()["error"]["message"]


async def test_a_missing_function_is_rejected_at_submission(api: Api) -> None:
    response = await api.client.post("/api/tasks", json=code("bad", "def f():\n  pass", "g"))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "function_name"


async def test_output_is_captured_as_the_runs_log_in_order(api: Api) -> None:
    source = (
        "import sys\ndef talk():\n    print('out 1')\n    print('err 1', file=sys.stderr)\n"
        "    print('out 2')\n    return 'ok'"
    )
    task = await run(api, code("talk", source, "talk"))
    logs = (await api.get(f"/api/tasks/{task['id']}/logs"))["chunks"]
    user = [(c["stream"], c["data"]) for c in logs if c["stream"] != "system"]
    text = {stream: "".join(d for s, d in user if s == stream) for stream in ("stdout", "stderr")}
    assert text == {"stdout": "out 1\nout 2\n", "stderr": "err 1\n"}


async def test_a_run_past_its_timeout_is_killed_and_timed_out(api: Api) -> None:
    task = await run(api, code("spin", "def spin():\n    while True:\n        pass", "spin", timeout=1.5))
    assert task["status"] == "timed_out"
    assert task["error"]["type"] == "timed_out"
    runs = await api.runs(task["id"])
    assert 1000 < runs[0]["duration_ms"] < 10_000


async def test_every_run_records_its_timings_and_exit_code(api: Api) -> None:
    task = await run(api, code("timed", "def f():\n    return 1", "f"))
    run_record = (await api.runs(task["id"]))[0]
    assert run_record["exit_code"] == 0
    assert run_record["timings"]["run_ms"] >= 0
    assert "start_ms" in run_record["timings"]
    assert run_record["deps_cache_hit"] is None  # no requirements


async def test_memory_above_the_limit_is_reported_as_oom_killed(api: Api) -> None:
    source = "def hog():\n    blocks = []\n    while True:\n        blocks.append(bytearray(16 * 1024 * 1024))"
    task = await run(api, code("hog", source, "hog", memory_mb=64))
    assert task["status"] == "failed"
    assert task["error"]["type"] == "oom_killed"
    assert (await api.runs(task["id"]))[0]["exit_code"] == 137


async def test_a_process_that_kills_itself_is_reported_with_its_signal(api: Api) -> None:
    source = "import os, signal\ndef die():\n    os.kill(os.getpid(), signal.SIGKILL)"
    task = await run(api, code("die", source, "die"))
    assert task["status"] == "failed"
    assert task["error"]["type"] in ("signal", "exit_code")
    assert (await api.runs(task["id"]))[0]["exit_code"] != 0


async def test_an_exit_without_result_is_reported_with_its_exit_code(api: Api) -> None:
    task = await run(api, code("exit", "import os\ndef leave():\n    os._exit(3)", "leave"))
    assert task["error"]["type"] == "exit_code"
    assert (await api.runs(task["id"]))[0]["exit_code"] == 3


async def test_limits_above_the_operator_maxima_are_rejected(api: Api) -> None:
    for field, value in (("memory_mb", 100_000), ("cpus", 64), ("timeout", 10**6)):
        response = await api.client.post("/api/tasks", json=code("big", "def f():\n  pass", "f", **{field: value}))
        assert response.status_code == 400, field
        assert response.json()["error"]["field"] == field


# --- requirements ---------------------------------------------------------------------------


async def test_requirements_are_installed_once_and_reused(api: Api, stack: Stack) -> None:
    source = "import six\ndef version():\n    return six.__version__"
    first = await run(api, code("six 1", source, "version", requirements=["six==1.17.0"]))
    second = await run(
        api, code("six 2", source, "version", requirements=["six == 1.17.0"])
    )  # same set, spelled differently
    assert first["status"] == second["status"] == "succeeded"
    assert first["result"] == second["result"] == "1.17.0"
    first_run, second_run = (await api.runs(first["id"]))[0], (await api.runs(second["id"]))[0]
    assert first_run["deps_cache_hit"] is False and first_run["timings"]["deps_install_ms"] > 0
    assert second_run["deps_cache_hit"] is True
    sets = [p for p in (stack.root / "deps").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(sets) == 1


async def test_concurrent_first_uses_of_a_requirement_set_build_it_once(api: Api) -> None:
    source = "import numpy\ndef total():\n    return int(numpy.arange(10).sum())"
    created = await asyncio.gather(
        *(api.submit(code(f"np {i}", source, "total", requirements=["numpy==2.2.6"])) for i in range(3))
    )
    tasks = [await api.wait_final(c["id"], timeout=180) for c in created]
    assert [t["result"] for t in tasks] == [45, 45, 45]
    hits = sorted([(await api.runs(t["id"]))[0]["deps_cache_hit"] for t in tasks])
    assert hits == [False, True, True]


async def test_an_unknown_requirement_fails_as_dependency_install_failed(api: Api) -> None:
    task = await run(api, code("nope", "def f():\n    return 1", "f", requirements=["no-such-package-taskmesh==1.0"]))
    assert task["status"] == "failed"
    assert task["error"]["type"] == "dependency_install_failed"
    assert task["error"]["message"].startswith("dependency install failed:")
    assert "no-such-package-taskmesh" in task["error"]["message"]


async def test_the_seed_pandas_example_runs_with_current_versions(api: Api) -> None:
    # The seed pins pandas==1.5.0 / numpy==1.24.0, which have no wheels for the image's Python 3.11.
    source = (
        'import pandas as pd\ndef analyze():\n    df = pd.DataFrame({"A": [1,2,3,4,5]})\n'
        "    return df.describe().to_dict()"
    )
    task = await run(
        api,
        code("数据分析任务", source, "analyze", requirements=["pandas==2.2.3", "numpy==2.2.6"]),
        path="/api/tasks/isolated",
    )
    assert task["status"] == "succeeded", task["error"]
    assert task["result"]["A"]["mean"] == 3.0
    assert task["result"]["A"]["count"] == 5.0


async def test_the_seed_numpy_example_runs(api: Api) -> None:
    source = "import numpy as np\ndef generate_data():\n    return np.random.rand(10).tolist()"
    task = await run(
        api, code("延时数据分析", source, "generate_data", requirements=["numpy==2.2.6"]), path="/api/tasks/isolated"
    )
    assert task["status"] == "succeeded"
    assert len(task["result"]) == 10 and all(0 <= x < 1 for x in task["result"])


async def test_the_seed_machine_learning_example_runs(api: Api) -> None:
    source = Path(__file__).with_name("seed_train_model.py").read_text()
    task = await run(
        api,
        code("ml", source, "train_model", requirements=["scikit-learn==1.6.1", "numpy==2.2.6"]),
        path="/api/tasks/isolated",
    )
    assert task["status"] == "succeeded", task["error"]
    assert set(task["result"]) == {"model_score", "coefficients", "intercept"}
    assert len(task["result"]["coefficients"]) == 3


async def test_the_seed_sales_analysis_example_returns_numpy_and_date_values_as_json(api: Api) -> None:
    # It returns numpy integers and a dict keyed by dates: converted as pandas' own to_json would.
    source = Path(__file__).with_name("seed_sales.py").read_text()
    task = await run(api, code("sales", source, "analyze_sales_data", requirements=["pandas==2.2.3", "numpy==2.2.6"]))
    assert task["status"] == "succeeded", task["error"]
    result = task["result"]
    assert isinstance(result["total_sales"], int)
    assert set(result["sales_by_region"]) <= {"North", "South", "East", "West"}
    assert len(result["daily_sales"]) == 100 and "2023-01-01" in result["daily_sales"]
    assert sum(result["sales_by_region"].values()) == result["total_sales"]


# --- isolated API tasks -----------------------------------------------------------------------


async def test_an_isolated_api_task_makes_its_request_from_inside_a_sandbox(api: Api, target: TargetServer) -> None:
    task = await run(
        api,
        {
            "name": "隔离POST请求",
            "task_type": "immediate",
            "api_url": f"{target.url}/echo",
            "method": "POST",
            "data": {"message": "Hello from isolated task"},
            "timeout": 30,
        },
        path="/api/tasks/isolated",
    )
    assert task["status"] == "succeeded", task["error"]
    assert task["spec"]["requirements"] == ["requests"]
    assert task["result"]["status_code"] == 200
    assert task["result"]["body"]["body"] == {"message": "Hello from isolated task"}
    assert target.bodies == [{"message": "Hello from isolated task"}]
