"""Retained history lives in KV and the catalog, not in the store's memory: restarts, rebuilds, sweeps.

Each test runs a real stack (nats-server and the four services as processes) and restarts or
kills its store; KV is read directly to check that what the API lists is what KV holds.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import nats
import pytest

from proto import subjects
from tests.support import Api, Stack, TargetServer


async def submit_many(api: Api, target: TargetServer, count: int, name: str = "kept") -> list[str]:
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> str:
        async with gate:
            created = await api.submit(
                {"name": f"{name}-{i}", "task_type": "immediate", "api_url": f"{target.url}/hello"}
            )
            return created["id"]

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def wait_all_final(api: Api, ids: list[str]) -> None:
    gate = asyncio.Semaphore(32)

    async def one(task_id: str) -> None:
        async with gate:
            await api.wait_final(task_id, timeout=120)

    await asyncio.gather(*(one(t) for t in ids))


async def list_everything(api: Api, limit: int = 37, **filters: Any) -> list[dict[str, Any]]:
    found, cursor = [], None
    while True:
        page = await api.get("/api/tasks", limit=limit, **filters, **({"cursor": cursor} if cursor else {}))
        found += page["tasks"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def kv_tasks(stack: Stack) -> dict[str, str]:
    """Task id → status, as the tasks bucket holds them (delete markers left out)."""
    assert stack.nats is not None
    nc = await nats.connect(stack.nats.url)
    try:
        kv = await nc.jetstream().key_value(subjects.BUCKET_TASKS)
        found = {}
        try:
            keys = await kv.keys()
        except Exception:  # no keys at all
            return {}
        for key in keys:
            entry = await kv.get(key)
            found[key] = json.loads(entry.value)["status"]
        return found
    finally:
        await nc.close()


def restart_store(stack: Stack, *, kill: bool = False) -> None:
    store = stack.services["store"]
    if kill:
        store.kill()
    else:
        store.stop()
    stack.start_service("store", key="store")
    stack.wait_ready()


def loaded_line(stack: Stack) -> dict[str, str]:
    """The fields of the store's last "state loaded" log line."""
    lines = [line for line in stack.services["store"].log().splitlines() if "state loaded" in line]
    assert lines, stack.services["store"].log()[-3000:]
    return dict(re.findall(r"(\w+)=(\S+)", lines[-1]))


