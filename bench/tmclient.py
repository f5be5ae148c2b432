"""The load generator's side of Taskmesh: submit over NATS or HTTP, watch run events, read stats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

import aiohttp
import msgspec
import nats

SUBMIT = "taskmesh.api.tasks.submit"
STATS = "taskmesh.api.stats"
STARTED = "taskmesh.run.*.*.started"
FINISHED = "taskmesh.run.*.*.finished"
QUEUED = "taskmesh.run.*.*.queued"
SUBMITTED = "taskmesh.task.*.submitted"
MISSED = "taskmesh.schedule.*.missed"


class RunEvent(msgspec.Struct, kw_only=True):
    """The fields of TaskSubmitted and the run events a benchmark reads (the rest is ignored)."""

    task_id: str
    run_id: str = ""
    attempt: int = 1
    occurred_at: datetime
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    status: str = ""
    slot: str = ""


EVENT_DECODER = msgspec.json.Decoder(RunEvent)
ENCODER = msgspec.json.Encoder()


def api_task(url: str, name: str = "bench", **extra: Any) -> dict[str, Any]:
    """An immediate API task: one GET to the target server."""
    return {"name": name, "task_type": "immediate", "api_url": url, "method": "GET", **extra}


class EventLog:
    """Run events as they arrive on a core subscription: raw bytes and arrival time, decoded later."""

    def __init__(self, track: bool = False) -> None:
        self.raw: list[tuple[bytes, float]] = []
        self.track = track
        self.arrivals: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future] = {}

    async def on_message(self, message: Any) -> None:
        self.raw.append((message.data, time.time()))
        if self.track:
            task_id = message.subject.split(".", 3)[2]  # taskmesh.run.<task>.<run>.<kind>
            self.arrivals[task_id] = time.perf_counter()
            waiter = self.waiters.pop(task_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(self.arrivals[task_id])

    async def arrival(self, task_id: str, timeout_s: float) -> float:
        """perf_counter() at the first event of ``task_id`` (it may have come before we asked)."""
        if task_id not in self.arrivals:
            future = asyncio.get_running_loop().create_future()
            self.waiters[task_id] = future
            await asyncio.wait_for(future, timeout_s)
        return self.arrivals[task_id]

    def decoded(self) -> list[RunEvent]:
        return [EVENT_DECODER.decode(data) for data, _ in self.raw]

    def __len__(self) -> int:
        return len(self.raw)


class TaskmeshClient:
    """One NATS connection and one keep-alive HTTP session: a single client, as the issue asks."""

    def __init__(self, nats_url: str, base_url: str, http_connections: int = 64) -> None:
        self.nats_url, self.base_url, self.http_connections = nats_url, base_url, http_connections
        self.nc: Any = None
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> TaskmeshClient:
        self.nc = await nats.connect(self.nats_url, max_reconnect_attempts=3, pending_size=64 * 1024 * 1024)
        connector = aiohttp.TCPConnector(limit=self.http_connections, keepalive_timeout=60)
        self.http = aiohttp.ClientSession(self.base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=120))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.close()
        if self.nc is not None:
            await self.nc.drain()

    async def watch(self, subject: str, track: bool = False) -> EventLog:
        """Collect every event on ``subject``; ``track`` also notes when each task's first event arrived."""
        # A core subscription sees JetStream publishes too, without a consumer on the stream.
        log = EventLog(track)
        await self.nc.subscribe(
            subject, cb=log.on_message, pending_msgs_limit=2_000_000, pending_bytes_limit=1024 * 1024 * 1024
        )
        await self.nc.flush()
        return log

    async def submit_nats(self, spec: dict[str, Any], timeout_s: float = 30.0) -> str:
        reply = await self.nc.request(SUBMIT, ENCODER.encode(spec), timeout=timeout_s)
        body = msgspec.json.decode(reply.data)
        if "error" in body:
            raise RuntimeError(f"submission rejected: {body['error']}")
        return body["id"]

    async def submit_http(self, spec: dict[str, Any], wait_s: float | None = None) -> dict[str, Any]:
        assert self.http is not None
        params = {"wait": str(wait_s)} if wait_s is not None else None
        async with self.http.post(
            "/api/tasks", data=ENCODER.encode(spec), params=params, headers={"Content-Type": "application/json"}
        ) as response:
            body = await response.read()
            if response.status not in (200, 201, 202):
                raise RuntimeError(f"POST /api/tasks: {response.status} {body[:300]!r}")
            return msgspec.json.decode(body)

    async def get_json(self, path: str, **params: str) -> Any:
        assert self.http is not None
        async with self.http.get(path, params=params or None) as response:
            return msgspec.json.decode(await response.read())

    async def stats(self) -> dict[str, Any]:
        """The store's counters (over NATS: the same answer as GET /api/stats)."""
        reply = await self.nc.request(STATS, b"{}", timeout=10)
        return msgspec.json.decode(reply.data)

    async def count_status(self, status: str) -> int:
        return (await self.stats())["tasks_by_status"].get(status, 0)

    async def wait_count(self, status: str, target: int, timeout_s: float, interval_s: float = 0.02) -> float:
        """Poll the store until ``target`` tasks have ``status``; the wall time it was first seen."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = await self.count_status(status)
            if seen >= target:
                return time.time()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen} of {target} tasks {status} after {timeout_s} s")
            await asyncio.sleep(interval_s)


async def submit_all(
    submit: Callable[[dict[str, Any]], Awaitable[Any]], specs: Iterable[dict[str, Any]], concurrency: int
) -> list[Any]:
    """Submit every spec with at most ``concurrency`` requests in flight; results in order."""
    specs = list(specs)
    results: list[Any] = [None] * len(specs)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(specs):
            index = next_index
            next_index += 1
            results[index] = await submit(specs[index])

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(specs)) or 1)))
    return results


async def wait_events(log: EventLog, count: int, timeout_s: float) -> bool:
    """Until ``log`` holds ``count`` events; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while len(log) < count:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


class CpuMeter:
    """CPU used by this process (the load generator) over a phase, as a share of one core."""

    def __enter__(self) -> CpuMeter:
        self.cpu0, self.wall0 = time.process_time(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_s = time.process_time() - self.cpu0
        self.wall_s = time.monotonic() - self.wall0

    @property
    def share(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def split_lateness(queued: EventLog, started: list[RunEvent]) -> dict[str, float | None]:
    """Where start lateness comes from: due → queued (scheduler) and queued → started (WORK + runner), p50/p99 ms."""
    from bench.stats import summarize

    queued_at = {event.run_id: event for event in queued.decoded()}
    scheduler, runner = [], []
    for event in started:
        fire = queued_at.get(event.run_id)
        if fire is None or fire.scheduled_for is None:
            continue
        scheduler.append((fire.occurred_at - fire.scheduled_for).total_seconds() * 1000)
        runner.append((event.occurred_at - fire.occurred_at).total_seconds() * 1000)
    first, second = summarize(scheduler), summarize(runner)
    return {
        "due_to_queued_p50": first["p50"],
        "due_to_queued_p99": first["p99"],
        "queued_to_started_p50": second["p50"],
        "queued_to_started_p99": second["p99"],
    }


def describe_split(split: dict[str, float | None]) -> str:
    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    return (
        f"due → queued (scheduler) p50 {ms(split['due_to_queued_p50'])} / p99 {ms(split['due_to_queued_p99'])} ms, "
        f"queued → started (work queue + runner) p50 {ms(split['queued_to_started_p50'])} / "
        f"p99 {ms(split['queued_to_started_p99'])} ms"
    )
