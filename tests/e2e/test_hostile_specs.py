"""Hostile task bodies over HTTP (issue 13): each is a 400 naming its field, and the stack keeps working.

Before ``proto.bounds`` each was accepted (201) and then wedged a consumer: the scheduler raised
OverflowError on every fire, the runner overflowed computing a retry time, a deep ``data`` ended
in RecursionError (a 503), and a tiny ``cpus`` gave a sandbox no CPU limit at all.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from proto import cron
from tests.support import Api, TargetServer

API_TASK: dict[str, Any] = {"name": "hostile", "task_type": "immediate", "api_url": "http://127.0.0.1:9/"}
CODE_TASK: dict[str, Any] = {
    "name": "hostile",
    "task_type": "immediate",
    "function_code": "def f():\n    return 1\n",
    "function_name": "f",
}


def deep_data(depth: int, base: dict[str, Any] = API_TASK, field: str = "data") -> bytes:
    """``base`` with ``field`` nested ``depth`` lists deep, built as bytes (no encoder recursion)."""
    return json.dumps(base).encode()[:-1] + f', "{field}": '.encode() + b"[" * depth + b"1" + b"]" * depth + b"}"


HOSTILE: list[tuple[str, bytes, str]] = [
    (
        "start deadline of 1e12 s",
        json.dumps({**API_TASK, "start_deadline_seconds": 1e12}).encode(),
        "start_deadline_seconds",
    ),
    (
        "retry delays of 1e12 s",
        json.dumps(
            {**API_TASK, "max_retries": 1, "retry_delay_seconds": 1e12, "retry_delay_max_seconds": 1e12}
        ).encode(),
        "retry_delay_seconds",
    ),
    ("data 980 levels deep", deep_data(980), "data"),
    ("data 10000 levels deep", deep_data(10_000), "data"),
    ("args 980 levels deep", deep_data(980, CODE_TASK, "args"), "args"),
    ("cpus of 1e-10", json.dumps({**CODE_TASK, "cpus": 1e-10}).encode(), "cpus"),
]


async def test_hostile_bodies_are_400s_naming_their_field_and_the_stack_still_runs_tasks(
    api: Api, target: TargetServer
) -> None:
    for what, body, field in HOSTILE:
        response = await api.client.post("/api/tasks", content=body, headers={"Content-Type": "application/json"})

        assert response.status_code == 400, f"{what}: {response.status_code} {response.text}"
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("invalid_field", field), f"{what}: {error}"

    created = await api.submit({"name": "after", "task_type": "immediate", "api_url": f"{target.url}/hello"})
    assert (await api.wait_final(created["id"], timeout=30))["status"] == "succeeded"
    assert (await api.get("/api/tasks", limit=500))["tasks"] == [await api.task(created["id"])]


async def test_a_task_at_every_bound_is_accepted_and_runs(api: Api, target: TargetServer) -> None:
    body = (
        json.dumps(
            {
                "name": "at the bounds",
                "task_type": "immediate",
                "api_url": f"{target.url}/echo",
                "method": "POST",
                "start_deadline_seconds": 366 * 86400.0,
                "max_retries": 20,
                "retry_delay_seconds": 86400,
                "retry_backoff": 10,
                "retry_delay_max_seconds": 86400,
            }
        ).encode()[:-1]
        + b', "data": '
        + b"[" * 32
        + b"1"
        + b"]" * 32
        + b"}"
    )

    response = await api.client.post("/api/tasks", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 201, response.text
    task = await api.wait_final(response.json()["id"], timeout=30)
    assert task["status"] == "succeeded"
    assert target.bodies[-1] == json.loads(b"[" * 32 + b"1" + b"]" * 32)


async def test_the_openapi_document_carries_the_bounds(api: Api) -> None:
    spec = (await api.get("/api/openapi.json"))["components"]["schemas"]["TaskSpec"]["properties"]

    def bound(field: str, key: str) -> Any:
        schema = spec[field]
        options = schema.get("anyOf", [schema])
        return next((option[key] for option in options if key in option), None)

    assert bound("start_deadline_seconds", "maximum") == 366 * 86400.0
    assert bound("retry_delay_seconds", "maximum") == 86400.0
    assert bound("retry_delay_max_seconds", "maximum") == 86400.0
    assert bound("cpus", "minimum") == 0.01
    assert bound("memory_mb", "minimum") == 32
    assert bound("args", "maxItems") == 256
    assert bound("function_name", "maxLength") == 200


async def test_a_scheduled_task_says_when_it_first_fires_in_its_201_and_right_after(api: Api) -> None:
    created = await api.submit(
        {
            "name": "yearly",
            "task_type": "scheduled",
            "cron_expression": "0 0 1 1 *",
            "timezone": "Europe/Berlin",
            "api_url": "http://127.0.0.1:9/",
        },
        path="/api/scheduled-tasks",
    )

    created_at = datetime.fromisoformat(created["created_at"])
    expected = cron.CronSchedule("0 0 1 1 *", "Europe/Berlin").next_after(created_at)
    assert created["next_run_at"] is not None
    assert datetime.fromisoformat(created["next_run_at"]) == expected
    assert (await api.task(created["id"]))["next_run_at"] == created["next_run_at"]
