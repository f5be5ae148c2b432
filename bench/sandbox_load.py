"""Code-task load shared by W5 and the scale-out runs: sequential round trips, bursts, the raw engine rate."""

from __future__ import annotations

import asyncio
import time

from bench.celery_app.sandbox import CONTAINER_LABEL, SANDBOX_FLAGS
from bench.stack import TaskmeshStack
from bench.tmclient import FINISHED, TaskmeshClient, submit_all

CODE = "def main():\n    return 1 + 1\n"


def code_task(name: str, code: str = CODE, requirements: list[str] | None = None) -> dict:
    return {
        "name": name,
        "task_type": "immediate",
        "function_code": code,
        "function_name": "main",
        **({"requirements": requirements} if requirements else {}),
    }


async def sequential(client: TaskmeshClient, spec: dict, n: int, pace_s: float) -> tuple[list[float], list[dict]]:
    """``n`` round trips POST ?wait= one after another (``pace_s`` apart); ms each, and the tasks."""
    latencies, tasks = [], []
    for _ in range(n):
        started = time.perf_counter()
        task = await client.submit_http(spec, wait_s=300)
        latencies.append((time.perf_counter() - started) * 1000)
        if task.get("status") != "succeeded":
            raise RuntimeError(f"code task {task.get('status')}: {task.get('error')}")
        tasks.append(task)
        await asyncio.sleep(pace_s)
    return latencies, tasks


async def burst(stack: TaskmeshStack, n: int, timeout_s: float = 600) -> dict:
    """``n`` short code tasks submitted at once over NATS; rate from the first submit to the last finished.

    The end is the last run's finished event, not a poll of the store's counters: polling every
    50 ms cost the store and nats-server ~15 ms of CPU per code run, CPU the engine then lacked
    (the raw ``docker run`` reference pays nothing like it). The store's count is checked after.
    """
    async with TaskmeshClient(stack.nats.url, stack.base_url) as client:  # type: ignore[union-attr]
        baseline = await client.count_status("succeeded")
        finished = await client.watch(FINISHED, track=True)
        first = time.time()
        started = time.perf_counter()
        task_ids = await submit_all(client.submit_nats, [code_task(f"burst-{i}") for i in range(n)], 64)
        deadline = started + timeout_s
        last = max([await finished.arrival(task_id, max(1.0, deadline - time.perf_counter())) for task_id in task_ids])
        await client.wait_count("succeeded", baseline + n, 60)  # every run succeeded, and the store has it
    elapsed = last - started
    return {"n": n, "completion_s": elapsed, "rate_per_s": n / elapsed, "first_submit": first}


async def raw_docker(image: str, n: int, concurrency: int) -> dict:
    """The engine's own rate: ``docker run --rm`` (same hardening) ``n`` times, ``concurrency`` at once."""
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one() -> None:
        async with semaphore:
            started = time.perf_counter()
            process = await asyncio.create_subprocess_exec(
                "docker",
                "run",
                "--rm",
                "--label",
                CONTAINER_LABEL,
                *SANDBOX_FLAGS,
                image,
                "python3",
                "-c",
                "print(1 + 1)",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, stderr = await process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"docker run failed: {stderr.decode()[-500:]}")
            latencies.append((time.perf_counter() - started) * 1000)

    began = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.monotonic() - began
    return {"n": n, "concurrency": concurrency, "rate_per_s": n / elapsed, "latencies_ms": latencies}


def wait_pool(stack: TaskmeshStack, want: int, timeout_s: float = 60) -> int:
    """Until every runner reports ``want`` warm containers (heartbeats, every 2 s)."""
    deadline = time.monotonic() + timeout_s
    ready = 0
    while time.monotonic() < deadline:
        runners = stack.health().get("runners", [])
        ready = min((r.get("sandbox", {}).get("pool_ready", 0) for r in runners), default=0)
        if runners and ready >= want:
            return ready
        time.sleep(0.5)
    return ready
