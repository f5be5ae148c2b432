"""The management API: listing, runs, logs (stored and followed), cancel, delete, stats, health,
metrics, idempotency and errors — through HTTP with every service running."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import nats
import pytest

from proto import subjects
from tests.support import Api, Stack, TargetServer


def api_task(target: TargetServer, name: str, path: str = "/hello", **extra: object) -> dict[str, object]:
    return {"name": name, "task_type": "immediate", "api_url": f"{target.url}{path}", **extra}


async def test_listing_filters_and_pages_newest_first(api: Api, target: TargetServer) -> None:
    ids = [(await api.submit(api_task(target, f"page {i}")))["id"] for i in range(7)]
    delayed = await api.submit({**api_task(target, "page later"), "task_type": "delayed", "delay_seconds": 60})
    for task_id in ids:
        await api.wait_final(task_id)

    seen: list[str] = []
    cursor = None
    while True:
        page = await api.get("/api/tasks", name="page", limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [t["id"] for t in page["tasks"]]
        # a task created while paging does not shift the pages
        await api.submit(api_task(target, "page interloper"))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = [delayed["id"], *reversed(ids)]
    assert [i for i in seen if i in expected] == expected
    pending = await api.get("/api/tasks", status="pending", name="page later")
    assert [t["id"] for t in pending["tasks"]] == [delayed["id"]]
    delays = await api.get("/api/tasks", task_type="delayed", kind="api")
    assert delayed["id"] in [t["id"] for t in delays["tasks"]]
    assert (await api.get("/api/tasks", kind="code", name="page"))["tasks"] == []


async def test_bad_list_parameters_are_400_naming_the_parameter(api: Api) -> None:
    for params, field in (
        ({"status": "nope"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"colour": "red"}, "colour"),
    ):
        response = await api.client.get("/api/tasks", params=params)
        assert response.status_code == 400, params
        assert response.json()["error"]["field"] == field


async def test_a_task_shows_timings_and_its_runs_with_attempts(api: Api, target: TargetServer) -> None:
    created = await api.submit(api_task(target, "timings"))
    task = await api.wait_final(created["id"])
    for field in ("created_at", "queued_at", "started_at", "finished_at", "duration_ms"):
        assert task[field] is not None, field
    runs = await api.get(f"/api/tasks/{task['id']}/runs")
    assert len(runs["runs"]) == 1
    run = await api.get(f"/api/tasks/{task['id']}/runs/{runs['runs'][0]['run_id']}")
    assert run["status"] == "succeeded"
    run_logs = await api.get(f"/api/tasks/{task['id']}/runs/{run['run_id']}/logs")
    assert run_logs["run_id"] == run["run_id"] and run_logs["finished"] is True
    assert "200" in "".join(c["data"] for c in run_logs["chunks"])  # the request and its status
    assert run["attempts"][0]["attempt"] == 1 and run["attempts"][0]["runner_id"] == run["runner_id"]
    assert (await api.client.get(f"/api/tasks/{task['id']}/runs/nope")).status_code == 404


async def test_cancelling_a_pending_task_means_it_never_runs(api: Api, target: TargetServer) -> None:
    created = await api.submit({**api_task(target, "never", "/echo"), "task_type": "delayed", "delay_seconds": 1})
    cancelled = (await api.client.post(f"/api/tasks/{created['id']}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    again = await api.client.post(f"/api/tasks/{created['id']}/stop")  # idempotent, alias
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    await asyncio.sleep(2.0)
    assert target.bodies == []
    assert (await api.task(created["id"]))["status"] == "cancelled"


async def test_cancelling_a_running_api_task_aborts_its_request(api: Api, target: TargetServer) -> None:
    created = await api.submit(api_task(target, "abort me", "/slow?seconds=20", timeout=60))
    await api.wait_for(created["id"], lambda t: t["status"] == "running", timeout=10)
    await api.client.post(f"/api/tasks/{created['id']}/cancel")
    task = await api.wait_for(created["id"], lambda t: t["last_run"]["status"] == "cancelled", timeout=10)
    assert task["status"] == "cancelled"


async def test_cancelling_a_running_code_task_kills_its_container(api: Api, stack: Stack, docker_engine: None) -> None:
    created = await api.submit(
        {
            "name": "sleeper",
            "task_type": "immediate",
            "timeout": 60,
            "function_code": "import time\ndef f():\n    print('start', flush=True)\n    time.sleep(60)",
            "function_name": "f",
        }
    )
    await api.wait_for(created["id"], lambda t: t["status"] == "running", timeout=30)
    await api.client.post(f"/api/tasks/{created['id']}/cancel")
    task = await api.wait_for(created["id"], lambda t: t["last_run"]["status"] == "cancelled", timeout=15)
    assert task["status"] == "cancelled"
    assert (await api.runs(task["id"]))[0]["duration_ms"] < 30_000


async def test_deleting_a_task_removes_it_its_runs_and_logs(api: Api, target: TargetServer) -> None:
    created = await api.submit(api_task(target, "doomed"))
    await api.wait_final(created["id"])
    reply = (await api.client.delete(f"/api/tasks/{created['id']}")).json()
    assert reply == {"id": created["id"], "deleted": True, "runs_removed": 1}
    for path in ("", "/runs", "/logs"):
        assert (await api.client.get(f"/api/tasks/{created['id']}{path}")).status_code == 404
    assert (await api.client.delete(f"/api/tasks/{created['id']}")).status_code == 404


async def test_logs_can_be_followed_live_until_the_run_ends(api: Api, docker_engine: None) -> None:
    source = "import time\ndef f():\n    for i in range(3):\n        print('line', i, flush=True)\n        time.sleep(0.7)\n    return 'done'"
    created = await api.submit(
        {"name": "chatty", "task_type": "immediate", "function_code": source, "function_name": "f"}
    )
    events: list[tuple[str, dict]] = []
    async with api.client.stream("GET", f"/api/tasks/{created['id']}/logs", params={"follow": "true"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind == "end":
                    break
    printed = "".join(data["data"] for kind, data in events if kind == "log" and data["stream"] == "stdout")
    assert printed == "line 0\nline 1\nline 2\n"
    assert events[-1] == ("end", {"run_id": events[0][1]["run_id"], "status": "succeeded"})


async def test_following_the_logs_of_a_finished_task_replays_them_and_ends(api: Api, target: TargetServer) -> None:
    created = await api.submit(api_task(target, "done already"))
    await api.wait_final(created["id"])
    response = await api.client.get(f"/api/tasks/{created['id']}/logs", params={"follow": "true"})
    assert "event: log" in response.text and "event: end" in response.text


async def test_stats_count_tasks_runs_and_runners(api: Api, target: TargetServer) -> None:
    ok = await api.submit(api_task(target, "ok"))
    bad = await api.submit(api_task(target, "bad", "/status/500"))
    await api.wait_final(ok["id"])
    await api.wait_final(bad["id"])
    stats = await api.get("/api/stats")
    assert stats["tasks_by_status"]["succeeded"] >= 1 and stats["tasks_by_status"]["failed"] >= 1
    assert stats["tasks_by_kind"]["api"] >= 2 and stats["tasks_by_trigger"]["immediate"] >= 2
    assert stats["runs_by_status"]["succeeded"] >= 1
    assert len(stats["runs_per_minute"]) == 60 and stats["runs_per_minute"][-1] >= 2
    assert 0 < stats["success_rate"] < 1
    assert stats["duration_ms"]["p50"] is not None and stats["duration_ms"]["p95"] >= stats["duration_ms"]["p50"]
    assert stats["queue"]["api_pending"] == 0
    runner = stats["runners"][0]
    assert runner["slots"]["api"]["total"] == 64 and runner["slots"]["code"]["total"] >= 2


async def test_health_reports_every_dependency(api: Api, stack: Stack) -> None:
    health = await api.get("/api/health")
    assert health["status"] in ("ok", "degraded")
    assert set(health["checks"]) == {"nats", "jetstream", "store", "scheduler", "runners", "sandbox"}
    assert health["checks"]["runners"]["count"] == 1
    assert "leader" in health["checks"]["scheduler"]["detail"]
    stack.services["store"].stop()
    response = await api.client.get("/api/health")
    assert response.status_code == 503
    assert response.json()["status"] == "down" and response.json()["checks"]["store"]["status"] == "down"


async def test_metrics_are_prometheus_text(api: Api, target: TargetServer) -> None:
    await api.wait_final((await api.submit(api_task(target, "metric")))["id"])
    text = (await api.client.get("/metrics")).text
    assert "# TYPE taskmesh_http_requests_total counter" in text
    assert 'taskmesh_tasks{status="succeeded"}' in text
    assert 'taskmesh_queue_depth{pool="api"} 0' in text
    assert 'taskmesh_run_duration_milliseconds_bucket{le="+Inf"}' in text
    assert "taskmesh_schedule_lag_milliseconds_count" in text


async def test_an_idempotency_key_makes_a_resubmission_return_the_same_task(api: Api, target: TargetServer) -> None:
    body = api_task(target, "once", "/echo", method="POST", data={"n": 1})
    first = await api.client.post("/api/tasks", json=body, headers={"Idempotency-Key": "order-42"})
    second = await api.client.post("/api/tasks", json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    await api.wait_final(first.json()["id"])
    assert target.bodies == [{"n": 1}]


async def test_errors_are_json_with_the_right_status(api: Api) -> None:
    cases = [
        (
            api.client.post("/api/tasks", content=b"{not json", headers={"Content-Type": "application/json"}),
            400,
            "invalid_json",
        ),
        (api.client.post("/api/tasks", content=b"", headers={"Content-Type": "application/json"}), 400, "invalid_json"),
        (
            api.client.post(
                "/api/tasks", content=b"name=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
            ),
            415,
            "unsupported_media_type",
        ),
        (
            api.client.post(
                "/api/tasks", content=b"[" + b"1," * 700_000 + b"1]", headers={"Content-Type": "application/json"}
            ),
            413,
            "payload_too_large",
        ),
        (api.client.get("/api/tasks/does-not-exist"), 404, "not_found"),
        (api.client.get("/api/nothing-here"), 404, "not_found"),
        (api.client.put("/api/tasks"), 405, "method_not_allowed"),
        (api.client.post("/api/scheduled-tasks/does-not-exist/pause"), 404, "not_found"),
    ]
    for request, status, code in cases:
        response = await request
        assert response.status_code == status, (status, response.text)
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["message"]


async def test_pausing_a_one_shot_task_is_a_conflict(api: Api, target: TargetServer) -> None:
    created = await api.submit({**api_task(target, "not a schedule"), "task_type": "delayed", "delay_seconds": 30})
    response = await api.client.post(f"/api/scheduled-tasks/{created['id']}/pause")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


async def test_the_docs_page_and_openapi_document_are_served(api: Api) -> None:
    spec = await api.get("/api/openapi.json")
    assert spec["openapi"].startswith("3.1")
    assert "/api/tasks" in spec["paths"] and "TaskSpec" in spec["components"]["schemas"]
    page = await api.client.get("/api/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text  # the dashboard's Swagger UI renders the spec


def test_tokens_are_required_when_configured_except_for_health(tmp_path, target: TargetServer) -> None:
    stack = Stack(tmp_path, env_extra={"TASKMESH_API_TOKENS": "s3cret-token,other"}).start()
    try:
        base = stack.base_url
        assert httpx.get(f"{base}/api/health").status_code == 200
        denied = httpx.get(f"{base}/api/tasks")
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"
        assert httpx.get(f"{base}/api/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{base}/api/tasks", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert httpx.get(f"{base}/api/tasks", headers={"Authorization": "Bearer other"}).status_code == 200
        assert "s3cret-token" not in stack.logs()
    finally:
        stack.stop()


@pytest.mark.parametrize(
    ("command", "verdict"),
    [("delete", "run dropped: its task is deleted"), ("cancel", "run cancelled before it started")],
)
async def test_a_task_deleted_or_cancelled_while_queued_never_runs(
    stack: Stack, api: Api, target: TargetServer, command: str, verdict: str
) -> None:
    stack.services["runner"].stop()  # the run waits on the work queue
    created = await api.submit(api_task(target, f"{command} in the queue", "/echo"))
    await api.wait_for(created["id"], lambda t: t["status"] == "queued", timeout=10)
    if command == "delete":
        response = await api.client.delete(f"/api/tasks/{created['id']}")
    else:
        response = await api.client.post(f"/api/tasks/{created['id']}/cancel")
    assert response.status_code == 200, response.text
    stack.start_service("runner", key="runner")
    stack.wait_ready()
    await _runner_says(stack, verdict, created["id"])  # the store's verdict, asked when the run came
    if command == "cancel":  # reported as such, on the run and the task
        task = await api.wait_for(created["id"], lambda t: t["last_run"]["status"] == "cancelled", timeout=10)
        assert task["status"] == "cancelled"
    assert target.bodies == []


async def _runner_says(stack: Stack, message: str, task_id: str, timeout: float = 15) -> None:
    """Wait until the runner logs ``message`` about the task (its verdict on a queued run)."""
    deadline = time.monotonic() + timeout
    while not any(message in line and task_id in line for line in stack.services["runner"].log().splitlines()):
        assert time.monotonic() < deadline, (
            f"the runner never logged {message!r}:\n{stack.services['runner'].log()[-3000:]}"
        )
        await asyncio.sleep(0.1)


async def test_the_store_gives_each_run_of_a_batch_its_own_verdict_in_order(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    stack.services["runner"].stop()  # the runs wait on the work queue
    created = [await api.submit(api_task(target, f"batch {i}", "/echo")) for i in range(3)]
    refs = []
    for task in created:
        queued = await api.wait_for(task["id"], lambda t: t["status"] == "queued", timeout=10)
        refs.append({"id": queued["id"], "run_id": (await api.runs(queued["id"]))[0]["run_id"]})
    assert (await api.client.post(f"/api/tasks/{created[0]['id']}/cancel")).status_code == 200
    assert (await api.client.delete(f"/api/tasks/{created[1]['id']}")).status_code == 200
    nc = await nats.connect(stack.nats.url if stack.nats else "")
    try:
        reply = await nc.request(subjects.RUN_VERDICTS, json.dumps({"runs": refs}).encode(), timeout=5)
        assert json.loads(reply.data) == {
            "verdicts": [{"verdict": "cancelled"}, {"verdict": "deleted"}, {"verdict": "run"}]
        }
        too_many = await nc.request(subjects.RUN_VERDICTS, json.dumps({"runs": refs * 100}).encode(), timeout=5)
        assert too_many.headers and subjects.HEADER_ERROR in too_many.headers
        assert json.loads(too_many.data)["error"]["field"] == "runs"
    finally:
        await nc.close()
