"""deploy/nats: every service runs under its own NATS user; the whole flow works, nothing it does
is denied, and what a service has no business doing is denied.

The services run as local processes against a nats-server started with the deployment's own
``authorization.conf`` (the compose test checks the same file inside containers).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import nats
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api as js_api

from proto import streams, subjects
from services.common import natsio
from taskmesh.processes import free_port, nats_server_binary, stop_process, wait_http
from tests.support import Api, Stack, TargetServer

DEPLOY_NATS = Path(__file__).resolve().parents[2] / "deploy" / "nats"
USERS = ("gateway", "store", "scheduler", "runner", "client", "admin")
DENIED = "Permissions Violation"


class ConfiguredNats:
    """nats-server on loopback with the deployment's users (passwords from its environment)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.monitor_port = free_port()
        self.passwords = {user: "tm" + secrets.token_hex(12) for user in USERS}  # never number-like
        self.log_path = root / "nats-server.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> ConfiguredNats:
        self.root.mkdir(parents=True, exist_ok=True)
        # include paths are relative to the including file, so the users file sits beside it
        shutil.copy(DEPLOY_NATS / "authorization.conf", self.root / "authorization.conf")
        (self.root / "nats.conf").write_text(
            f"listen: 127.0.0.1:{self.port}\nhttp: 127.0.0.1:{self.monitor_port}\n"
            f'jetstream {{ store_dir: "{self.root / "data"}" }}\ninclude ./authorization.conf\n'
        )
        env = {f"TASKMESH_NATS_{user.upper()}_PASSWORD": password for user, password in self.passwords.items()}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.root / "nats.conf")],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_http(f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true", timeout=10)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def credentials(self, user: str) -> dict[str, str]:
        return {"TASKMESH_NATS_USER": user, "TASKMESH_NATS_PASSWORD": self.passwords[user]}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Stack, ConfiguredNats]]:
    server = ConfiguredNats(tmp_path / "nats").start()
    stack = Stack(tmp_path)
    stack.nats = server  # type: ignore[assignment]  # Stack needs only .url and .stop()
    stack.instance = f"test-{secrets.token_hex(4)}"
    stack.http_port = free_port()
    try:
        for name in ("store", "scheduler", "runner", "gateway"):
            stack.start_service(name, **server.credentials(name))
        stack.wait_ready()
        yield stack, server
    finally:
        stack.stop()


@pytest.fixture
async def secured_api(secured: tuple[Stack, ConfiguredNats]) -> AsyncIterator[Api]:
    client = Api(secured[0].base_url)
    try:
        yield client
    finally:
        await client.close()


async def test_every_service_works_under_its_own_user_and_is_never_denied(
    secured: tuple[Stack, ConfiguredNats], secured_api: Api, target: TargetServer
) -> None:
    stack, server = secured
    immediate = await secured_api.submit({"name": "now", "task_type": "immediate", "api_url": f"{target.url}/hello"})
    delayed = await secured_api.submit(
        {
            "name": "later",
            "task_type": "delayed",
            "delay_seconds": 1,
            "api_url": f"{target.url}/echo",
            "method": "POST",
            "data": {"a": 1},
        }
    )
    cron = await secured_api.submit(
        {
            "name": "tick",
            "task_type": "scheduled",
            "cron_expression": "*/1 * * * * *",
            "api_url": f"{target.url}/hello",
            "max_runs": 2,
        }
    )
    limited = await secured_api.submit(  # flow control: permits in the schedules bucket
        {
            "name": "limited",
            "task_type": "immediate",
            "api_url": f"{target.url}/hello",
            "concurrency_key": "k",
            "max_concurrency": 1,
        }
    )
    retried = await secured_api.submit(  # a retry: the scheduler asks the store for the task's spec
        {
            "name": "retried",
            "task_type": "immediate",
            "api_url": f"{target.url}/status/500",
            "max_retries": 1,
            "retry_delay_seconds": 0.1,
        }
    )
    limit = await secured_api.client.put("/api/limits/k", json={"max_concurrency": 2})  # the leader answers
    assert limit.status_code == 200, limit.text
    assert (await secured_api.wait_final(limited["id"]))["status"] == "succeeded"
    assert [k["key"] for k in (await secured_api.get("/api/limits"))["limits"]] == ["k"]
    assert (await secured_api.wait_final(immediate["id"]))["status"] == "succeeded"
    assert (await secured_api.wait_final(delayed["id"]))["status"] == "succeeded"
    assert (await secured_api.wait_final(cron["id"]))["status"] == "completed"
    assert len(await secured_api.runs(cron["id"])) == 2
    retried_task = await secured_api.wait_final(retried["id"])
    assert (retried_task["status"], retried_task["last_run"]["attempt"]) == ("failed", 2), retried_task
    assert "GET" in await secured_api.log_text(immediate["id"])  # the store reads the logs bucket
    stats = await secured_api.get("/api/stats")  # the store reads WORK's consumer info
    assert stats is not None
    await secured_api.submit({"name": "gone", "task_type": "immediate", "api_url": f"{target.url}/hello"})
    response = await secured_api.client.delete(f"/api/tasks/{immediate['id']}")  # purges the buckets
    assert response.status_code == 200, response.text

    # a restarted store reads its buckets back (ordered consumers) and still answers
    stack.services["store"].stop(timeout=20)
    stack.start_service("store", **server.credentials("store"))
    stack.wait_ready()
    assert (await secured_api.task(delayed["id"]))["status"] == "succeeded"

    assert DENIED not in server.log(), server.log()[-3000:]
    for key, service in stack.services.items():
        assert "nats error" not in service.log(), f"{key}:\n{service.log()[-3000:]}"


