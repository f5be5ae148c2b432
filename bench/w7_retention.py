"""W7 retention scale: memory, disk, restart and list latency as finished tasks pile up; then a soak."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from bench import natsmon, procs
from bench.report import WorkloadResult
from bench.running import Context, run_async
from bench.stack import TaskmeshStack
from bench.stats import summarize
from bench.tmclient import TaskmeshClient, api_task, submit_all
from taskmesh.processes import ServiceProcess

NAME = "W7"
GOAL_STORE_MIB = 150.0
GOAL_STORE_GROWTH = 1.5
GOAL_NATS_KIB_PER_TASK = 0.5
GOAL_DISK_KIB_PER_TASK = 3.0
GOAL_RESTART_MS = 3000.0
GOAL_PAGE_P99_MS = 20.0
GOAL_FILTER_P99_MS = 50.0
SETTLE_S = 3.0
IDLE_S = 45.0
"""Seconds after the load when RSS is read again ("idle"): nats-server's block caches have expired by then."""
CHUNK = 5_000
"""Tasks submitted between two looks at the backlog."""
NAME_PREFIX = "w7-00001"
"""Matches tasks 1,000–1,999 (names are ``w7-<7 digits>``): a selective prefix, present from 2,000 on."""
QUERIES = {
    "first page": ("/api/tasks", {"limit": "50"}),
    "status filter": ("/api/tasks", {"status": "succeeded", "limit": "50"}),
    "name-prefix filter": ("/api/tasks", {"name": NAME_PREFIX, "limit": "50"}),
    "common name prefix": ("/api/tasks", {"name": "w7-", "limit": "50"}),
    "/api/stats": ("/api/stats", {}),
}
_FIELD = re.compile(r"(\w+)=(\S+)")


def task_name(number: int) -> str:
    return f"w7-{number:07d}"


@contextlib.contextmanager
def w7_stack(ctx: Context, name: str, **env: str) -> Iterator[TaskmeshStack]:
    """A fresh stack whose nats-server also serves Go's pprof (heap attribution)."""
    root = ctx.directory(f"taskmesh-{name}")
    nats = natsmon.ProfiledNatsServer(root / "nats", log_path=root / "logs" / "nats-server.log")
    stack = TaskmeshStack(root, env_extra=env, nats=nats)
    try:
        yield stack.start()
    finally:
        stack.stop()


async def fill(client: TaskmeshClient, url: str, start: int, stop: int, concurrency: int, max_backlog: int) -> dict:
    """Submit tasks ``start``…``stop - 1`` over NATS as fast as accepted (at most ``max_backlog``
    unfinished), then wait until all of them succeeded."""
    began = time.monotonic()
    for low in range(start, stop, CHUNK):
        if low > max_backlog:
            await client.wait_count("succeeded", low - max_backlog, timeout_s=600.0, interval_s=0.2)
        specs = [api_task(url, name=task_name(n)) for n in range(low, min(stop, low + CHUNK))]
        await submit_all(client.submit_nats, specs, concurrency)
    submitted = time.monotonic()
    await client.wait_count("succeeded", stop, timeout_s=max(300.0, (stop - start) / 20), interval_s=0.2)
    failed = await client.count_status("failed")
    rate = (stop - start) / (time.monotonic() - began)
    return {"submit_s": round(submitted - began, 1), "rate_per_s": round(rate, 1), "failed": failed}


async def latencies(client: TaskmeshClient, requests: int) -> dict[str, dict]:
    """Sequential GETs through the gateway: ms summaries per query (statuses other than 200 counted)."""
    assert client.http is not None
    found: dict[str, dict] = {}
    for label, (path, params) in QUERIES.items():
        samples, errors = [], 0
        for _ in range(requests):
            began = time.perf_counter()
            async with client.http.get(path, params=params) as response:
                await response.read()
                errors += response.status != 200
            samples.append((time.perf_counter() - began) * 1000)
        found[label] = {**summarize(samples), "errors": errors}
    return found


