"""W4 schedule jitter: many schedules firing every second; lateness, missed and doubled fires in a window."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict

from bench.report import WorkloadResult
from bench.running import Context, Profiler, ServiceCpu, celery, describe_cpu, run_async, taskmesh
from bench.stack import TaskmeshStack
from bench.stats import lateness_summary
from bench.tmclient import MISSED, QUEUED, STARTED, TaskmeshClient, api_task, describe_split, split_lateness, submit_all

NAME = "W4"
CRON = "*/1 * * * * *"
"""Six fields, seconds first: every second."""
SPREAD_JITTER_S = 1.0
"""The second Taskmesh phase spreads each schedule's fires over the second (``jitter_seconds``)."""
GOAL_P99_MS = 20.0
"""Issue 20 (issue 9 asked for 5 ms)."""


def grace_s(window_s: float) -> float:
    """How long after the window late fires of its slots are still counted."""
    return max(10.0, window_s / 4)


async def taskmesh_fires(
    stack: TaskmeshStack,
    url: str,
    count: int,
    window_s: float,
    warmup_s: float,
    concurrency: int,
    profiler: Profiler,
    jitter_s: float = 0.0,
) -> dict:
    """``count`` schedules; RunStarted events whose fire time (scheduled_for, jitter included) falls in the window."""
    async with TaskmeshClient(stack.nats.url, stack.base_url) as client:  # type: ignore[union-attr]
        started = await client.watch(STARTED)
        missed_events = await client.watch(MISSED)
        queued = await client.watch(QUEUED)
        spread = {"jitter_seconds": jitter_s} if jitter_s else {}
        specs = [
            api_task(url, name=f"w4-{number}", task_type="scheduled", cron_expression=CRON, **spread)
            for number in range(count)
        ]
        ids = set(await submit_all(client.submit_nats, specs, concurrency))
        window_start = math.ceil(time.time() + warmup_s)
        with ServiceCpu(stack.pids()) as services, profiler:
            await asyncio.sleep(window_start + window_s - time.time())
        await asyncio.sleep(grace_s(window_s))
        events = started.decoded()
    fires: Counter[tuple[str, float]] = Counter()
    lateness, in_window = [], []
    for event in events:
        slot = event.scheduled_for.timestamp() if event.scheduled_for else None
        if event.task_id in ids and slot is not None and window_start <= slot < window_start + window_s:
            if fires[(event.task_id, slot)] == 0:
                lateness.append((event.occurred_at.timestamp() - slot) * 1000)
                in_window.append(event)
            fires[(event.task_id, slot)] += 1
    expected = count * int(window_s)
    return {
        "schedules": count,
        "window_s": window_s,
        "expected_fires": expected,
        "fired": len(fires),
        "missed": expected - len(fires),
        "doubled": sum(n - 1 for n in fires.values() if n > 1),
        "slots_missed_events": len(missed_events),
        "lateness_ms": lateness_summary(lateness),
        "lateness_split_ms": split_lateness(queued, in_window),
        "services": services.as_dict(),
        "profile": profiler.top,
    }


def celery_fires(raw: dict, count: int, window_s: float) -> dict:
    """Beat's fires: lateness against its own due time (last run + 1 s); missed = fewer than one a second."""
    by_schedule: dict[str, list[float]] = defaultdict(list)
    lateness = []
    for name, due, started in raw["fires"]:
        by_schedule[name].append(due)
        lateness.append((started - due) * 1000)
    doubled = sum(
        1 for dues in by_schedule.values() for a, b in zip(sorted(dues), sorted(dues)[1:], strict=False) if b - a < 0.5
    )
    expected = count * int(window_s)
    fired = len(raw["fires"])
    return {
        "schedules": count,
        "window_s": window_s,
        "expected_fires": expected,
        "fired": fired,
        "missed": max(0, expected - fired),
        "doubled": doubled,
        "lateness_ms": lateness_summary(lateness),
    }


