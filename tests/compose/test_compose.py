"""The compose deployment, as users run it: images built, `docker compose up -d --wait`, then
everything through the published gateway port with the API token.

One deployment for the module (building and starting it is most of the cost); the tests run in
file order and the last one takes it down. Requires a Docker engine (fails, never skips).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

import httpx
import pytest

from tests import wheelhouse
from tests.compose.deployment import ROOT, SANDBOX_IMAGE, Deployment, base_image, build_tools_image, docker
from tests.support import Api

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(900)]

SLEEPER = "def nap(seconds):\n    import time\n    time.sleep(seconds)\n    return seconds\n"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    try:
        docker("version", timeout=20)
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        pytest.fail(f"the compose tests need a Docker engine and none answers ({exc})", pytrace=False)
    wheels = wheelhouse.target_dir()
    if not any(wheels.glob("six-*.whl")):
        pytest.fail(f"no six wheel in {wheels}: run `python -m tests.wheelhouse` (make test does)", pytrace=False)
    deployment = Deployment(tmp_path_factory.mktemp("compose"), base_image())
    failures_before = request.session.testsfailed
    started = time.monotonic()
    try:
        tools = build_tools_image()
        subprocess.run(
            [str(ROOT / "deploy" / "sandbox" / "build.sh"), deployment.base],
            check=True,
            capture_output=True,
            timeout=300,
            env={**os.environ, "TASKMESH_SANDBOX_TAG": SANDBOX_IMAGE},
        )
        deployment.timings["tools + sandbox images"] = round(time.monotonic() - started, 1)
        deployment.prepare(wheels, tools)
        deployment.timed("compose build", "build")
        up_started = time.monotonic()
        deployment.up()
        deployment.timings["up --wait"] = round(time.monotonic() - up_started, 1)
        yield deployment
    except BaseException:
        print(deployment.logs())
        raise
    else:
        if request.session.testsfailed > failures_before:
            print(deployment.logs())
    finally:
        deployment.remove_everything()
        deployment.timings["total"] = round(time.monotonic() - started, 1)
        print(f"\ncompose deployment {deployment.project}: {deployment.timings}")


@pytest.fixture
async def api(deployment: Deployment) -> AsyncIterator[Api]:
    client = Api(deployment.url, token=deployment.token)
    try:
        yield client
    finally:
        await client.close()


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_the_stack_is_healthy_with_leaders_and_standbys_and_wants_a_token(deployment: Deployment) -> None:
    health = deployment.health()
    assert health["status"] == "ok", health["checks"]
    assert health["checks"]["scheduler"]["count"] == 2
    assert "1 standby" in health["checks"]["scheduler"]["detail"]
    assert health["checks"]["store"]["count"] == 2
    assert "1 standby" in health["checks"]["store"]["detail"]
    assert health["checks"]["sandbox"]["detail"] == SANDBOX_IMAGE
    async with httpx.AsyncClient(base_url=deployment.url) as anonymous:
        assert (await anonymous.get("/api/tasks")).status_code == 401
        wrong = await anonymous.get("/api/tasks", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


async def test_an_immediate_api_task_calls_a_server_on_the_compose_network(api: Api) -> None:
    created = await api.submit(
        {"name": "compose api", "task_type": "immediate", "api_url": "http://target:8000/hello.json"}
    )
    task = await api.wait_final(created["id"])
    assert task["status"] == "succeeded", task
    assert task["result"]["status_code"] == 200
    assert task["result"]["body"] == {"hello": "compose"}


async def test_an_isolated_code_task_gets_its_requirement_from_the_index(api: Api) -> None:
    created = await api.submit(
        {
            "name": "six",
            "task_type": "immediate",
            "requirements": ["six==1.17.0"],
            "function_code": "def version():\n    import six\n    return six.__version__",
            "function_name": "version",
        },
        path="/api/tasks/isolated",
    )
    task = await api.wait_final(created["id"], timeout=180)
    assert task["status"] == "succeeded", (task, await api.log_text(created["id"]))
    assert task["result"] == "1.17.0"
    assert "requirements installed" in await api.log_text(created["id"])


async def test_a_delayed_task_runs_once_its_delay_is_over(api: Api) -> None:
    created = await api.submit(
        {
            "name": "later",
            "task_type": "delayed",
            "delay_seconds": 2,
            "function_code": "def answer():\n    return 42",
            "function_name": "answer",
        }
    )
    task = await api.wait_final(created["id"])
    assert task["status"] == "succeeded", task
    assert task["result"] == 42
    assert (_at(task["started_at"]) - _at(task["created_at"])).total_seconds() >= 2


async def test_a_one_second_cron_schedule_fires_every_second(api: Api) -> None:
    # No max_runs: the store cancels the run of the last fire when it applies the schedule's
    # "completed" before that run starts (services/store/state.py, _started / _queued); reported.
    created = await api.submit(
        {
            "name": "tick",
            "task_type": "scheduled",
            "cron_expression": "*/1 * * * * *",
            "api_url": "http://target:8000/hello.json",
        },
        path="/api/scheduled-tasks",
    )
    deadline = time.monotonic() + 30
    runs = await api.runs(created["id"])
    while sum(run["status"] == "succeeded" for run in runs) < 3:
        assert time.monotonic() < deadline, runs
        await asyncio.sleep(0.2)
        runs = await api.runs(created["id"])
    paused = await api.client.post(f"/api/scheduled-tasks/{created['id']}/pause")
    assert paused.status_code == 200, paused.text
    first = sorted(runs, key=lambda run: run["scheduled_for"])[:3]
    assert [run["status"] for run in first] == ["succeeded"] * 3, first
    fires = [_at(run["scheduled_for"]) for run in first]
    assert [(b - a).total_seconds() for a, b in zip(fires, fires[1:], strict=False)] == [1.0, 1.0]


async def test_scaled_to_three_runners_the_runs_spread_over_all_of_them(deployment: Deployment, api: Api) -> None:
    started = time.monotonic()
    deployment.compose("up", "-d", "--wait", "--no-build", "--scale", "runner=3")
    deployment.timings["scale runner=3"] = round(time.monotonic() - started, 1)
    deployment.wait_runners(3)
    # 9 two-second runs, 2 sandbox slots per runner (TASKMESH_CODE_SLOTS): no two runners can hold them all
    created = await asyncio.gather(
        *(
            api.submit(
                {
                    "name": f"spread {n}",
                    "task_type": "immediate",
                    "args": [2],
                    "function_code": SLEEPER,
                    "function_name": "nap",
                }
            )
            for n in range(9)
        )
    )
    tasks = await asyncio.gather(*(api.wait_final(c["id"], timeout=120) for c in created))
    assert {task["status"] for task in tasks} == {"succeeded"}
    runners = {(await api.runs(c["id"]))[0]["runner_id"] for c in created}
    assert len(runners) == 3, runners


async def test_a_run_held_by_a_killed_runner_is_completed_by_another(deployment: Deployment, api: Api) -> None:
    created = await api.submit(
        {"name": "survivor", "task_type": "immediate", "args": [4], "function_code": SLEEPER, "function_name": "nap"}
    )
    await api.wait_for(created["id"], lambda task: task["status"] == "running", timeout=60)
    victim = (await api.runs(created["id"]))[0]["runner_id"]
    host = next(r["host"] for r in deployment.health()["runners"] if r["instance_id"] == victim)
    docker("kill", deployment.container_of_host(host))  # SIGKILL: no ack, no hand-back, no cleanup
    killed = time.monotonic()

    task = await api.wait_final(created["id"], timeout=120)
    deployment.timings["takeover after kill"] = round(time.monotonic() - killed, 1)
    assert task["status"] == "succeeded", task
    run = (await api.runs(created["id"]))[0]
    assert run["runner_id"] != victim
    assert next(a["runner_id"] for a in run["attempts"]) == victim
    assert run["attempt"] == 2  # redelivered once the 10 s ack wait ran out

    # Its sandboxes outlived it: a live runner reaps them within a minute, the runner that comes
    # back in its place at once, when it starts.
    deployment.compose("up", "-d", "--wait", "--no-build", "--scale", "runner=3")
    deadline = time.monotonic() + 60
    while deployment.sandboxes(victim):
        assert time.monotonic() < deadline, "the dead runner's sandboxes were not reaped"
        await asyncio.sleep(0.5)


def test_no_service_was_denied_a_subject_by_its_nats_user(deployment: Deployment) -> None:
    nats_log = deployment.compose("logs", "--no-color", "nats")
    assert "Permissions Violation" not in nats_log, nats_log[-5000:]
    services_log = deployment.compose("logs", "--no-color", "gateway", "store", "scheduler", "runner")
    assert "nats error" not in services_log, services_log[-5000:]


def test_down_removes_every_container_network_and_volume(deployment: Deployment) -> None:
    deployment.timed("down -v", "down", "-v")
    assert deployment.leftovers() == {"containers": [], "networks": [], "volumes": []}