async def restart_store(stack: TaskmeshStack, client: TaskmeshClient, timeout_s: float = 300.0) -> dict:
    """kill -9 the store, start it again; ms until ``GET /api/tasks?limit=50`` answers 200, and its log line."""
    assert client.http is not None
    old = stack.services["store"]
    old.kill()
    log_path = stack.root / "logs" / f"store-{int(time.time())}.log"
    began = time.perf_counter()
    stack.services["store"] = ServiceProcess("store", stack.env(), log_path=log_path).start()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with client.http.get(
                "/api/tasks", params={"limit": "50"}, timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                await response.read()
                if response.status == 200:
                    break
        except (aiohttp.ClientError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the restarted store did not serve within {timeout_s} s")
        await asyncio.sleep(0.02)
    serving_ms = (time.perf_counter() - began) * 1000
    return {"serving_ms": round(serving_ms, 1), "state_loaded": state_loaded(log_path)}


def state_loaded(log_path: Path) -> dict[str, str]:
    """The fields of the store's ``state loaded`` line (text log format: ``key=value``)."""
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if "state loaded" in line:
            return dict(_FIELD.findall(line))
    return {}


def catalog_bytes(stack: TaskmeshStack) -> int:
    """The catalog file with its WAL."""
    return sum(path.stat().st_size for path in (stack.root / "store").glob("catalog.sqlite3*"))


async def checkpoint(stack: TaskmeshStack, client: TaskmeshClient, retained: int, requests: int) -> dict:
    """Everything W7 measures with ``retained`` finished tasks."""
    loaded = time.monotonic()
    await asyncio.sleep(SETTLE_S)
    assert stack.nats is not None
    rss = {name: procs.tree_rss_mib(pid) for name, pid in stack.pids().items()}
    figures: dict = {
        "retained": retained,
        "rss_mib": rss,
        "jetstream_bytes": natsmon.disk_bytes(stack.root / "nats" / "jetstream"),
        "catalog_bytes": catalog_bytes(stack),
    }
    figures["varz"] = await asyncio.to_thread(natsmon.varz, stack.nats)
    figures["streams"] = await asyncio.to_thread(natsmon.streams, stack.nats)
    figures["heap"] = await asyncio.to_thread(natsmon.heap, stack.nats)  # type: ignore[arg-type]
    figures["latency_ms"] = await latencies(client, requests)
    figures["restart"] = await restart_store(stack, client)
    await asyncio.sleep(max(0.0, IDLE_S - (time.monotonic() - loaded)))
    # caches of nats-server's message blocks expire after seconds of quiet: what stays is per retained task
    figures["idle"] = {
        "rss_mib": {name: procs.tree_rss_mib(pid) for name, pid in stack.pids().items()},
        "heap": await asyncio.to_thread(natsmon.heap, stack.nats),
    }  # type: ignore[arg-type]
    return figures


async def retention_curve(
    stack: TaskmeshStack, url: str, sizes: tuple[int, ...], concurrency: int, max_backlog: int, requests: int
) -> dict:
    async with TaskmeshClient(stack.nats.url, stack.base_url, 8) as client:  # type: ignore[union-attr]
        await asyncio.sleep(SETTLE_S)
        idle = {name: procs.tree_rss_mib(pid) for name, pid in stack.pids().items()}
        points, done = [], 0
        for size in sizes:
            load = await fill(client, url, done, size, concurrency, max_backlog)
            done = size
            point = await checkpoint(stack, client, size, requests)
            point["load"] = load
            points.append(point)
            print(f"bench: W7 {size:,} retained: {summary_line(point)}", flush=True)
    return {"idle_rss_mib": idle, "points": points}


def summary_line(point: dict) -> str:
    latency = point["latency_ms"]
    return (
        f"store {point['rss_mib'].get('store')} MiB, nats-server {point['rss_mib'].get('nats-server')} MiB, "
        f"jetstream {point['jetstream_bytes'] / 2**20:.0f} MiB, restart {point['restart']['serving_ms']:.0f} ms, "
        f"page p99 {latency['first page']['p99']:.1f} ms"
    )


async def soak(stack: TaskmeshStack, url: str, rate_per_s: float, duration_s: float, sample_s: float) -> dict:
    """``rate_per_s`` API tasks a second for ``duration_s``; every process's RSS each ``sample_s``."""
    async with TaskmeshClient(stack.nats.url, stack.base_url, 8) as client:  # type: ignore[union-attr]
        pids = stack.pids()
        samples: list[dict] = []
        in_flight: set[asyncio.Task] = set()
        submitted, rejected = 0, 0
        began = time.monotonic()
        next_sample = began
        while (elapsed := time.monotonic() - began) < duration_s:
            for _ in range(int(rate_per_s * elapsed) - submitted):
                request = asyncio.create_task(client.submit_nats(api_task(url, name=f"soak-{submitted:07d}")))
                in_flight.add(request)
                request.add_done_callback(in_flight.discard)
                submitted += 1
            if time.monotonic() >= next_sample:
                samples.append(
                    {"t_s": round(elapsed, 1), **{name: procs.tree_rss_mib(pid) for name, pid in pids.items()}}
                )
                next_sample += sample_s
            await asyncio.sleep(0.05)
        outcomes = await asyncio.gather(*in_flight, return_exceptions=True)
        rejected = sum(isinstance(outcome, Exception) for outcome in outcomes)
        stats = await client.stats()
    by_status = stats.get("tasks_by_status", {})
    return {
        "rate_per_s": rate_per_s,
        "duration_s": duration_s,
        "submitted": submitted,
        "rejected": rejected,
        "unfinished_at_end": sum(
            n for status, n in by_status.items() if status not in ("succeeded", "failed", "cancelled")
        ),
        "retained_at_end": sum(by_status.values()),
        "samples": samples,
        "plateau": plateaus(samples, pids),
    }


def plateaus(samples: list[dict], names: dict[str, int], slack: float = 1.05, slack_mib: float = 2.0) -> dict:
    """Per process: the max RSS of the middle and the last third of the soak, and whether it levelled off."""
    third = len(samples) // 3
    found = {}
    for name in names:
        middle = max((s[name] for s in samples[third : 2 * third]), default=0.0)
        last = max((s[name] for s in samples[2 * third :]), default=0.0)
        found[name] = {"middle_max_mib": middle, "last_max_mib": last, "plateau": last <= middle * slack + slack_mib}
    return found


def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME)
    p = ctx.params
    with w7_stack(ctx, "w7") as stack:
        curve = run_async(
            retention_curve(stack, ctx.target.url, p.w7_retained, p.nats_concurrency, p.w7_max_backlog, p.w7_requests)
        )
    add_curve(result, curve)
    soaked = None
    if p.w7_soak_s > 0:
        retention = {"TASKMESH_TASK_RETENTION": str(p.w7_soak_retention_s), "TASKMESH_RETENTION_SWEEP_INTERVAL": "10"}
        rate = p.w7_soak_rate or max(20.0, round(curve["points"][-1]["load"]["rate_per_s"] / 2, -1))
        with w7_stack(ctx, "w7-soak", **retention) as stack:
            soaked = run_async(soak(stack, ctx.target.url, rate, p.w7_soak_s, p.w7_sample_s))
        add_soak(result, soaked, p.w7_soak_retention_s)
    result.details = {
        "curve": curve,
        "soak": soaked,
        "name_prefix": NAME_PREFIX,
        "how": "RSS: VmRSS of each process tree; disk: du -sk of nats' jetstream directory; "
        "latency: sequential GETs through the gateway; restart: kill -9 the store, start it, "
        "until GET /api/tasks?limit=50 answers 200",
    }
    return result


def add_curve(result: WorkloadResult, curve: dict) -> None:
    """One block of rows per checkpoint; the goals on the last (largest) one."""
    points, idle = curve["points"], curve["idle_rss_mib"]
    first_store = points[0]["rss_mib"].get("store", 0.0)
    for point in points:
        n, last = point["retained"], point is points[-1]
        store, nats = point["rss_mib"].get("store", 0.0), point["rss_mib"].get("nats-server", 0.0)
        result.add(
            f"{n:,} retained: store RSS (idle {idle.get('store', 0):.0f})",
            "MiB",
            store,
            goal=f"≤ {GOAL_STORE_MIB:g} MiB, ≤ {GOAL_STORE_GROWTH:g}× first" if last else "",
            met=(store <= GOAL_STORE_MIB and store <= GOAL_STORE_GROWTH * first_store) if last else None,
        )
        result.add(
            f"{n:,} retained: store RSS, restarted, {IDLE_S:g} s after the load",
            "MiB",
            point["idle"]["rss_mib"].get("store"),
        )
        result.add(f"{n:,} retained: nats-server RSS (idle {idle.get('nats-server', 0):.0f})", "MiB", nats)
        per_task = (nats - idle.get("nats-server", 0.0)) * 1024 / n
        result.add(f"{n:,} retained: nats-server per retained task", "KiB", per_task)
        idle_nats = point["idle"]["rss_mib"].get("nats-server", 0.0)
        per_task = (idle_nats - idle.get("nats-server", 0.0)) * 1024 / n
        result.add(
            f"{n:,} retained: nats-server per retained task, {IDLE_S:g} s after the load",
            "KiB",
            per_task,
            goal=f"≤ {GOAL_NATS_KIB_PER_TASK:g} KiB",
            met=per_task <= GOAL_NATS_KIB_PER_TASK,
        )
        disk = point["jetstream_bytes"] / 1024 / n
        result.add(
            f"{n:,} retained: JetStream disk per task",
            "KiB",
            disk,
            goal=f"≤ {GOAL_DISK_KIB_PER_TASK:g} KiB",
            met=disk <= GOAL_DISK_KIB_PER_TASK,
        )
        result.add(f"{n:,} retained: catalog file", "MiB", point["catalog_bytes"] / 2**20)
        restart = point["restart"]["serving_ms"]
        result.add(
            f"{n:,} retained: store restart to serving",
            "ms",
            restart,
            goal=f"≤ {GOAL_RESTART_MS:g} ms",
            met=restart <= GOAL_RESTART_MS,
        )
        for label, figures in point["latency_ms"].items():
            goal = GOAL_PAGE_P99_MS if label == "first page" else None if label == "/api/stats" else GOAL_FILTER_P99_MS
            result.add(
                f"{n:,} retained: {label} p99",
                "ms",
                figures["p99"],
                goal=f"≤ {goal:g} ms" if goal else "",
                met=figures["p99"] <= goal if goal else None,
            )
        loaded = point["restart"]["state_loaded"]
        result.notes.append(
            f"{n:,} retained: submitted at {point['load']['rate_per_s']:,} tasks/s; state loaded "
            + " ".join(f"{key}={loaded.get(key)}" for key in ("tasks", "catalogued", "catalog_rebuilt", "ms"))
            + f"; nats-server heap in use {_mib(point['heap']['memstats'].get('HeapInuse'))} MiB "
            f"({_mib(point['idle']['heap']['memstats'].get('HeapInuse'))} after {IDLE_S:g} s idle, "
            f"RSS {point['idle']['rss_mib'].get('nats-server')} MiB); store RSS after restart "
            f"{point['idle']['rss_mib'].get('store')} MiB"
        )


def add_soak(result: WorkloadResult, soaked: dict, retention_s: float) -> None:
    minutes = soaked["duration_s"] / 60
    for name, figures in soaked["plateau"].items():
        result.add(
            f"soak {soaked['rate_per_s']:g}/s × {minutes:g} min: {name} RSS max, last third "
            f"(middle {figures['middle_max_mib']:.0f})",
            "MiB",
            figures["last_max_mib"],
            goal="plateau",
            met=figures["plateau"],
        )
    result.notes.append(
        f"soak: {soaked['submitted']:,} submitted ({soaked['rejected']} rejected), "
        f"{soaked['unfinished_at_end']:,} unfinished at the end, retention {retention_s:g} s "
        f"({soaked['retained_at_end']:,} retained at the end)"
    )


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**20:.0f}"
