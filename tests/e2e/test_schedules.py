"""Delayed and scheduled tasks end to end: on time, manageable, with honest accounting."""

from __future__ import annotations

import asyncio
from datetime import datetime

from tests.support import Api, Stack, TargetServer


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def api_task(target: TargetServer, name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "api_url": f"{target.url}/echo", "method": "POST", "data": {"task": name}, **extra}


def code_task(
    name: str, source: str = "def f():\n    return 'ok'", function: str = "f", **extra: object
) -> dict[str, object]:
    return {"name": name, "function_code": source, "function_name": function, **extra}


async def test_a_delayed_api_task_runs_after_its_delay_and_not_before(api: Api, target: TargetServer) -> None:
    created = await api.submit({**api_task(target, "延时API请求"), "task_type": "delayed", "delay_seconds": 1.5})
    assert created["status"] == "pending"
    assert ts(created["next_run_at"]) > ts(created["created_at"])
    await asyncio.sleep(1.0)
    assert target.bodies == []  # not before
    task = await api.wait_final(created["id"], timeout=30)
    assert task["status"] == "succeeded"
    waited = (ts(task["started_at"]) - ts(task["created_at"])).total_seconds()
    assert waited >= 1.5
    run = (await api.runs(task["id"]))[0]
    assert run["lag_ms"] < 1000  # started within a second of its due time


async def test_a_delayed_code_task_runs_after_its_delay(api: Api, docker_engine: None) -> None:
    created = await api.submit({**code_task("延时计算任务"), "task_type": "delayed", "delay_seconds": 0.8})
    task = await api.wait_final(created["id"], timeout=30)
    assert task["result"] == "ok"
    assert (ts(task["started_at"]) - ts(task["created_at"])).total_seconds() >= 0.8


async def test_a_fractional_zero_delay_runs_at_once(api: Api, target: TargetServer) -> None:
    created = await api.submit({**api_task(target, "zero"), "task_type": "delayed", "delay_seconds": 0})
    assert (await api.wait_final(created["id"]))["status"] == "succeeded"


async def test_a_cron_with_seconds_fires_on_each_tick(api: Api, target: TargetServer) -> None:
    created = await api.submit(
        {**api_task(target, "every second"), "task_type": "scheduled", "cron_expression": "*/1 * * * * *"},
        path="/api/scheduled-tasks",
    )
    assert created["status"] == "active"
    await api.wait_for(created["id"], lambda t: t["fired_count"] >= 3, timeout=15)
    runs = await api.runs(created["id"])
    slots = [ts(r["scheduled_for"]) for r in runs]
    assert all(s.microsecond == 0 for s in slots), slots  # on the tick
    assert len(set(slots)) == len(slots)
    finished = [r for r in runs if r["status"] == "succeeded"]
    assert finished and all(r["lag_ms"] < 1000 for r in finished)
    schedule = await api.get(f"/api/scheduled-tasks/{created['id']}")
    assert schedule["next_run_at"] is not None and schedule["last_run"] is not None
    await api.client.delete(f"/api/scheduled-tasks/{created['id']}")


async def test_pause_resume_trigger_and_delete_control_a_schedule(api: Api, target: TargetServer) -> None:
    created = await api.submit(
        {**api_task(target, "controlled"), "task_type": "scheduled", "cron_expression": "*/1 * * * * *"},
        path="/api/scheduled-tasks",
    )
    task_id = created["id"]
    await api.wait_for(task_id, lambda t: t["fired_count"] >= 1, timeout=10)

    paused = (await api.client.post(f"/api/scheduled-tasks/{task_id}/pause")).json()
    assert paused["status"] == "paused"
    await asyncio.sleep(0.5)  # let a fire already in flight land
    count = len(await api.runs(task_id))
    await asyncio.sleep(2.5)
    assert len(await api.runs(task_id)) == count  # no fires while paused

    triggered = await api.client.post(f"/api/scheduled-tasks/{task_id}/trigger")
    assert triggered.status_code == 202
    run_id = triggered.json()["run_id"]
    await api.wait_for(
        task_id,
        lambda t: t["last_run"] and t["last_run"]["run_id"] == run_id and t["last_run"]["status"] == "succeeded",
        timeout=10,
    )

    resumed = (await api.client.post(f"/api/scheduled-tasks/{task_id}/resume")).json()
    assert resumed["status"] == "active"
    before = len(await api.runs(task_id))
    await api.wait_for(task_id, lambda t: t["run_count"] >= before + 2, timeout=10)

    deleted = await api.client.delete(f"/api/scheduled-tasks/{task_id}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert (await api.client.get(f"/api/tasks/{task_id}")).status_code == 404
    hits = len(target.bodies)
    await asyncio.sleep(2.5)
    assert len(target.bodies) <= hits + 1  # at most a fire that was already in flight


async def test_max_runs_completes_the_schedule(api: Api, target: TargetServer) -> None:
    created = await api.submit(
        {**api_task(target, "twice"), "task_type": "scheduled", "cron_expression": "*/1 * * * * *", "max_runs": 2},
        path="/api/scheduled-tasks",
    )
    task = await api.wait_final(created["id"], timeout=20)
    assert task["status"] == "completed"
    assert task["fired_count"] == 2
    await asyncio.sleep(1.0)
    runs = await api.runs(created["id"])
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]  # completing never cancels the last fire


