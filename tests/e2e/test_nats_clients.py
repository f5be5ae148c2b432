"""Clients that speak NATS only. Deliberately imports nothing from the project: a client in any
language would see exactly these subjects and JSON bodies."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from datetime import datetime

import nats

from tests.support import Stack, TargetServer


def _instant(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


async def test_a_plain_nats_client_submits_and_follows_a_task(stack: Stack, target: TargetServer) -> None:
    assert stack.nats is not None
    nc = await nats.connect(stack.nats.url)
    try:
        finished = await nc.subscribe("taskmesh.run.*.*.finished")
        body = {
            "name": "from nats",
            "task_type": "immediate",
            "api_url": f"{target.url}/echo",
            "method": "POST",
            "data": {"via": "nats"},
            "timeout": 30,
        }
        reply = await nc.request(
            "taskmesh.api.tasks.submit", json.dumps(body).encode(), timeout=5, headers={"Nats-Msg-Id": "client-key-1"}
        )
        accepted = json.loads(reply.data)
        assert accepted["status"] == "pending" and accepted["id"]
        task_id = accepted["id"]

        # the outcome arrives as an event, and the store has it when asked
        event = json.loads((await finished.next_msg(timeout=20)).data)
        assert event["type"] == "run_finished" and event["task_id"] == task_id and event["status"] == "succeeded"
        waited = json.loads(
            (
                await nc.request(
                    "taskmesh.api.tasks.wait", json.dumps({"id": task_id, "timeout_seconds": 10}).encode(), timeout=15
                )
            ).data
        )
        assert waited["done"] is True and waited["task"]["result"]["body"]["body"] == {"via": "nats"}

        # the same idempotency key gives back the same task, and nothing runs twice
        again = json.loads(
            (
                await nc.request(
                    "taskmesh.api.tasks.submit",
                    json.dumps(body).encode(),
                    timeout=5,
                    headers={"Nats-Msg-Id": "client-key-1"},
                )
            ).data
        )
        assert again["id"] == task_id and again["replayed"] is True
        assert target.bodies == [{"via": "nats"}]
    finally:
        await nc.close()


async def test_a_plain_nats_client_gets_a_rejection_naming_the_field(stack: Stack) -> None:
    assert stack.nats is not None
    nc = await nats.connect(stack.nats.url)
    try:
        cases = [
            ({"name": "x", "task_type": "soon", "api_url": "http://127.0.0.1:1/"}, "task_type"),
            ({"name": "x", "task_type": "immediate", "function_code": "def f(): pass"}, "function_name"),
            ({"name": "x", "task_type": "immediate", "api_url": "ftp://127.0.0.1/"}, "api_url"),
            (
                {"name": "x", "task_type": "delayed", "delay_seconds": -1, "api_url": "http://127.0.0.1:1/"},
                "delay_seconds",
            ),
        ]
        for body, field in cases:
            reply = await nc.request("taskmesh.api.tasks.submit", json.dumps(body).encode(), timeout=5)
            error = json.loads(reply.data)["error"]
            assert error["field"] == field and error["message"], body
            assert reply.headers and reply.headers.get("Taskmesh-Error") == error["code"]
        garbage = await nc.request("taskmesh.api.tasks.submit", b"{nope", timeout=5)
        assert json.loads(garbage.data)["error"]["code"] == "invalid_json"
        # nothing was accepted: the TASKS stream holds no event
        js = nc.jetstream()
        assert (await js.stream_info("TASKS")).state.messages == 0
    finally:
        await nc.close()


async def test_a_plain_nats_client_can_submit_and_wait_in_one_request(stack: Stack, target: TargetServer) -> None:
    assert stack.nats is not None
    nc = await nats.connect(stack.nats.url)
    try:
        body = {"name": "sync", "task_type": "immediate", "api_url": f"{target.url}/hello"}
        reply = await nc.request(
            "taskmesh.api.tasks.submit", json.dumps(body).encode(), timeout=15, headers={"Taskmesh-Wait": "10"}
        )
        accepted = json.loads(reply.data)
        assert accepted["done"] is True and accepted["status"] == "succeeded"
        assert accepted["task"]["result"]["body"] == {"hello": "world", "method": "GET"}
        bad = await nc.request(
            "taskmesh.api.tasks.submit", json.dumps(body).encode(), timeout=5, headers={"Taskmesh-Wait": "soon"}
        )
        assert json.loads(bad.data)["error"]["field"] == "wait"
    finally:
        await nc.close()


def uuid7(unix_seconds: float) -> str:
    """A UUIDv7 drawn at ``unix_seconds`` (Python 3.11 has no uuid.uuid7)."""
    value = int(unix_seconds * 1000) << 80 | 0x7 << 76 | secrets.randbits(12) << 64 | 0b10 << 62 | secrets.randbits(62)
    return str(uuid.UUID(int=value))


async def test_a_repeat_with_the_same_submission_id_gets_the_same_task_and_other_uses_are_named(
    stack: Stack, target: TargetServer
) -> None:
    assert stack.nats is not None
    nc = await nats.connect(stack.nats.url)
    try:

        async def submit(body: dict[str, object], submission_id: str) -> dict[str, object]:
            reply = await nc.request(
                "taskmesh.api.tasks.submit",
                json.dumps(body).encode(),
                timeout=5,
                headers={"Taskmesh-Submission-Id": submission_id},
            )
            return dict(json.loads(reply.data))

        body = {"name": "once", "task_type": "immediate", "api_url": f"{target.url}/hello"}
        drawn = uuid7(time.time())
        first = await submit(body, drawn)
        again = await submit(body, drawn)  # as after a lost reply
        assert first["id"] == again["id"] == drawn and again["replayed"] is True, (first, again)
        js = nc.jetstream()
        assert (await js.stream_info("TASKS")).state.messages == 1  # one submission event for both

        refusals = [
            ({**body, "name": "another"}, drawn, "another submission"),  # someone else's id: not a way in
            (body, str(uuid.uuid4()), "UUIDv7"),
            (body, drawn.upper(), "canonical"),
            (body, uuid7(time.time() - 600), "old"),  # outside JetStream's duplicate window
        ]
        for refused_body, submission_id, words in refusals:
            error = (await submit(refused_body, submission_id))["error"]
            assert error["field"] == "Taskmesh-Submission-Id" and words in error["message"], error
        assert (await js.stream_info("TASKS")).state.messages == 1
    finally:
        await nc.close()


async def test_a_short_api_runs_log_comes_with_its_outcome_and_is_served_by_the_store(
    stack: Stack, target: TargetServer
) -> None:
    assert stack.nats is not None
    nc = await nats.connect(stack.nats.url)
    try:
        finished = await nc.subscribe("taskmesh.run.*.*.finished")
        chunks = await nc.subscribe("taskmesh.log.>")
        body = {"name": "short log", "task_type": "immediate", "api_url": f"{target.url}/echo", "timeout": 30}
        task_id = json.loads(
            (await nc.request("taskmesh.api.tasks.submit", json.dumps(body).encode(), timeout=5)).data
        )["id"]

        # the outcome carries the run's log (its two lines) and counts it in its chunks
        event = json.loads((await finished.next_msg(timeout=20)).data)
        assert event["task_id"] == task_id and event["status"] == "succeeded"
        carried = [chunk["data"] for chunk in event["log"]]
        if carried:
            # nothing of it went out as a chunk of its own
            assert chunks.pending_msgs == 0
        else:
            # The runner publishes what a run printed every 100 ms: only a run that lasted that
            # long (a host slowed down) may have sent its first line before its outcome.
            lasted = _instant(event["occurred_at"]) - _instant(event["started_at"])
            assert lasted >= 0.1, f"a run of {lasted:.3f} s did not carry its log in its outcome"
            carried = [json.loads((await chunks.next_msg(timeout=5)).data)["data"] for _ in range(event["log_chunks"])]
        assert len(carried) == event["log_chunks"] >= 1
        lines = "".join(carried).splitlines()
        assert len(lines) == 2 and lines[0].startswith(f"GET {target.url}/echo") and lines[1].startswith("200 OK")

        # and the store serves the same lines as the run's log, and then says it is all of it (a log
        # sent on LOGS can be stored whole before the store applies the outcome: finished follows)
        deadline = time.monotonic() + 10
        while True:
            reply = json.loads(
                (await nc.request("taskmesh.api.logs.get", json.dumps({"id": task_id}).encode(), timeout=5)).data
            )
            served = [chunk["data"] for chunk in reply["chunks"]]
            if (served == carried and reply["finished"]) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert [chunk["data"] for chunk in reply["chunks"]] == carried and reply["finished"] is True
    finally:
        await nc.close()
