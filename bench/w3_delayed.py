"""W3 delayed precision: many delayed API tasks over 2–100 s; lateness of each start against its due time.

Issue 20 restated W3 over 2–100 s (from 2–30 s) so that 100,000 tasks are about 1,000 runs/s, a rate
these 2 cores can carry; earlier results in bench/README used 2–30 s.
"""

from __future__ import annotations

import random
import time

from bench.report import WorkloadResult
from bench.running import Context, Profiler, ServiceCpu, celery, describe_cpu, run_async, taskmesh
from bench.stack import TaskmeshStack
from bench.stats import lateness_summary, summarize
from bench.tmclient import (
    QUEUED,
    STARTED,
    CpuMeter,
    TaskmeshClient,
    api_task,
    describe_split,
    split_lateness,
    submit_all,
    wait_events,
)

NAME = "W3"
GOAL_P99_MS = 20.0


def grace_s(n: int) -> float:
    """How long past the last due time starts are still awaited (a slow system gets the time to finish)."""
    return max(30.0, n / 100)


async def taskmesh_lateness(
    stack: TaskmeshStack, url: str, n: int, delays: list[float], concurrency: int, profiler: Profiler
) -> dict:
    """Submit ``n`` delayed tasks over NATS; lateness = RunStarted.occurred_at − scheduled_for."""
    async with TaskmeshClient(stack.nats.url, stack.base_url) as client:  # type: ignore[union-attr]
        started = await client.watch(STARTED)
        queued = await client.watch(QUEUED)
        specs = [
            api_task(url, name=f"w3-{number}", task_type="delayed", delay_seconds=round(delay, 3))
            for number, delay in enumerate(delays)
        ]
        with CpuMeter() as cpu, ServiceCpu(stack.pids()) as services, profiler:
            first = time.time()
            await submit_all(client.submit_nats, specs, concurrency)
            submitted = time.time()
            pending_after_submit = n - len(started)
            await wait_events(started, n, max(delays) + grace_s(n))
        events = started.decoded()
    firsts = [event for event in events if event.scheduled_for is not None and event.attempt == 1]
    lateness = [(event.occurred_at - event.scheduled_for).total_seconds() * 1000 for event in firsts]
    # Due while submissions still flowed, the runs share the CPUs with them; due later, they
    # show what the system carries at the workload's run rate alone.
    due_at = [event.scheduled_for.timestamp() for event in firsts]  # type: ignore[union-attr]
    after_submit = [late for late, due in zip(lateness, due_at, strict=True) if due > submitted]
    return {
        "n": n,
        "started": len(lateness),
        "submit_s": submitted - first,
        "pending_after_submit": pending_after_submit,
        "lateness_ms": lateness_summary(lateness),
        "after_submit_lateness_ms": lateness_summary(after_submit),
        "lateness_by_due_window": by_window(lateness, due_at, first),
        "lateness_split_ms": split_lateness(queued, events),
        "client_cpu_share": round(cpu.share, 3),
        "services": services.as_dict(),
        "profile": profiler.top,
    }


def by_window(lateness: list[float], due_at: list[float], start: float, width_s: float = 10.0) -> list[dict]:
    """Lateness p50 / p99 of the runs due in each ``width_s`` window from ``start``: when a backlog built and drained."""
    windows: dict[int, list[float]] = {}
    for late, due in zip(lateness, due_at, strict=True):
        windows.setdefault(int((due - start) // width_s), []).append(late)
    summaries = []
    for index, values in sorted(windows.items()):
        summary = summarize(values)
        summaries.append({"from_s": index * width_s, "runs": len(values), "p50": summary["p50"], "p99": summary["p99"]})
    return summaries


def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME)
    p = ctx.params
    details: dict[str, dict] = {}
    for n in p.w3_sizes:
        rng = random.Random(p.seed)
        delays = [rng.uniform(p.w3_delay_min_s, p.w3_delay_max_s) for _ in range(n)]
        with taskmesh(ctx, f"w3-{n}") as stack:
            profiler = Profiler(ctx.profile, stack.pids(), ctx.work_dir / "profiles", f"w3-{n}")
            tm = run_async(taskmesh_lateness(stack, ctx.target.url, n, delays, p.nats_concurrency, profiler))
        result.notes.append(
            f"Taskmesh {n}: submitted in {tm['submit_s']:.1f} s, {tm['pending_after_submit']} pending "
            f"then; {describe_split(tm['lateness_split_ms'])}; CPU (cores): "
            f"{describe_cpu(tm['services']['cpu_share'], tm['services']['cpu_wait_share'])}; lateness p99 (ms) "
            "of the runs due in each 10 s from the first submission: "
            + ", ".join(f"{window['p99']:.0f}" for window in tm["lateness_by_due_window"])
        )
        cel = None
        if ctx.celery:
            with celery(ctx, f"w3-{n}") as stack:
                with ServiceCpu(stack.pids()) as meter:
                    raw = stack.driver(
                        "w3",
                        n=n,
                        url=ctx.target.url,
                        dmin=p.w3_delay_min_s,
                        dmax=p.w3_delay_max_s,
                        seed=p.seed,
                        grace=grace_s(n),
                        wait_s=p.w3_delay_max_s + grace_s(n) + 3600,
                    )
                cel = {
                    **{k: v for k, v in raw.items() if k != "lateness_ms"},
                    "lateness_ms": lateness_summary(raw["lateness_ms"]),
                    "services": meter.as_dict(),
                }
            result.notes.append(
                f"Celery {n}: submitted in {cel['submit_s']:.1f} s; CPU (cores): "
                f"{describe_cpu(meter.shares, meter.waiting)}"
            )
        details[str(n)] = {"taskmesh": tm, "celery": cel}
        largest = n == max(p.w3_sizes)
        late, clate = tm["lateness_ms"], cel["lateness_ms"] if cel else {}
        label = f"{n:,} delayed"
        result.add(
            f"{label}, started",
            "runs",
            tm["started"],
            cel["started"] if cel else None,
            higher_is_better=True,
            goal=f"= {n:,}",
            met=tm["started"] == n,
        )
        result.add(f"{label}, lateness p50", "ms", late["p50"], clate.get("p50"))
        result.add(
            f"{label}, lateness p99",
            "ms",
            late["p99"],
            clate.get("p99"),
            goal=f"≤ {GOAL_P99_MS:g} ms" if largest else "",
            met=(late["p99"] is not None and late["p99"] <= GOAL_P99_MS) if largest else None,
        )
        result.add(f"{label}, lateness max", "ms", late["max"], clate.get("max"))
        after = tm["after_submit_lateness_ms"]
        result.add(f"{label}, due after the last submission ({after['count']:,}), lateness p99", "ms", after["p99"])
        result.add(f"{label}, started early", "runs", late["early"], clate.get("early"))
        result.add(
            f"{label}, > 100 ms late",
            "runs",
            late["over_100ms"],
            clate.get("over_100ms"),
            goal="0" if largest else "",
            met=(late["over_100ms"] == 0) if largest else None,
        )
        result.add(f"{label}, > 1 s late", "runs", late["over_1s"], clate.get("over_1s"))
    result.details = details
    return result