async def test_a_restarted_store_serves_history_it_has_not_read_back(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    ids = await submit_many(api, target, 120)
    await wait_all_final(api, ids)

    restart_store(stack)

    loaded = loaded_line(stack)
    assert loaded["tasks"] == "0", "nothing was in progress, so nothing was read back"
    assert loaded["catalogued"] == "120"
    oldest = await api.task(ids[0])  # read from KV on demand
    assert oldest["status"] == "succeeded" and oldest["result"]["status_code"] == 200
    assert len(await list_everything(api)) == 120
    assert (await api.get("/api/stats"))["tasks_by_status"] == {"succeeded": 120}


async def test_a_deleted_catalog_is_rebuilt_and_lists_what_kv_holds(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    ids = await submit_many(api, target, 60)
    await wait_all_final(api, ids)
    await api.client.delete(f"/api/tasks/{ids[0]}")
    stack.services["store"].stop()
    catalog = Path(stack.env()["TASKMESH_STORE_DIR"]) / "catalog.sqlite3"
    assert catalog.exists()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{catalog}{suffix}").unlink(missing_ok=True)

    stack.start_service("store", key="store")
    stack.wait_ready()

    assert loaded_line(stack)["catalog_rebuilt"] == "True"
    listed = {task["id"]: task["status"] for task in await list_everything(api)}
    assert listed == await kv_tasks(stack)
    assert len(listed) == 59


async def test_a_catalog_damaged_on_disk_is_found_after_the_start_and_rebuilt_from_kv(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    ids = await submit_many(api, target, 300)
    await wait_all_final(api, ids)
    stack.services["store"].stop()
    catalog = Path(stack.env()["TASKMESH_STORE_DIR"]) / "catalog.sqlite3"
    with catalog.open("r+b") as raw:  # a disk fault in a table page; the header stays readable
        raw.seek(raw.seek(0, 2) // 2 // 4096 * 4096)
        raw.write(b"\xa5" * 4096)

    stack.start_service("store", key="store")
    stack.wait_ready()

    deadline = time.monotonic() + 60
    while "catalog rebuilt from KV" not in stack.services["store"].log():
        assert time.monotonic() < deadline, stack.services["store"].log()[-3000:]
        await asyncio.sleep(0.2)
    assert "catalog damaged" in stack.services["store"].log() or "unusable" in stack.services["store"].log()
    deadline = time.monotonic() + 30
    while True:  # the store leads again with the rebuilt catalog
        try:
            listed = {task["id"]: task["status"] for task in await list_everything(api)}
        except AssertionError:  # a 503 while it takes the lead again
            listed = {}
        if listed == await kv_tasks(stack):
            break
        assert time.monotonic() < deadline, f"{len(listed)} listed"
        await asyncio.sleep(0.5)
    assert len(listed) == 300


async def test_a_cursor_from_before_a_restart_continues_the_same_listing(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    ids = await submit_many(api, target, 40)
    await wait_all_final(api, ids)
    first = await api.get("/api/tasks", limit=15)

    restart_store(stack)
    newer = await submit_many(api, target, 5, name="newer")  # inserted between the two pages
    rest = await list_everything(api, cursor=first["next_cursor"])

    assert [t["id"] for t in first["tasks"] + rest] == sorted(ids, reverse=True)  # ids sort by creation
    assert not set(newer) & {t["id"] for t in rest}


@pytest.mark.slow
async def test_retention_removes_tasks_from_the_catalog_and_from_kv(tmp_path: Path, target: TargetServer) -> None:
    stack = Stack(tmp_path, env_extra={"TASKMESH_TASK_RETENTION": "2", "TASKMESH_RETENTION_SWEEP_INTERVAL": "0.3"})
    stack.start()
    api = Api(stack.base_url)
    try:
        ids = await submit_many(api, target, 30)
        await wait_all_final(api, ids)
        deadline = asyncio.get_running_loop().time() + 30
        while await list_everything(api):
            assert asyncio.get_running_loop().time() < deadline, "retention never removed the tasks"
            await asyncio.sleep(0.3)
        assert (await api.get("/api/stats"))["tasks_total"] == 0
        # Lists answer from the store's memory; its purges reach KV with the next flush.
        while await kv_tasks(stack):
            assert asyncio.get_running_loop().time() < deadline, "the removed tasks stayed in KV"
            await asyncio.sleep(0.1)
    finally:
        await api.close()
        stack.stop()


async def test_a_store_killed_mid_burst_has_a_catalog_that_agrees_with_kv_after_restart(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    async def submit_or_not(i: int) -> None:
        body = {"name": f"burst-{i}", "task_type": "immediate", "api_url": f"{target.url}/hello"}
        try:
            await api.client.post("/api/tasks", json=body, timeout=15)  # 201, or 503 while the store is away
        except Exception:  # a request cut by the kill
            pass

    gate = asyncio.Semaphore(16)

    async def gated(i: int) -> None:
        async with gate:
            await submit_or_not(i)

    burst = asyncio.gather(*(gated(i) for i in range(400)))
    deadline = asyncio.get_running_loop().time() + 60
    while len(await kv_tasks(stack)) < 100:  # batches are being written to KV and the catalog
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    stack.services["store"].kill()
    stack.start_service("store", key="store")
    stack.wait_ready()
    await burst

    async def settled() -> bool:
        listed = {task["id"]: task["status"] for task in await list_everything(api, limit=500)}
        in_kv = await kv_tasks(stack)
        return listed == in_kv and all(status == "succeeded" for status in listed.values())

    deadline = asyncio.get_running_loop().time() + 90
    while not await settled():
        assert asyncio.get_running_loop().time() < deadline, "catalog and KV never agreed"
        await asyncio.sleep(0.5)


async def test_tasks_running_when_the_store_is_killed_are_listed_and_counted_as_running_after_restart(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    # Given three runs in progress, written to KV as running (flushes write no catalog row for that step)
    ids = [
        (await api.submit({"name": f"long-{i}", "task_type": "immediate", "api_url": f"{target.url}/slow?seconds=12"}))[
            "id"
        ]
        for i in range(3)
    ]
    deadline = time.monotonic() + 30
    while [(await kv_tasks(stack)).get(task_id) for task_id in ids] != ["running"] * 3:
        assert time.monotonic() < deadline, await kv_tasks(stack)
        await asyncio.sleep(0.1)

    # When the store is killed and started again
    restart_store(stack, kill=True)

    # Then lists and counts show them running, and their outcomes land as usual
    assert (await api.get("/api/stats"))["tasks_by_status"] == {"running": 3}
    assert sorted(task["id"] for task in await list_everything(api, status="running")) == sorted(ids)
    assert await list_everything(api, status="pending") == []
    for task_id in ids:
        assert (await api.wait_final(task_id, timeout=60))["status"] == "succeeded"
    assert (await api.get("/api/stats"))["tasks_by_status"] == {"succeeded": 3}


async def test_the_running_store_copies_the_catalogs_wal_into_its_file(
    stack: Stack, api: Api, target: TargetServer
) -> None:
    # Commits leave the WAL alone (a checkpoint inside one stopped the event loop); a task of the
    # store's copies it into the database file while it runs, so the file grows without a restart.
    catalog = Path(stack.env()["TASKMESH_STORE_DIR"]) / "catalog.sqlite3"
    before = catalog.stat().st_size
    ids = await submit_many(api, target, 150)
    await wait_all_final(api, ids)
    deadline = time.monotonic() + 15
    while catalog.stat().st_size <= before and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert catalog.stat().st_size > before
    assert len(await list_everything(api, limit=100)) == 150
