"""API tasks end to end: HTTP in, a real HTTP call by a runner, the outcome back over HTTP."""

from __future__ import annotations

from tests.support import Api, Stack, TargetServer


async def test_immediate_api_task_succeeds_with_the_response_as_result(api: Api, target: TargetServer) -> None:
    created = await api.submit(
        {
            "name": "立即API请求",
            "task_type": "immediate",
            "api_url": f"{target.url}/echo",
            "method": "POST",
            "data": {"message": "延时请求"},
            "timeout": 30,
        }
    )
    assert created["status"] == "pending"
    task = await api.wait_final(created["id"])
    assert task["status"] == "succeeded"
    result = task["result"]
    assert result["status_code"] == 200
    assert result["body"] == {"method": "POST", "body": {"message": "延时请求"}, "content_type": "application/json"}
    assert result["headers"]["content-type"].startswith("application/json")
    assert result["elapsed_ms"] > 0
    assert target.bodies == [{"message": "延时请求"}]


async def test_a_task_is_readable_right_after_its_201(api: Api, target: TargetServer) -> None:
    for _ in range(20):
        created = await api.submit({"name": "ryw", "task_type": "immediate", "api_url": f"{target.url}/hello"})
        fetched = await api.task(created["id"])
        assert fetched["id"] == created["id"]


async def test_a_non_2xx_response_fails_the_run_and_keeps_the_response(api: Api, target: TargetServer) -> None:
    created = await api.submit({"name": "404", "task_type": "immediate", "api_url": f"{target.url}/status/404"})
    task = await api.wait_final(created["id"])
    assert task["status"] == "failed"
    assert task["error"]["type"] == "http_status"
    assert "404" in task["error"]["message"]
    assert task["result"]["status_code"] == 404


async def test_expected_status_makes_a_non_2xx_response_a_success(api: Api, target: TargetServer) -> None:
    created = await api.submit(
        {"name": "418", "task_type": "immediate", "api_url": f"{target.url}/status/418", "expected_status": [418]}
    )
    task = await api.wait_final(created["id"])
    assert task["status"] == "succeeded"


async def test_an_unreachable_url_fails_with_a_readable_error(api: Api, stack: Stack) -> None:
    from taskmesh.processes import free_port

    created = await api.submit(
        {"name": "nobody home", "task_type": "immediate", "api_url": f"http://127.0.0.1:{free_port()}/", "timeout": 5}
    )
    task = await api.wait_final(created["id"])
    assert task["status"] == "failed"
    assert task["error"]["type"] == "http_error"
    assert "failed" in task["error"]["message"] and "Cannot connect" in task["error"]["message"]


async def test_a_slow_response_times_out(api: Api, target: TargetServer) -> None:
    created = await api.submit(
        {"name": "slow", "task_type": "immediate", "api_url": f"{target.url}/slow?seconds=5", "timeout": 0.5}
    )
    task = await api.wait_final(created["id"])
    assert task["status"] == "timed_out"
    assert task["error"]["type"] == "timed_out"


async def test_metadata_addresses_are_blocked_by_the_egress_policy(api: Api) -> None:
    created = await api.submit(
        {
            "name": "metadata",
            "task_type": "immediate",
            "api_url": "http://169.254.169.254/latest/meta-data/",
            "timeout": 2,
        }
    )
    task = await api.wait_final(created["id"])
    assert task["status"] == "failed"
    assert task["error"]["type"] == "egress_denied"


async def test_wait_returns_the_finished_task_in_one_request(api: Api, target: TargetServer) -> None:
    response = await api.client.post(
        "/api/tasks",
        params={"wait": 10},
        json={"name": "sync", "task_type": "immediate", "api_url": f"{target.url}/hello"},
    )
    assert response.status_code == 201
    assert response.json()["status"] == "succeeded"
    assert response.json()["result"]["body"] == {"hello": "world", "method": "GET"}


async def test_wait_that_expires_answers_202_with_the_current_state(api: Api, target: TargetServer) -> None:
    response = await api.client.post(
        "/api/tasks",
        params={"wait": 0.2},
        json={"name": "later", "task_type": "delayed", "delay_seconds": 30, "api_url": f"{target.url}/hello"},
    )
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
