"""W6 footprint: resident memory of every process of each system, idle and after a W1 burst."""

from __future__ import annotations

import time

from bench import procs
from bench.report import WorkloadResult
from bench.running import Context, celery, run_async, taskmesh
from bench.w1_throughput import taskmesh_burst

NAME = "W6"
GOAL_TOTAL_MIB = 200.0
SETTLE_S = 3.0


def snapshot(pids: dict[str, int]) -> dict[str, float]:
    """RSS in MiB of each process tree (a Celery worker counts with its pool processes)."""
    return {name: procs.tree_rss_mib(pid) for name, pid in pids.items()}


def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME)
    n = ctx.params.w6_tasks
    with taskmesh(ctx, "w6") as stack:
        time.sleep(SETTLE_S)
        tm_idle = snapshot(stack.pids())
        run_async(taskmesh_burst(stack, ctx.target.url, n, "nats", ctx.params.nats_concurrency))
        time.sleep(SETTLE_S)
        tm_after = snapshot(stack.pids())
    cel_idle: dict[str, float] = {}
    cel_after: dict[str, float] = {}
    if ctx.celery:
        with celery(ctx, "w6", beat_schedules=0) as stack:
            time.sleep(SETTLE_S)
            cel_idle = snapshot(stack.pids())
            stack.driver("w1", n=n, url=ctx.target.url, timeout=max(600, n / 10))
            time.sleep(SETTLE_S)
            cel_after = snapshot(stack.pids())
    for name in tm_idle:
        result.add(f"Taskmesh {name}: after {n:,} tasks (idle {tm_idle[name]:.0f})", "MiB", tm_after.get(name))
    for name in cel_idle:
        result.add(f"Celery {name}: after {n:,} tasks (idle {cel_idle[name]:.0f})", "MiB", None, cel_after.get(name))
    total_idle, total_after = sum(tm_idle.values()), sum(tm_after.values())
    result.add(
        "total RSS, idle",
        "MiB",
        total_idle,
        sum(cel_idle.values()) if cel_idle else None,
        goal=f"≤ {GOAL_TOTAL_MIB:g} MiB",
        met=total_idle <= GOAL_TOTAL_MIB,
    )
    result.add(
        f"total RSS, after {n:,} tasks",
        "MiB",
        total_after,
        sum(cel_after.values()) if cel_after else None,
        goal=f"≤ {GOAL_TOTAL_MIB:g} MiB",
        met=total_after <= GOAL_TOTAL_MIB,
    )
    result.details = {
        "taskmesh": {"idle": tm_idle, "after": tm_after},
        "celery": {"idle": cel_idle, "after": cel_after},
        "tasks": n,
        "how": "VmRSS from /proc/<pid>/status, summed over each process and its descendants",
    }
    return result
