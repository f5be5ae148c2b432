"""``taskmesh schedules`` (list, pause, resume, trigger), ``stats`` and ``health`` against a running stack."""

from __future__ import annotations

from tests.cli.conftest import Taskmesh
from tests.support import Api, TargetServer


async def scheduled_task(taskmesh: Taskmesh, target: TargetServer) -> str:
    result = await taskmesh(
        "submit",
        "--api-url",
        f"{target.url}/hello",
        "--name",
        "yearly",
        "--cron",
        "0 0 1 1 *",
        "--timezone",
        "Europe/Berlin",
        "-q",
    )
    assert result.code == 0, result
    return result.stdout.strip()


async def test_schedules_lists_scheduled_tasks_with_their_cron_and_next_run(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    task_id = await scheduled_task(taskmesh, target)
    reply = (await taskmesh("schedules", "list", "--json")).json()
    (schedule,) = reply["schedules"]
    assert schedule["id"] == task_id and schedule["status"] == "active"
    assert schedule["cron_expression"] == "0 0 1 1 *" and schedule["next_run_at"]
    table = await taskmesh("schedules")
    assert table.code == 0, table
    assert task_id in table.stdout and "0 0 1 1 * Europe/Berlin" in table.stdout


async def test_schedules_pause_and_resume_change_the_status_and_are_safe_to_repeat(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    task_id = await scheduled_task(taskmesh, target)
    paused = await taskmesh("schedules", "pause", task_id, "--json")
    assert paused.code == 0, paused
    assert paused.json()["status"] == "paused" and paused.json()["next_run_at"] is None
    again = await taskmesh("schedules", "pause", task_id)
    assert again.stdout == f"{task_id} yearly: paused\n"
    listed = (await taskmesh("schedules", "list", "--json")).json()["schedules"]
    assert listed[0]["status"] == "paused"
    resumed = await taskmesh("schedules", "resume", task_id, "--json")
    assert resumed.code == 0, resumed
    assert resumed.json()["status"] == "active"


async def test_schedules_trigger_runs_the_task_now_and_prints_the_run_id(
    taskmesh: Taskmesh, api: Api, target: TargetServer
) -> None:
    task_id = await scheduled_task(taskmesh, target)
    triggered = await taskmesh("schedules", "trigger", task_id, "--json")
    assert triggered.code == 0, triggered
    run_id = triggered.json()["run_id"]
    task = await api.wait_for(task_id, lambda t: (t.get("last_run") or {}).get("status") == "succeeded")
    assert task["last_run"]["run_id"] == run_id
    runs = (await taskmesh("runs", task_id, "--json")).json()["runs"]
    assert [r["run_id"] for r in runs] == [run_id]
    human = await taskmesh("schedules", "trigger", task_id)
    assert human.stdout.startswith(f"triggered {task_id} yearly: run ")


async def test_pausing_a_task_that_is_not_scheduled_is_a_conflict_in_one_line(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    task_id = (await taskmesh("submit", "--api-url", f"{target.url}/hello", "-q")).stdout.strip()
    result = await taskmesh("schedules", "pause", task_id)
    assert result.code == 3, result
    assert result.stderr == (
        f"error: task {task_id} is not a scheduled task (conflict); see its state with `taskmesh show ID`\n"
    )


async def test_stats_counts_tasks_and_runs(taskmesh: Taskmesh, target: TargetServer) -> None:
    for url in (f"{target.url}/hello", f"{target.url}/hello", f"{target.url}/status/500"):
        await taskmesh("submit", "--api-url", url, "--wait", "--json")
    stats = (await taskmesh("stats", "--json")).json()
    assert stats["tasks_total"] == 3
    assert stats["tasks_by_status"] == {"succeeded": 2, "failed": 1}
    assert stats["runs_total"] == 3
    human = await taskmesh("stats")
    assert human.code == 0, human
    assert "3 total" in human.stdout and "success rate  67%" in human.stdout
    assert "runners       1 (" in human.stdout


async def test_health_shows_each_dependency_and_exits_zero(taskmesh: Taskmesh) -> None:
    health = await taskmesh("health", "--json")
    assert health.code == 0, health
    assert health.json()["checks"]["store"]["status"] == "ok"
    human = await taskmesh("health")
    assert f"at {taskmesh.url}: ok" in human.stdout
    for check in ("nats", "jetstream", "store", "scheduler", "runners", "sandbox"):
        assert f"\n{check} " in human.stdout
