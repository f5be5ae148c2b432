"""Retention at volume: a sweep that finds many batches of expired tasks deletes them all, and
the store keeps answering meanwhile."""

from __future__ import annotations

import asyncio
import re
import time

from tests.support import Api, Stack, TargetServer

TASKS = 400
BATCH = 50


async def test_a_sweep_deletes_every_expired_batch_and_the_store_keeps_answering(
    tmp_path, target: TargetServer
) -> None:
    stack = Stack(
        tmp_path,
        env_extra={
            "TASKMESH_TASK_RETENTION": "1",
            # long enough that every task has finished and expired before the first sweep
            "TASKMESH_RETENTION_SWEEP_INTERVAL": "20",
            "TASKMESH_RETENTION_BATCH": str(BATCH),
        },
    ).start()
    api = Api(stack.base_url)
    try:
        gate = asyncio.Semaphore(20)

        async def submit(i: int) -> str:
            async with gate:
                task = await api.submit(
                    {"name": f"expiring {i}", "task_type": "immediate", "api_url": f"{target.url}/hello"}
                )
                return str(task["id"])

        ids = await asyncio.gather(*(submit(i) for i in range(TASKS)))
        for task_id in ids:
            await api.wait_final(task_id)

        deadline = time.monotonic() + 90
        while True:  # every poll is an answer from the store: a wedged sweep fails it
            stats = await api.get("/api/stats")
            if stats["tasks_total"] == 0:
                break
            assert time.monotonic() < deadline, f"{stats['tasks_total']} tasks left\n{stack.logs()}"
            await asyncio.sleep(0.5)
        for task_id in ids[::40]:
            assert (await api.client.get(f"/api/tasks/{task_id}")).status_code == 404
        swept = [
            int(n) for n in re.findall(r"retention removed finished tasks\s+count=(\d+)", stack.services["store"].log())
        ]
        assert sum(swept) == TASKS and max(swept) > BATCH, swept  # one sweep went through several batches
    finally:
        await api.close()
        stack.stop()
