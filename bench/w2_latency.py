"""W2 latency: sequential immediate API tasks, submit → result available (HTTP ?wait=, NATS + event)."""

from __future__ import annotations

import time

from bench.report import WorkloadResult
from bench.running import Context, celery, run_async, taskmesh
from bench.stack import TaskmeshStack
from bench.stats import summarize
from bench.tmclient import FINISHED, QUEUED, STARTED, SUBMITTED, EventLog, TaskmeshClient, api_task

NAME = "W2"
WARMUP = 10
GOALS_MS = {"nats": 3.0, "http": 4.0}
"""Issue 20: p50 at most this, at most ``GOAL_CELERY_SHARE`` of Celery's p50, and p99 ≤ 2× p50."""
GOAL_CELERY_SHARE = 0.6


async def taskmesh_latencies(stack: TaskmeshStack, url: str, n: int) -> tuple[dict[str, list[float]], dict]:
    """Milliseconds per task by HTTP ?wait=, then by NATS + finished event; and the NATS path's stages."""
    found: dict[str, list[float]] = {"http": [], "nats": []}
    sent: dict[str, tuple[float, float]] = {}
    async with TaskmeshClient(stack.nats.url, stack.base_url, 1) as client:  # type: ignore[union-attr]
        finished = await client.watch(FINISHED, track=True)
        stages = {
            "submitted": await client.watch(SUBMITTED),
            "queued": await client.watch(QUEUED),
            "started": await client.watch(STARTED),
            "finished": finished,
        }
        for number in range(WARMUP + n):
            started = time.perf_counter()
            task = await client.submit_http(api_task(url, name="w2-http"), wait_s=10)
            elapsed = (time.perf_counter() - started) * 1000
            if task.get("status") != "succeeded":
                raise RuntimeError(f"W2 http task not succeeded: {task.get('status')} {task.get('error')}")
            if number >= WARMUP:
                found["http"].append(elapsed)
        for number in range(WARMUP + n):
            started, wall = time.perf_counter(), time.time()
            task_id = await client.submit_nats(api_task(url, name="w2-nats"))
            arrived = await finished.arrival(task_id, 10)
            if number >= WARMUP:
                found["nats"].append((arrived - started) * 1000)
                sent[task_id] = (wall, wall + (arrived - started))
    return found, stage_medians(stages, sent)


def stage_medians(stages: dict[str, EventLog], sent: dict[str, tuple[float, float]]) -> dict[str, float | None]:
    """Median ms from the client to accepted (store), queued (scheduler), started, finished (runner), client."""
    at: dict[str, dict[str, float]] = {}
    for name, log in stages.items():
        for event in log.decoded():
            at.setdefault(event.task_id, {}).setdefault(name, event.occurred_at.timestamp())
    steps: dict[str, list[float]] = {"accepted": [], "queued": [], "started": [], "finished": [], "client": []}
    for task_id, (sent_at, arrived_at) in sent.items():
        times = at.get(task_id, {})
        chain = [
            sent_at,
            times.get("submitted"),
            times.get("queued"),
            times.get("started"),
            times.get("finished"),
            arrived_at,
        ]
        if None in chain:
            continue
        for step, before, after in zip(steps, chain, chain[1:], strict=False):
            steps[step].append((after - before) * 1000)  # type: ignore[operator]
    return {step: summarize(values)["p50"] for step, values in steps.items()}


def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME)
    n = ctx.params.w2_tasks
    with taskmesh(ctx, "w2") as stack:
        latencies, stage_ms = run_async(taskmesh_latencies(stack, ctx.target.url, n))
    summaries = {mode: summarize(values) for mode, values in latencies.items()}
    celery_summary = None
    if ctx.celery:
        with celery(ctx, "w2") as stack:
            celery_summary = summarize(stack.driver("w2", n=n, url=ctx.target.url, warmup=WARMUP)["latencies_ms"])
    for mode, label in (("http", "HTTP POST ?wait="), ("nats", "NATS submit + finished event")):
        p50 = summaries[mode]["p50"]
        celery_p50 = celery_summary["p50"] if celery_summary else None
        for quantile in ("p50", "p90", "p99"):
            value = summaries[mode][quantile]
            goal, met = "", None
            if quantile == "p50":
                goal, met = f"≤ {GOALS_MS[mode]:g} ms", value <= GOALS_MS[mode]
                if celery_p50 is not None:
                    goal += f" and ≤ {GOAL_CELERY_SHARE:g}× Celery"
                    met = met and value <= GOAL_CELERY_SHARE * celery_p50
            elif quantile == "p99":
                goal, met = "≤ 2× p50", value <= 2 * p50
            result.add(
                f"{n} sequential, {label}, {quantile}",
                "ms",
                value,
                celery_summary[quantile] if celery_summary else None,
                goal=goal,
                met=met,
            )
    if ctx.celery:
        result.notes.append("Celery: delay().get() with a keep-alive requests.Session in the worker (one mode only)")
    result.notes.append(
        "Taskmesh NATS path, median ms per stage: "
        + ", ".join(f"→ {step} {value:.1f}" for step, value in stage_ms.items() if value is not None)
    )
    result.details = {
        "taskmesh": summaries,
        "taskmesh_stage_p50_ms": stage_ms,
        "celery": celery_summary,
        "warmup": WARMUP,
    }
    return result
