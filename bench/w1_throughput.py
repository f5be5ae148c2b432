"""W1 throughput: immediate API tasks submitted as fast as one client can; first submit → last result stored."""

from __future__ import annotations

import time

from bench.report import WorkloadResult
from bench.running import Context, Profiler, ServiceCpu, celery, describe_cpu, run_async, taskmesh
from bench.stack import TaskmeshStack
from bench.tmclient import FINISHED, CpuMeter, TaskmeshClient, api_task, submit_all, wait_events

NAME = "W1"
GOAL_RATIO = {"nats": 4.0, "http": 3.0}
"""Issue 20: throughput at least this many times Celery's, by submission path."""
GOAL_CPU_MS = {"nats": 1.0, "http": 1.3}
"""Issue 20: server CPU per task (every Taskmesh process and nats-server) at most this."""


async def taskmesh_burst(
    stack: TaskmeshStack, url: str, n: int, mode: str, concurrency: int, profiler: Profiler | None = None
) -> dict:
    """Submit ``n`` API tasks by ``mode`` (http | nats); rate from first submit to the last one stored."""
    async with TaskmeshClient(stack.nats.url, stack.base_url, concurrency) as client:  # type: ignore[union-attr]
        finished = await client.watch(FINISHED)
        baseline = await client.count_status("succeeded")
        failed_before = await client.count_status("failed")
        specs = [api_task(url, name=f"w1-{mode}-{number}") for number in range(n)]
        submit = client.submit_nats if mode == "nats" else client.submit_http
        timeout_s = max(120.0, n / 20)
        with (
            CpuMeter() as cpu,
            ServiceCpu(stack.pids()) as services,
            profiler or Profiler(False, {}, stack.root, "none"),
        ):
            first = time.time()
            await submit_all(submit, specs, concurrency)
            submitted = time.time()
            all_finished = await wait_events(finished, n, timeout_s)
            stored = await client.wait_count("succeeded", baseline + n, timeout_s if all_finished else 1)
        failed = await client.count_status("failed") - failed_before
    return {
        "n": n,
        "mode": mode,
        "concurrency": concurrency,
        "submit_s": submitted - first,
        "submit_rate_per_s": n / (submitted - first),
        "completion_s": stored - first,
        "rate_per_s": n / (stored - first),
        "failed": failed,
        "client_cpu_share": round(cpu.share, 3),
        "cpu_ms_per_task": services.total_cpu_seconds() * 1000 / n,
        "services": services.as_dict(),
        "profile": profiler.top if profiler else {},
    }


def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME)
    p = ctx.params
    figures: dict[str, dict] = {}
    for mode, concurrency in (("http", p.http_concurrency), ("nats", p.nats_concurrency)):
        with taskmesh(ctx, f"w1-{mode}") as stack:
            profiler = Profiler(ctx.profile, stack.pids(), ctx.work_dir / "profiles", f"w1-{mode}")
            hits = ctx.target.hits()
            figures[mode] = run_async(taskmesh_burst(stack, ctx.target.url, p.w1_tasks, mode, concurrency, profiler))
            figures[mode]["target_hits"] = ctx.target.hits() - hits
        services = figures[mode]["services"]
        result.notes.append(
            f"Taskmesh {mode}: CPU during the burst (cores): "
            f"{describe_cpu(services['cpu_share'], services['cpu_wait_share'])}; "
            f"load generator {figures[mode]['client_cpu_share']:.2f}"
        )
        if figures[mode]["client_cpu_share"] > 0.8:
            result.notes.append(
                f"{mode}: the load generator used {figures[mode]['client_cpu_share']:.0%} of a core: "
                "the figure may be client-bound"
            )
    celery_figures = None
    if ctx.celery:
        with celery(ctx, "w1") as stack:
            with ServiceCpu(stack.pids()) as meter:
                celery_figures = stack.driver("w1", n=p.w1_tasks, url=ctx.target.url, timeout=max(600, p.w1_tasks / 10))
            celery_figures["services"] = meter.as_dict()
            celery_figures["cpu_ms_per_task"] = meter.total_cpu_seconds() * 1000 / p.w1_tasks
            result.notes.append(f"Celery: CPU during the burst (cores): {describe_cpu(meter.shares, meter.waiting)}")
    celery_rate = celery_figures["rate_per_s"] if celery_figures else None
    for mode in ("http", "nats"):
        rate = figures[mode]["rate_per_s"]
        result.add(
            f"{p.w1_tasks:,} API tasks, {mode} submission",
            "tasks/s",
            rate,
            celery_rate,
            higher_is_better=True,
            goal=f"≥ {GOAL_RATIO[mode]:g}× Celery",
            met=None if celery_rate is None else rate >= GOAL_RATIO[mode] * celery_rate,
        )
    for mode in ("http", "nats"):
        cpu_ms = figures[mode]["cpu_ms_per_task"]
        result.add(
            f"server CPU per task, {mode} submission",
            "ms",
            cpu_ms,
            celery_figures["cpu_ms_per_task"] if celery_figures else None,
            goal=f"≤ {GOAL_CPU_MS[mode]:g} ms",
            met=cpu_ms <= GOAL_CPU_MS[mode],
        )
    result.details = {"taskmesh": figures, "celery": celery_figures}
    return result
