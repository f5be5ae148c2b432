"""Two stores: one leads by a lease, the other stands by and takes over when the leader dies.

A store that loses its lease stops answering and writing (the fence) and leads again once it
gets the lease back; nothing accepted is lost or doubled either way.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from proto import control, subjects
from services.common.lease import LeaderLease
from tests.support import Api, Stack, TargetServer


async def _until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.1)


async def _store_check(api: Api) -> dict[str, Any]:
    response = await api.client.get("/api/health")
    return dict(response.json()["checks"]["store"])


async def _counters_settle(api: Api, total: int) -> None:
    last: dict[str, Any] = {}

    async def settled() -> bool:
        last.update(await api.get("/api/stats"))
        return bool(
            last["tasks_total"] == total and last["tasks_by_status"] == last["runs_by_status"] == {"succeeded": total}
        )

    try:
        await _until(settled, f"the counters show {total} succeeded tasks and runs", timeout=60)
    except AssertionError as exc:
        shown = {key: last.get(key) for key in ("tasks_total", "tasks_by_status", "runs_by_status")}
        raise AssertionError(f"{exc}: {shown}") from None


def _leader(stack: Stack) -> str:
    leading = [key for key in ("store", "store-2") if "store ready" in stack.services[key].log()]
    assert len(leading) == 1, leading
    return leading[0]


@pytest.fixture
async def two_stores(stack: Stack, api: Api) -> Stack:
    stack.start_service("store", key="store-2")
    await _until(lambda: _store_check(api), "the store answers")

    async def both_seen() -> bool:
        check = await _store_check(api)
        return check["status"] == "ok" and check.get("count") == 2 and "1 standby" in check["detail"]

    await _until(both_seen, "health shows a leading store and a standby")
    return stack


async def test_killing_the_leading_store_mid_burst_hands_over_to_the_standby_and_loses_nothing(
    two_stores: Stack, api: Api, target: TargetServer
) -> None:
    stack = two_stores
    leader = _leader(stack)
    standby = "store-2" if leader == "store" else "store"
    answers: dict[int, tuple[int, dict[str, Any]]] = {}

    async def submit(i: int) -> None:
        response = await api.client.post(
            "/api/tasks",
            timeout=60,
            json={"name": f"handover {i}", "task_type": "immediate", "api_url": f"{target.url}/hello"},
        )
        answers[i] = (response.status_code, response.json())

    gate = asyncio.Semaphore(20)

    async def gated(i: int) -> None:
        async with gate:
            await submit(i)

    burst = [asyncio.ensure_future(gated(i)) for i in range(300)]
    await _until(lambda: len(answers) >= 80, "a quarter of the burst is answered")
    stack.services[leader].kill()
    answered_at_kill = len(answers)
    await asyncio.gather(*burst)

    # the gateway repeated submissions through the handover: everyone got a 201, once
    assert answered_at_kill < 250
    statuses = Counter(status for status, _ in answers.values())
    assert statuses == {201: 300}, [body for status, body in answers.values() if status != 201][:3]
    ids = {str(body["id"]) for _, body in answers.values()}
    assert len(ids) == 300
    assert "store ready" in stack.services[standby].log()
    tasks = [await api.wait_final(task_id, timeout=120) for task_id in ids]
    assert [t for t in tasks if t["status"] != "succeeded" or t["run_count"] != 1] == []
    await _counters_settle(api, 300)
    assert target.hits["/hello"] >= 300

    async def only_the_new_leader() -> bool:  # the killed store's last heartbeat ages out
        check = await _store_check(api)
        return check["status"] == "ok" and check["count"] == 1 and "0 standby" in check["detail"]

    await _until(only_the_new_leader, "health shows one store, the new leader")


async def test_a_store_that_loses_its_lease_stops_answering_and_leads_again_when_it_is_free(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    first = await api.submit({"name": "before", "task_type": "immediate", "api_url": f"{target.url}/hello"})
    await api.wait_final(first["id"])
    assert stack.nats is not None
    nc = await nats.connect(stack.nats.url)
    try:
        lease = await nc.jetstream().key_value(subjects.BUCKET_STORE_LEASE)

        # Given the lease taken from the store by another holder, alive (it answers its pings)
        # and renewing it
        async def alive(msg: Msg) -> None:
            await nc.publish(msg.reply, control.PING_ALIVE)

        await nc.subscribe(subjects.store_ping("someone-else"), cb=alive)
        other = LeaderLease(lease, subjects.LEASE_STORE, "someone-else")
        await lease.purge(subjects.LEASE_STORE)
        assert await other.try_acquire()

        async def keep() -> None:
            while await other.renew():
                await asyncio.sleep(1)

        keeper = asyncio.create_task(keep())

        # Then the store stops answering within a renewal, and writes nothing
        async def store_down() -> bool:
            return (await _store_check(api))["status"] == "down"

        await _until(store_down, "the store stops answering", timeout=15)
        refused = await api.client.post(
            "/api/tasks",
            headers={"Idempotency-Key": "while-fenced"},
            timeout=60,
            json={"name": "fenced", "task_type": "immediate", "api_url": f"{target.url}/hello"},
        )
        assert refused.status_code == 503, refused.text
        # When the other holder lets go
        keeper.cancel()
        await other.release()

        # Then the store leads again, with what it had, and takes new work
        async def store_up() -> bool:
            return (await _store_check(api))["status"] == "ok"

        await _until(store_up, "the store leads again", timeout=30)
        assert (await api.task(first["id"]))["status"] == "succeeded"
        after = await api.submit({"name": "after", "task_type": "immediate", "api_url": f"{target.url}/hello"})
        assert (await api.wait_final(after["id"]))["status"] == "succeeded"
        await _counters_settle(api, 2)
    finally:
        await nc.close()


async def test_a_store_restarted_after_a_kill_takes_the_dead_stores_lease_without_waiting_for_it(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    first = await api.submit({"name": "before", "task_type": "immediate", "api_url": f"{target.url}/hello"})
    await api.wait_final(first["id"])
    # When the store is killed and started again at once (its lease still has seconds to run)
    stack.services["store"].kill()
    restarted = stack.start_service("store", key="store-again")

    # Then the new store sees the holder is gone (no process answers its ping) and leads
    await _until(lambda: "lease taken over from a holder that is gone" in restarted.log(), "the lease is taken over")
    after = await api.submit({"name": "after", "task_type": "immediate", "api_url": f"{target.url}/hello"})
    assert (await api.wait_final(after["id"]))["status"] == "succeeded"
    assert (await api.task(first["id"]))["status"] == "succeeded"