async def test_overlap_forbid_skips_fires_while_a_run_is_still_running(api: Api, target: TargetServer) -> None:
    body = {
        "name": "slow forbid",
        "task_type": "scheduled",
        "cron_expression": "*/1 * * * * *",
        "api_url": f"{target.url}/slow?seconds=2.5",
        "overlap_policy": "forbid",
        "timeout": 10,
    }
    created = await api.submit(body, path="/api/scheduled-tasks")
    task = await api.wait_for(created["id"], lambda t: t["skipped_count"] >= 2, timeout=20)
    ledger = await api.get(f"/api/scheduled-tasks/{created['id']}/ledger")
    skipped = [e for e in ledger["entries"] if e["state"] == "skipped"]
    assert len(skipped) >= 2 and "still running" in skipped[0]["reason"]
    runs = await api.runs(created["id"])
    assert sum(1 for r in runs if r["status"] == "running") <= 1  # never two at once
    assert task["fired_count"] >= 1
    await api.client.delete(f"/api/scheduled-tasks/{created['id']}?cancel_running=true")


async def test_overlap_replace_cancels_the_running_run(api: Api, target: TargetServer) -> None:
    body = {
        "name": "slow replace",
        "task_type": "scheduled",
        "cron_expression": "*/1 * * * * *",
        "api_url": f"{target.url}/slow?seconds=5",
        "overlap_policy": "replace",
        "timeout": 10,
    }
    created = await api.submit(body, path="/api/scheduled-tasks")

    def replaced(runs: list[dict[str, object]]) -> bool:
        return any(r["status"] == "cancelled" for r in runs)

    for _ in range(100):
        runs = await api.runs(created["id"])
        if replaced(runs):
            break
        await asyncio.sleep(0.1)
    cancelled = [r for r in runs if r["status"] == "cancelled"]
    assert cancelled, runs
    assert "replaced by the fire" in cancelled[0]["error"]["message"]
    await api.client.delete(f"/api/scheduled-tasks/{created['id']}?cancel_running=true")


async def test_a_time_zone_schedule_reports_its_next_fire_in_utc(api: Api, target: TargetServer) -> None:
    created = await api.submit(
        {
            **api_task(target, "berlin"),
            "task_type": "scheduled",
            "cron_expression": "30 6 * * *",
            "timezone": "Europe/Berlin",
        },
        path="/api/scheduled-tasks",
    )
    task = await api.wait_for(created["id"], lambda t: t["next_run_at"] is not None, timeout=10)
    local = ts(task["next_run_at"]).astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (6, 30)
    listing = await api.get("/api/scheduled-tasks")
    mine = [s for s in listing["schedules"] if s["id"] == created["id"]]
    assert mine and mine[0]["timezone"] == "Europe/Berlin" and mine[0]["next_run_at"] == task["next_run_at"]


async def test_invalid_cron_and_time_zones_are_rejected_naming_the_field(api: Api) -> None:
    for extra, field in (
        ({"cron_expression": "61 * * * *"}, "cron_expression"),
        ({"cron_expression": "* * *"}, "cron_expression"),
        ({"cron_expression": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({}, "cron_expression"),
    ):
        response = await api.client.post(
            "/api/scheduled-tasks",
            json={"name": "bad", "task_type": "scheduled", "api_url": "http://127.0.0.1:1/", **extra},
        )
        assert response.status_code == 400, extra
        assert response.json()["error"]["field"] == field


async def test_the_scheduled_endpoint_takes_only_scheduled_tasks(api: Api) -> None:
    response = await api.client.post(
        "/api/scheduled-tasks", json={"name": "now", "task_type": "immediate", "api_url": "http://127.0.0.1:1/"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "task_type"


async def test_the_seed_scheduled_code_example_is_accepted_verbatim(api: Api) -> None:
    body = (
        '{"name": "定时计算任务", "task_type": "scheduled", "cron_expression": "0 0 * * *", '
        '"function_code": "def daily_report():\\n    return \\"日报生成完成\\"", "function_name": "daily_report"}'
    )
    response = await api.client.post("/api/scheduled-tasks", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 201
    task = response.json()
    next_run = await api.wait_for(task["id"], lambda t: t["next_run_at"] is not None, timeout=10)
    fire = ts(next_run["next_run_at"])
    assert (fire.hour, fire.minute, fire.second) == (0, 0, 0)
    # a manual trigger runs it now (the real fire is at midnight UTC)
    run_id = (await api.client.post(f"/api/scheduled-tasks/{task['id']}/trigger")).json()["run_id"]
    done = await api.wait_for(
        task["id"],
        lambda t: (
            t["last_run"] and t["last_run"]["run_id"] == run_id and t["last_run"]["status"] in ("succeeded", "failed")
        ),
        timeout=60,
    )
    assert done["result"] == "日报生成完成"


async def test_a_run_that_cannot_start_before_its_deadline_expires(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    stack.services["runner"].stop()  # nothing can start it
    created = await api.submit({**api_task(target, "deadline"), "task_type": "immediate", "start_deadline_seconds": 1})
    await asyncio.sleep(1.5)
    stack.start_service("runner", key="runner")
    task = await api.wait_final(created["id"], timeout=30)
    assert task["status"] == "expired"
    assert task["error"]["type"] == "expired"
    assert target.bodies == []