def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME)
    p = ctx.params
    with taskmesh(ctx, "w4") as stack:
        profiler = Profiler(ctx.profile, stack.pids(), ctx.work_dir / "profiles", "w4")
        tm = run_async(
            taskmesh_fires(
                stack, ctx.target.url, p.w4_schedules, p.w4_window_s, p.w4_warmup_s, p.nats_concurrency, profiler
            )
        )
    result.notes.append(
        f"Taskmesh: CPU in the window (cores): "
        f"{describe_cpu(tm['services']['cpu_share'], tm['services']['cpu_wait_share'])}; "
        f"{tm['slots_missed_events']} SlotsMissed events; {describe_split(tm['lateness_split_ms'])}"
    )
    cel = None
    if ctx.celery:
        with celery(ctx, "w4", beat_schedules=p.w4_schedules) as stack, ServiceCpu(stack.pids()) as meter:
            raw = stack.driver("w4", warmup=p.w4_warmup_s, window=p.w4_window_s, grace=grace_s(p.w4_window_s))
        cel = {**celery_fires(raw, p.w4_schedules, p.w4_window_s), "services": meter.as_dict()}
        result.notes.append(
            f"Celery Beat: interval schedules of 1 s (crontab has no seconds); lateness against "
            f"Beat's own due time; CPU (cores): {describe_cpu(meter.shares, meter.waiting)}"
        )
    late, clate = tm["lateness_ms"], cel["lateness_ms"] if cel else {}
    label = f"{p.w4_schedules:,} × every 1 s, {p.w4_window_s:g} s"
    result.add(
        f"{label}: fires",
        "runs",
        tm["fired"],
        cel["fired"] if cel else None,
        higher_is_better=True,
        goal=f"= {tm['expected_fires']:,}",
    )
    result.add(f"{label}: lateness p50", "ms", late["p50"], clate.get("p50"))
    result.add(
        f"{label}: lateness p99",
        "ms",
        late["p99"],
        clate.get("p99"),
        goal=f"≤ {GOAL_P99_MS:g} ms",
        met=late["p99"] is not None and late["p99"] <= GOAL_P99_MS,
    )
    result.add(f"{label}: lateness max", "ms", late["max"], clate.get("max"))
    result.add(
        f"{label}: missed fires", "fires", tm["missed"], cel["missed"] if cel else None, goal="0", met=tm["missed"] == 0
    )
    result.add(
        f"{label}: doubled fires",
        "fires",
        tm["doubled"],
        cel["doubled"] if cel else None,
        goal="0",
        met=tm["doubled"] == 0,
    )
    result.rows[0].met = tm["fired"] == tm["expected_fires"]
    # The same schedules spread over each second by jitter_seconds: a rate of 1,000 a second
    # rather than a thousand due at one instant (what the goal asks for; see bench/README).
    with taskmesh(ctx, "w4-spread") as spread_stack:
        spread = run_async(
            taskmesh_fires(
                spread_stack,
                ctx.target.url,
                p.w4_schedules,
                p.w4_window_s,
                p.w4_warmup_s,
                p.nats_concurrency,
                Profiler(False, {}, ctx.work_dir, "w4-spread"),
                jitter_s=SPREAD_JITTER_S,
            )
        )
    spread_label = f"{label}, spread by jitter_seconds {SPREAD_JITTER_S:g}"
    for stat in ("p50", "p99", "max"):
        result.add(f"{spread_label}: lateness {stat}", "ms", spread["lateness_ms"][stat])
    result.add(f"{spread_label}: doubled fires", "fires", spread["doubled"], goal="0", met=spread["doubled"] == 0)
    result.notes.append(
        f"Taskmesh, spread: CPU in the window (cores): "
        f"{describe_cpu(spread['services']['cpu_share'], spread['services']['cpu_wait_share'])}; "
        f"{describe_split(spread['lateness_split_ms'])}"
    )
    result.details = {"taskmesh": tm, "celery": cel, "taskmesh_spread": spread}
    return result