async def test_secrets_are_set_listed_used_and_deleted_under_the_services_own_users(
    secured: tuple[Stack, ConfiguredNats], secured_api: Api, target: TargetServer
) -> None:
    stack, server = secured
    put = await secured_api.client.put("/api/secrets/PERMITTED", json={"value": "permitted-value"})
    assert put.status_code == 200, put.text
    assert [s["name"] for s in (await secured_api.get("/api/secrets"))["secrets"]] == ["PERMITTED"]
    body = {"name": "s", "task_type": "immediate", "api_url": f"{target.url}/echo", "method": "POST"}
    used = await secured_api.submit({**body, "data": {"k": "{{ secrets.PERMITTED }}"}})
    assert (await secured_api.wait_final(used["id"]))["status"] == "succeeded"
    assert target.bodies[-1] == {"k": "permitted-value"}  # the runner read and opened it
    assert (await secured_api.client.delete("/api/secrets/PERMITTED")).status_code == 200
    assert DENIED not in server.log(), server.log()[-3000:]
    for key, service in stack.services.items():
        assert "nats error" not in service.log(), f"{key}:\n{service.log()[-3000:]}"


async def test_the_store_carries_its_old_ack_all_consumer_over_under_its_own_user(tmp_path: Path) -> None:
    server = ConfiguredNats(tmp_path / "nats").start()
    stack = Stack(tmp_path)
    stack.nats = server  # type: ignore[assignment]
    admin = await nats.connect(server.url, user="admin", password=server.passwords["admin"])
    try:
        js = admin.jetstream()
        await natsio.ensure_stream(js, streams.streams()[subjects.STREAM_TASKS])
        spec = streams.CONSUMERS[subjects.CONSUMER_STORE_TASKS]
        await js.add_consumer(spec.stream, replace(spec.config, ack_policy=js_api.AckPolicy.ALL))
        stack.start_service("store", **server.credentials("store"))
        deadline = time.monotonic() + 30
        while "store ready" not in stack.services["store"].log():
            assert time.monotonic() < deadline and stack.services["store"].alive(), stack.logs()
            await asyncio.sleep(0.1)
        info = await js.consumer_info(spec.stream, spec.config.durable_name)
        assert info.config.ack_policy == js_api.AckPolicy.EXPLICIT
        assert DENIED not in server.log(), server.log()[-3000:]
    finally:
        await admin.close()
        stack.stop()


