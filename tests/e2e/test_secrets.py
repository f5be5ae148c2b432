"""Secrets: set, listed without values, used by API and code tasks, and seen nowhere but by the target.

One stack with tokens serves the module: an ``admin`` token and a ``read`` token.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import nats
import pytest
from aiohttp import web
from nats.aio.msg import Msg

from services.common import natsio
from tests.support import Api, Stack, WheelServer, free_port

ADMIN = "admin-token-7c1e"
READER = "read-token-7c1e"
VALUE = f"sv-{secrets.token_hex(12)}"
"""The secret's value: random, so finding it anywhere is a leak, not a coincidence."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, wheel_server: WheelServer, docker_engine: None) -> Iterator[Stack]:
    running = Stack(
        tmp_path_factory.mktemp("secrets"),
        env_extra={
            "TASKMESH_API_TOKENS": f"{ADMIN},{READER}:read",
            "TASKMESH_POOL_SIZE": "1",
            "TASKMESH_FIND_LINKS": wheel_server.url,
        },
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


class Recorder(Api):
    """An admin client that keeps the text of every reply."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url, ADMIN)
        self.replies: list[str] = []
        self.client.event_hooks["response"] = [self._keep]

    async def _keep(self, response: Any) -> None:
        await response.aread()
        self.replies.append(response.text)


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Recorder]:
    client = Recorder(stack.base_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def echo_target() -> AsyncIterator[str]:
    """Answers with the Authorization header and the body it got (so a result would show them);
    ``/echo/seen`` lists what every request carried."""
    seen: list[dict[str, str]] = []

    async def echo(request: web.Request) -> web.Response:
        got = {"authorization": request.headers.get("Authorization", ""), "body": await request.text()}
        seen.append({**got, "query": request.query_string})
        return web.json_response(got)

    async def report(_: web.Request) -> web.Response:
        return web.json_response(seen)

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/echo/seen", report)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/echo"
    finally:
        await runner.cleanup()


def api_task(url: str, name: str = "uses a secret", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task_type": "immediate",
        "api_url": url + "?key={{ secrets.API_TOKEN }}",
        "method": "POST",
        "headers": {"Authorization": "Bearer {{secrets.API_TOKEN}}"},
        "data": {"token": "{{ secrets.API_TOKEN }}"},
        **extra,
    }


CODE = 'import os\n\ndef show():\n    print("token is", os.environ["API_TOKEN"])\n    return os.environ["API_TOKEN"]\n'


async def test_secrets_are_set_listed_without_values_and_deleted_by_admin_tokens_only(stack: Stack) -> None:
    admin, reader = Api(stack.base_url, ADMIN), Api(stack.base_url, READER)
    try:
        refused = await reader.client.put("/api/secrets/CRUD_ONE", json={"value": VALUE})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden", refused.text
        assert (await reader.client.get("/api/secrets")).status_code == 403
        first = await admin.client.put("/api/secrets/CRUD_ONE", json={"value": VALUE})
        assert first.status_code == 200, first.text
        again = await admin.client.put("/api/secrets/CRUD_ONE", json={"value": VALUE + "x"})
        assert again.json()["created_at"] == first.json()["created_at"] != again.json()["updated_at"]
        listed = await admin.client.get("/api/secrets")
        assert [s["name"] for s in listed.json()["secrets"]] == ["CRUD_ONE"]
        assert set(listed.json()["secrets"][0]) == {"name", "created_at", "updated_at"}
        assert VALUE not in listed.text + first.text + again.text

        bad_name = await admin.client.put("/api/secrets/bad-name", json={"value": "v"})
        assert bad_name.status_code == 400 and bad_name.json()["error"]["field"] == "name", bad_name.text
        no_value = await admin.client.put("/api/secrets/OK", json={"val": "v"})
        assert no_value.status_code == 400 and no_value.json()["error"]["field"] in ("val", "value"), no_value.text
        empty = await admin.client.put("/api/secrets/OK", json={"value": ""})
        assert empty.status_code == 400 and empty.json()["error"]["field"] == "value", empty.text
        too_big = await admin.client.put("/api/secrets/OK", json={"value": "x" * 20_000})
        assert too_big.status_code == 400 and too_big.json()["error"]["field"] == "value", too_big.text
        missing = await admin.client.delete("/api/secrets/NOT_THERE")
        assert missing.status_code == 404 and missing.json()["error"]["field"] == "name", missing.text

        deleted = await admin.client.delete("/api/secrets/CRUD_ONE")
        assert deleted.status_code == 200 and deleted.json() == {"name": "CRUD_ONE", "deleted": True}
        assert (await admin.client.get("/api/secrets")).json() == {"secrets": []}
    finally:
        await admin.close()
        await reader.close()


async def test_a_task_naming_a_secret_that_does_not_exist_is_refused_naming_the_field(api: Recorder) -> None:
    cases = [
        ({**api_task("http://127.0.0.1:9/echo")}, "api_url"),
        (
            {
                "name": "h",
                "task_type": "immediate",
                "api_url": "http://127.0.0.1:9/",
                "headers": {"X": "{{ secrets.NOPE }}"},
            },
            "headers",
        ),
        (
            {
                "name": "d",
                "task_type": "immediate",
                "api_url": "http://127.0.0.1:9/",
                "method": "POST",
                "data": ["{{ secrets.NOPE }}"],
            },
            "data",
        ),
        (
            {
                "name": "c",
                "task_type": "immediate",
                "function_code": CODE,
                "function_name": "show",
                "secrets": ["NOPE"],
            },
            "secrets",
        ),
        (
            {
                "name": "b",
                "task_type": "immediate",
                "function_code": CODE,
                "function_name": "show",
                "secrets": ["no-pe"],
            },
            "secrets",
        ),
    ]
    for body, field in cases:
        response = await api.client.post("/api/tasks", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == field, response.text


async def test_an_api_task_sends_the_secret_to_its_target_and_shows_it_nowhere_else(
    stack: Stack, api: Recorder, echo_target: str
) -> None:
    """THE grep test: every API reply, NATS message, KV value and service log line, none has the value."""
    seen: list[bytes] = []
    watcher = await nats.connect(stack.nats.url)  # type: ignore[union-attr]

    async def keep(message: Msg) -> None:
        seen.append(message.subject.encode() + b" " + bytes(message.data) + repr(message.headers).encode())

    await watcher.subscribe(">", cb=keep)
    await watcher.flush()
    try:
        assert (await api.client.put("/api/secrets/API_TOKEN", json={"value": VALUE})).status_code == 200
        created = await api.submit(api_task(echo_target))
        final = await api.wait_final(created["id"])
        assert final["status"] == "succeeded", final
        assert final["result"]["body"]["authorization"] == "Bearer ***"  # the target saw it: the echo is hidden
        assert final["result"]["body"]["body"] == '{"token":"***"}'
        assert final["spec"]["headers"]["Authorization"] in ("***", "Bearer {{secrets.API_TOKEN}}")
        async with httpx.AsyncClient() as plain:
            got = (await plain.get(echo_target + "/seen")).json()
        assert got == [{"authorization": f"Bearer {VALUE}", "body": f'{{"token":"{VALUE}"}}', "query": f"key={VALUE}"}]
        waited = await api.client.post("/api/tasks", json=api_task(echo_target, "waited"), params={"wait": 30})
        assert waited.status_code == 201 and waited.json()["status"] == "succeeded", waited.text

        code_task = await api.submit(
            {
                "name": "env",
                "task_type": "immediate",
                "function_code": CODE,
                "function_name": "show",
                "secrets": ["API_TOKEN"],
            }
        )
        code_final = await api.wait_final(code_task["id"], timeout=120)
        assert code_final["status"] == "succeeded", code_final
        assert code_final["result"] == "***"
        assert "token is ***" in await api.log_text(code_task["id"])

        for task_id in (created["id"], waited.json()["id"], code_task["id"]):
            for path in (f"/api/tasks/{task_id}", f"/api/tasks/{task_id}/runs", f"/api/tasks/{task_id}/logs"):
                assert (await api.client.get(path)).status_code == 200
        await api.client.get("/api/tasks", params={"limit": 500})
        await api.client.get("/api/secrets")
        await api.client.get("/api/dead-letters")
        await watcher.flush()

        js = watcher.jetstream()
        values: list[bytes] = []
        for info in await js.streams_info():
            name = info.config.name or ""
            if name.startswith("KV_"):
                async for key, data in natsio.read_bucket(js, name.removeprefix("KV_")):
                    values.append(key.encode() + b" " + data)
        assert any(b"API_TOKEN" in v for v in values), "the secrets bucket was read"
    finally:
        await watcher.close()
    logs = [service.log() for service in stack.services.values()]
    assert seen and values and api.replies and all(logs)
    needle = VALUE.encode()
    assert not [m for m in seen if needle in m], "a NATS message carries the value"
    assert not [v for v in values if needle in v], "a KV value carries the value"
    assert not [r for r in api.replies if VALUE in r], "an API reply carries the value"
    assert not [line for log in logs for line in log.splitlines() if VALUE in line], "a service log carries the value"


async def test_a_run_whose_secret_was_deleted_since_submission_fails_with_secret_missing(
    api: Recorder, echo_target: str
) -> None:
    assert (await api.client.put("/api/secrets/SHORT_LIVED", json={"value": VALUE})).status_code == 200
    body = {
        "name": "late",
        "task_type": "delayed",
        "delay_seconds": 2,
        "api_url": echo_target,
        "headers": {"Authorization": "Bearer {{ secrets.SHORT_LIVED }}"},
    }
    created = await api.submit(body)
    assert (await api.client.delete("/api/secrets/SHORT_LIVED")).status_code == 200
    final = await api.wait_final(created["id"])
    assert final["status"] == "failed", final
    assert final["error"]["type"] == "secret_missing", final
    assert "SHORT_LIVED" in final["error"]["message"]


async def test_a_secret_is_usable_as_soon_as_it_is_set(api: Recorder, echo_target: str) -> None:
    assert (await api.client.put("/api/secrets/FRESH", json={"value": "fresh-value"})).status_code == 200
    created = await api.submit(
        {
            "name": "fresh",
            "task_type": "immediate",
            "api_url": echo_target,
            "headers": {"Authorization": "{{ secrets.FRESH }}"},
        }
    )
    final = await api.wait_final(created["id"])
    assert final["status"] == "succeeded" and final["result"]["body"]["authorization"] == "***", final


async def test_an_isolated_api_task_sends_the_secret_from_its_sandbox_and_its_result_hides_it(
    api: Recorder, echo_target: str
) -> None:
    assert (await api.client.put("/api/secrets/ISOLATED", json={"value": VALUE})).status_code == 200
    body = {
        "name": "isolated",
        "task_type": "immediate",
        "api_url": echo_target,
        "method": "POST",
        "headers": {"Authorization": "Bearer {{ secrets.ISOLATED }}"},
        "data": "{{ secrets.ISOLATED }}",
        "timeout": 60,
    }
    created = await api.submit(body, path="/api/tasks/isolated")
    final = await api.wait_final(created["id"], timeout=180)
    assert final["status"] == "succeeded", final
    assert final["result"]["body"] == {"authorization": "Bearer ***", "body": "***"}
    async with httpx.AsyncClient() as plain:
        got = (await plain.get(echo_target + "/seen")).json()
    assert got[-1]["authorization"] == f"Bearer {VALUE}" and got[-1]["body"] == VALUE
    assert VALUE not in await api.log_text(created["id"])
    assert not [r for r in api.replies if VALUE in r]
