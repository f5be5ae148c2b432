"""``taskmesh list``, ``show``, ``runs``, ``cancel``, ``delete`` against a running stack."""

from __future__ import annotations

from tests.cli.conftest import Taskmesh
from tests.support import Api, TargetServer


async def finished_task(taskmesh: Taskmesh, url: str, *flags: str) -> dict:
    result = await taskmesh("submit", "--api-url", url, "--wait", "--json", *flags)
    assert result.code in (0, 1), result
    return result.json()


async def test_list_filters_like_the_api_and_pages_with_a_cursor(taskmesh: Taskmesh, target: TargetServer) -> None:
    first = await finished_task(taskmesh, f"{target.url}/hello", "--name", "alpha-1")
    second = await finished_task(taskmesh, f"{target.url}/hello", "--name", "alpha-2")
    failed = await finished_task(taskmesh, f"{target.url}/status/500", "--name", "beta")

    by_name = (await taskmesh("list", "--name", "alpha", "--json")).json()
    assert [t["id"] for t in by_name["tasks"]] == [second["id"], first["id"]]
    by_status = (
        await taskmesh("list", "--status", "failed", "--kind", "api", "--task-type", "immediate", "--json")
    ).json()
    assert [t["id"] for t in by_status["tasks"]] == [failed["id"]]
    assert (await taskmesh("list", "--kind", "code", "--json")).json()["tasks"] == []

    page = await taskmesh("list", "--limit", "2", "--json")
    assert [t["id"] for t in page.json()["tasks"]] == [failed["id"], second["id"]]
    rest = (await taskmesh("list", "--limit", "2", "--cursor", page.json()["next_cursor"], "--json")).json()
    assert [t["id"] for t in rest["tasks"]] == [first["id"]]
    assert rest["next_cursor"] is None


async def test_list_prints_an_aligned_table_and_the_next_page_command(taskmesh: Taskmesh, target: TargetServer) -> None:
    tasks = [await finished_task(taskmesh, f"{target.url}/hello", "--name", f"row-{n}") for n in range(2)]
    result = await taskmesh("list", "--limit", "1")
    assert result.code == 0, result
    header, row = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "KIND", "TYPE", "STATUS", "CREATED", "DURATION"]
    assert row.startswith(tasks[1]["id"]) and "succeeded" in row
    assert row.index("succeeded") == header.index("STATUS")
    assert "more: taskmesh list --cursor " in result.stderr


async def test_show_prints_a_task_with_its_timings_and_result(taskmesh: Taskmesh, target: TargetServer) -> None:
    task = await finished_task(taskmesh, f"{target.url}/hello", "--name", "shown")
    result = await taskmesh("show", task["id"])
    assert result.code == 0, result
    assert f"id         {task['id']}" in result.stdout
    assert "status     succeeded" in result.stdout
    assert f"GET {target.url}/hello" in result.stdout
    assert '"hello": "world"' in result.stdout


async def test_show_explains_a_failed_task(taskmesh: Taskmesh, target: TargetServer) -> None:
    task = await finished_task(taskmesh, f"{target.url}/status/503", "--name", "broken")
    result = await taskmesh("show", task["id"], "--json")
    assert result.code == 0, result
    assert result.json()["error"]["type"] == "http_status"
    human = await taskmesh("show", task["id"])
    assert "HTTP 503" in human.stdout and "(http_status)" in human.stdout


async def test_show_of_an_unknown_task_is_one_line_with_what_to_do(taskmesh: Taskmesh) -> None:
    result = await taskmesh("show", "no-such-task")
    assert result.code == 3, result
    assert result.stderr == "error: no task 'no-such-task' (not_found, field id); list tasks with `taskmesh list`\n"


async def test_runs_lists_the_runs_and_shows_one_with_its_attempts(taskmesh: Taskmesh, target: TargetServer) -> None:
    task = await finished_task(taskmesh, f"{target.url}/hello")
    page = await taskmesh("runs", task["id"], "--json")
    assert page.code == 0, page
    (run,) = page.json()["runs"]
    assert run["status"] == "succeeded" and run["slot"] == "once"
    table = await taskmesh("runs", task["id"])
    assert run["run_id"] in table.stdout and "succeeded" in table.stdout
    one = await taskmesh("runs", task["id"], run["run_id"], "--json")
    assert one.json()["attempts"][0]["status"] == "succeeded"
    detail = await taskmesh("runs", task["id"], run["run_id"])
    assert "ATTEMPT" in detail.stdout and '"status_code": 200' in detail.stdout


async def test_cancel_stops_a_pending_task_and_is_safe_to_repeat(
    taskmesh: Taskmesh, api: Api, target: TargetServer
) -> None:
    task_id = (await taskmesh("submit", "--api-url", f"{target.url}/hello", "--delay", "600", "-q")).stdout.strip()
    result = await taskmesh("cancel", task_id, "--reason", "not needed", "--json")
    assert result.code == 0, result
    assert result.json()["status"] == "cancelled"
    again = await taskmesh("cancel", task_id)
    assert again.code == 0, again
    assert again.stdout.strip().endswith("cancelled")
    assert (await api.task(task_id))["status"] == "cancelled"


async def test_delete_removes_the_task_and_show_then_reports_not_found(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    task = await finished_task(taskmesh, f"{target.url}/hello")
    deleted = await taskmesh("delete", task["id"], "--json")
    assert deleted.code == 0, deleted
    assert deleted.json() == {"id": task["id"], "deleted": True, "runs_removed": 1}
    gone = await taskmesh("show", task["id"])
    assert gone.code == 3
    assert "(not_found" in gone.stderr


async def test_delete_prints_what_it_removed(taskmesh: Taskmesh, target: TargetServer) -> None:
    task = await finished_task(taskmesh, f"{target.url}/hello")
    result = await taskmesh("delete", task["id"])
    assert result.code == 0, result
    assert result.stdout == f"deleted {task['id']} (1 runs removed)\n"


async def test_a_narrow_terminal_never_cuts_ids_or_states_out_of_the_table(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    name = "a rather long task name for a narrow terminal"
    task = await finished_task(taskmesh, f"{target.url}/hello", "--name", name)
    result = await taskmesh("list", COLUMNS="60")
    assert result.code == 0, result
    row = result.stdout.splitlines()[1]
    assert row.startswith(task["id"]) and "succeeded" in row
