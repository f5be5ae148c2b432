"""W8 fairness and limits: tenant A floods a concurrency-limited key, tenant B then submits a few.

B's wait (submitted → started), how far the limit is ever exceeded (started/finished intervals of
the runner's own timestamps), and what admission costs: the same burst with no limit, and with a
limit that never binds.
"""

from __future__ import annotations

import time
from typing import Any

from bench.report import WorkloadResult
from bench.running import Context, run_async, taskmesh
from bench.stack import TaskmeshStack
from bench.stats import summarize
from bench.tmclient import FINISHED, STARTED, SUBMITTED, TaskmeshClient, api_task, submit_all, wait_events

NAME = "W8"
KEY = "w8-partner"


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of [start, end) intervals that overlap."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = running = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


async def flood(stack: TaskmeshStack, url: str, n_a: int, n_b: int, limit: int, concurrency: int) -> dict[str, Any]:
    """A's ``n_a`` then B's ``n_b`` behind one key of ``limit``; per-tenant waits and the most in flight."""
    async with TaskmeshClient(stack.nats.url, stack.base_url, 8) as client:  # type: ignore[union-attr]
        submitted, started, finished = [await client.watch(s) for s in (SUBMITTED, STARTED, FINISHED)]

        def spec(tenant: str, number: int) -> dict[str, Any]:
            return api_task(
                url, name=f"w8-{tenant}-{number}", concurrency_key=KEY, max_concurrency=limit, fairness_key=tenant
            )

        first = time.time()
        a_ids = await submit_all(client.submit_nats, [spec("A", i) for i in range(n_a)], concurrency)
        b_ids = await submit_all(client.submit_nats, [spec("B", i) for i in range(n_b)], concurrency)
        done = await wait_events(finished, n_a + n_b, max(120.0, (n_a + n_b) / 20))
        elapsed = time.time() - first
    at_submit = {e.task_id: e.occurred_at.timestamp() for e in submitted.decoded()}
    at_start = {e.task_id: e.occurred_at.timestamp() for e in started.decoded()}
    at_end = {e.task_id: e.occurred_at.timestamp() for e in finished.decoded()}
    waits = {
        tenant: [(at_start[t] - at_submit[t]) * 1000 for t in ids if t in at_start and t in at_submit]
        for tenant, ids in (("A", a_ids), ("B", b_ids))
    }
    intervals = [(at_start[t], at_end[t]) for t in at_end if t in at_start]
    return {
        "complete": done,
        "seconds": elapsed,
        "wait_ms": {tenant: summarize(values) for tenant, values in waits.items()},
        "last_finish_s": {
            tenant: max((at_end[t] for t in ids if t in at_end), default=first) - first
            for tenant, ids in (("A", a_ids), ("B", b_ids))
        },
        "most_in_flight": most_at_once(intervals),
    }


async def burst_rate(stack: TaskmeshStack, url: str, n: int, concurrency: int, **flow: Any) -> float:
    """Tasks a second, first submit → last finished event, for ``n`` API tasks with ``flow`` fields."""
    async with TaskmeshClient(stack.nats.url, stack.base_url, 8) as client:  # type: ignore[union-attr]
        finished = await client.watch(FINISHED)
        first = time.time()
        await submit_all(
            client.submit_nats, [api_task(url, name=f"w8-rate-{i}", **flow) for i in range(n)], concurrency
        )
        await wait_events(finished, n, max(120.0, n / 20))
        return n / (time.time() - first)


def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME)
    p = ctx.params
    with taskmesh(ctx, "w8") as stack:
        figures = run_async(flood(stack, ctx.target.url, p.w8_flood, p.w8_others, p.w8_limit, p.nats_concurrency))
        unlimited = run_async(burst_rate(stack, ctx.target.url, p.w8_rate_tasks, p.nats_concurrency))
        never_binding = run_async(
            burst_rate(
                stack,
                ctx.target.url,
                p.w8_rate_tasks,
                p.nats_concurrency,
                concurrency_key="w8-wide",
                max_concurrency=100_000,
            )
        )
    b, a = figures["wait_ms"]["B"], figures["wait_ms"]["A"]
    exceeded = max(0, figures["most_in_flight"] - p.w8_limit)
    label = f"{p.w8_flood:,} A then {p.w8_others:,} B, max_concurrency {p.w8_limit}"
    result.add(f"{label}: B wait p50", "ms", b["p50"], compare=False)
    result.add(f"{label}: B wait p99", "ms", b["p99"], compare=False)
    result.add(f"{label}: A wait p50", "ms", a["p50"], compare=False)
    result.add(
        f"{label}: B's last finish, share of A's",
        "ratio",
        figures["last_finish_s"]["B"] / max(figures["last_finish_s"]["A"], 1e-9),
        compare=False,
        goal="≪ 1",
        met=figures["last_finish_s"]["B"] < figures["last_finish_s"]["A"] / 2,
    )
    result.add(f"{label}: limit exceeded by", "runs", exceeded, compare=False, goal="0", met=exceeded == 0)
    result.add(
        f"{p.w8_rate_tasks:,} API tasks, no limit (W1 path)", "tasks/s", unlimited, compare=False, higher_is_better=True
    )
    result.add(
        f"{p.w8_rate_tasks:,} API tasks, a limit that never binds",
        "tasks/s",
        never_binding,
        compare=False,
        higher_is_better=True,
        note="admission: a KV write per run",
    )
    if not figures["complete"]:
        result.notes.append("not every run finished within the timeout")
    result.notes.append(
        "tasks without a limit take the same path as before flow control existed (one attribute test in the "
        "leader); compare the no-limit row with W1 (NATS) of the same run for the cost in noise"
    )
    result.details = {"flood": figures, "unlimited_rate": unlimited, "never_binding_rate": never_binding}
    return result
