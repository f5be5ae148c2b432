"""Inline credentials reach the target but no reply shows them: GET, list, POST (with and without
wait), wait, runs, NATS replies; a response's Set-Cookie is masked in results."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import nats
import pytest
from aiohttp import web

from proto import api as requests
from proto import codec, subjects
from tests.support import Api, Stack, TargetServer, free_port

HEADER_SECRETS = {
    "Authorization": "Bearer hdr-secret-4e1d",
    "X-Vendor-Token": "tok-secret-4e1d",
    "Cookie": "session=cookie-secret-4e1d",
    "X-Api-Key": "key-secret-4e1d",
}
URL_SECRET = "url-secret-4e1d"
SECRETS = [*HEADER_SECRETS.values(), URL_SECRET, base64.b64encode(f"alice:{URL_SECRET}".encode()).decode()]


def assert_masked(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{leaked} in {text[:2000]}"


async def test_inline_credentials_reach_the_target_but_no_reply_shows_them(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    with_headers = {
        "name": "header credentials",
        "task_type": "immediate",
        "api_url": f"{target.url}/echo",
        "headers": {**HEADER_SECRETS, "Accept": "application/json"},
    }
    port_and_path = target.url.removeprefix("http://") + "/echo"
    with_password = {
        "name": "url credentials",
        "task_type": "immediate",
        "api_url": f"http://alice:{URL_SECRET}@{port_and_path}?q=1",
    }
    replies: list[str] = []
    created = []
    for body in (with_headers, with_password):
        response = await api.client.post("/api/tasks", json=body)
        assert response.status_code == 201, response.text
        replies.append(response.text)
        created.append(response.json())
        waited = await api.client.post(
            "/api/tasks", json={**body, "name": body["name"] + " waited"}, params={"wait": 30}
        )
        assert waited.status_code == 201 and waited.json()["status"] == "succeeded", waited.text
        replies.append(waited.text)
        created.append(waited.json())
    for task in created:
        final = await api.wait_final(task["id"])
        assert final["status"] == "succeeded", final
        for path in (f"/api/tasks/{task['id']}", f"/api/tasks/{task['id']}/wait", f"/api/tasks/{task['id']}/runs"):
            response = await api.client.get(path)
            assert response.status_code == 200, response.text
            replies.append(response.text)
    listed = await api.client.get("/api/tasks", params={"limit": 500})
    replies.append(listed.text)

    sent_headers = [{name: headers.get(name) for name in HEADER_SECRETS} for headers in target.headers]
    assert sent_headers.count(HEADER_SECRETS) == 2  # the target got every credential, twice
    assert [h.get("Authorization") for h in target.headers].count(f"Basic {SECRETS[-1]}") == 2
    for reply in replies:
        assert_masked(reply)
    shown = (await api.task(created[0]["id"]))["spec"]["headers"]
    assert shown == {**dict.fromkeys(HEADER_SECRETS, "***"), "Accept": "application/json"}
    assert (await api.task(created[2]["id"]))["spec"]["api_url"] == f"http://alice:***@{port_and_path}?q=1"

    client = await nats.connect(stack.nats.url)  # type: ignore[union-attr]
    try:
        for task in created:
            reply = await client.request(subjects.GET_TASK, codec.encode(requests.TaskRef(id=task["id"])), timeout=10)
            assert_masked(reply.data.decode())
        page = await client.request(subjects.LIST_TASKS, codec.encode(requests.ListTasksRequest()), timeout=10)
        assert_masked(page.data.decode())
    finally:
        await client.close()


@pytest.fixture
async def cookie_server() -> AsyncIterator[str]:
    async def login(_: web.Request) -> web.Response:
        response = web.json_response({"ok": True})
        response.set_cookie("session", "set-cookie-secret-4e1d")
        return response

    app = web.Application()
    app.router.add_get("/login", login)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/login"
    finally:
        await runner.cleanup()


async def test_a_responses_set_cookie_is_masked_in_the_result(api: Api, cookie_server: str) -> None:
    created = await api.submit({"name": "login", "task_type": "immediate", "api_url": cookie_server})
    final = await api.wait_final(created["id"])
    assert final["status"] == "succeeded", final
    assert final["result"]["headers"]["set-cookie"] == "***"
    assert final["result"]["body"] == {"ok": True}
    runs = await api.runs(created["id"])
    assert "set-cookie-secret-4e1d" not in str(runs) and "set-cookie-secret-4e1d" not in str(final)