async def _denied(server: ConfiguredNats, user: str, subject: str, payload: bytes = b"{}") -> bool:
    """True when the server refuses ``user`` a publish to ``subject`` (seen in its own log)."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    client = await nats.connect(
        server.url,
        user=user,
        password=server.passwords[user],
        error_cb=on_error,
        allow_reconnect=False,
        inbox_prefix=subjects.inbox_prefix(user),  # its own inbox: only the publish can be refused
    )
    try:
        try:
            await client.request(subject, payload, timeout=1)
        except (NoRespondersError, NatsTimeout):
            pass
        deadline = time.monotonic() + 5
        while not any("permissions violation for publish" in str(e).lower() for e in errors):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("user", "subject"),
    [
        ("gateway", "$JS.API.CONSUMER.MSG.NEXT.WORK.runner-code"),
        ("gateway", "$JS.API.CONSUMER.DELETE.WORK.runner-api"),
        ("gateway", "taskmesh.work.code"),
        ("gateway", "$KV.tasks.x"),
        ("runner", "$KV.tasks.x"),
        ("runner", "$KV.runs.x.y"),
        ("runner", "$KV.logs.x.y.1.00000001"),
        ("runner", "$JS.API.STREAM.PURGE.KV_tasks"),
        ("runner", "taskmesh.task.x.submitted"),
        ("runner", "taskmesh.work.api"),
        ("runner", "taskmesh.api.tasks.submit"),
        # task and run records (results, inline headers) are the store's: a runner asks for a verdict
        ("runner", "$JS.API.DIRECT.GET.KV_tasks.x"),
        ("runner", "$JS.API.DIRECT.GET.KV_runs.x.y"),
        ("runner", "taskmesh.api.tasks.get"),
        ("scheduler", "$KV.tasks.x"),
        ("scheduler", "$JS.API.DIRECT.GET.KV_tasks.x"),
        ("scheduler", "taskmesh.task.x.cancelled"),
        ("scheduler", "$JS.API.STREAM.DELETE.WORK"),
        ("store", "taskmesh.work.code"),
        ("store", "$KV.leases.scheduler"),
        ("store", "$JS.API.CONSUMER.MSG.NEXT.WORK.runner-code"),
        ("client", "taskmesh.work.code"),
        ("client", "$KV.tasks.x"),
        ("client", "$JS.API.DIRECT.GET.KV_tasks.x"),
        ("client", "$JS.API.STREAM.MSG.GET.KV_tasks"),
        ("client", "$JS.API.CONSUMER.CREATE.WORK.runner-code"),
        ("client", "taskmesh.api.tasks.delete"),
        ("client", "taskmesh.control.cancel"),
        ("client", "taskmesh.run.x.y.finished"),
    ],
)
async def test_a_service_is_denied_what_is_not_its_business(tmp_path: Path, user: str, subject: str) -> None:
    server = ConfiguredNats(tmp_path / "nats").start()
    try:
        assert await _denied(server, user, subject), f"{user} may publish to {subject}"
    finally:
        server.stop()


async def test_a_wrong_password_is_refused(tmp_path: Path) -> None:
    server = ConfiguredNats(tmp_path / "nats").start()
    try:
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await nats.connect(
                server.url,
                user="runner",
                password="guess",
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
            )
    finally:
        server.stop()


async def _subscription_denied(server: ConfiguredNats, user: str, subject: str) -> bool:
    """True when the server refuses ``user`` a subscription to ``subject``."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    client = await nats.connect(
        server.url,
        user=user,
        password=server.passwords[user],
        error_cb=on_error,
        allow_reconnect=False,
        inbox_prefix=subjects.inbox_prefix(user),
    )
    try:
        await client.subscribe(subject)
        await client.flush(timeout=2)
        deadline = time.monotonic() + 5
        while not any("permissions violation for subscription" in str(e).lower() for e in errors):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("user", "subject"),
    [
        ("gateway", "_INBOX.runner.>"),
        ("gateway", "_INBOX.store.>"),
        ("gateway", "_INBOX.scheduler.>"),
        ("gateway", "_INBOX.>"),
        ("gateway", "_INBOX.*"),
        ("runner", "_INBOX.gateway.>"),
        ("scheduler", "_INBOX.runner.>"),
        ("store", "_INBOX.runner.>"),
        ("client", "_INBOX.gateway.>"),
        ("client", "_INBOX.runner.>"),
        ("client", "$KV.tasks.>"),
        ("client", "taskmesh.work.>"),
        ("client", "taskmesh.api.>"),
    ],
)
async def test_a_user_cannot_subscribe_to_another_users_inbox_nor_to_what_is_not_its_business(
    tmp_path: Path, user: str, subject: str
) -> None:
    server = ConfiguredNats(tmp_path / "nats").start()
    try:
        assert await _subscription_denied(server, user, subject), f"{user} may subscribe to {subject}"
    finally:
        server.stop()


async def test_the_client_user_submits_follows_its_task_and_sees_its_outcome_on_its_own_inbox(
    secured: tuple[Stack, ConfiguredNats], target: TargetServer
) -> None:
    _, server = secured
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    client = await nats.connect(
        server.url,
        user="client",
        password=server.passwords["client"],
        inbox_prefix=subjects.inbox_prefix("client"),
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        outcomes = await client.subscribe("taskmesh.run.*.*.finished")
        spec = {"name": "by-nats", "task_type": "immediate", "api_url": f"{target.url}/hello"}
        reply = await client.request(subjects.SUBMIT_TASK, json.dumps(spec).encode(), timeout=10)
        task_id = json.loads(reply.data)["id"]
        waited = await client.request(
            subjects.WAIT_TASK, json.dumps({"id": task_id, "timeout_seconds": 20}).encode(), timeout=30
        )
        assert json.loads(waited.data)["task"]["status"] == "succeeded", waited.data
        outcome = await outcomes.next_msg(timeout=10)
        assert outcome.subject.startswith(f"taskmesh.run.{task_id}.")
        got = await client.request(subjects.GET_TASK, json.dumps({"id": task_id}).encode(), timeout=10)
        assert task_id.encode() in got.data and b'"succeeded"' in got.data
    finally:
        await client.close()
    assert not errors, errors
    assert DENIED not in server.log(), server.log()[-3000:]

    # on the shared default inbox the reply cannot reach it: that inbox is no user's to read
    shared = await nats.connect(server.url, user="client", password=server.passwords["client"], allow_reconnect=False)
    try:
        with pytest.raises(NatsTimeout):
            await shared.request(subjects.GET_TASK, json.dumps({"id": task_id}).encode(), timeout=2)
    finally:
        await shared.close()
