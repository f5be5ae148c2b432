"""W5 sandbox: code tasks end to end (cold, warm pool), sustained rate vs the raw engine, requirements."""

from __future__ import annotations

from bench.report import WorkloadResult
from bench.running import Context, ServiceCpu, celery, describe_cpu, run_async, taskmesh
from bench.sandbox_load import burst, code_task, raw_docker, sequential, wait_pool
from bench.stack import TaskmeshStack, WheelServer, sandbox_image
from bench.stats import summarize
from bench.tmclient import TaskmeshClient

NAME = "W5"
POOL_SIZE = 2
REQUIREMENTS = ["six==1.17.0", "numpy==2.2.6"]
SIX_CODE = "def main():\n    import six\n    return six.__version__\n"
NUMPY_CODE = "def main():\n    import numpy\n    return int(numpy.arange(10).sum())\n"
GOAL_WARM_P50_MS = 60.0
GOAL_SUSTAINED_SHARE = 0.9
GOAL_REQUIREMENTS_MS = 20.0


async def sequential_figures(stack: TaskmeshStack, n: int, pace_s: float, requirements: bool) -> dict:
    """Round trips without requirements; with ``requirements`` also a cold set, the cached set, numpy."""
    found: dict = {}
    async with TaskmeshClient(stack.nats.url, stack.base_url, 1) as client:  # type: ignore[union-attr]
        found["plain"], _ = await sequential(client, code_task("w5"), n, pace_s)
        if requirements:
            cold, tasks = await sequential(client, code_task("w5-reqs", SIX_CODE, REQUIREMENTS), 1, pace_s)
            runs = await client.get_json(f"/api/tasks/{tasks[0]['id']}/runs")
            found["cold_requirements_ms"] = cold[0]
            found["cold_requirements_install_ms"] = (runs["runs"][0].get("timings") or {}).get("deps_install_ms")
            wait_pool(stack, 2 * POOL_SIZE, 60)  # the set is hot now: let the pool warm its containers too
            found["cached"], _ = await sequential(client, code_task("w5-reqs", SIX_CODE, REQUIREMENTS), n, pace_s)
            found["numpy"], _ = await sequential(
                client, code_task("w5-numpy", NUMPY_CODE, REQUIREMENTS), max(2, n // 10), pace_s
            )
    return found


def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME)
    p = ctx.params
    image = sandbox_image()
    slots = 2 * p.cores
    with taskmesh(ctx, "w5-cold", TASKMESH_POOL_SIZE="0") as stack:
        stack.wait_ready(60, sandbox=True)
        cold = run_async(sequential_figures(stack, p.w5_latency_runs, p.w5_pace_s, False))
    assert ctx.wheelhouse is not None
    wheels = WheelServer(ctx.wheelhouse, ctx.work_dir).start()
    try:
        with taskmesh(ctx, "w5-warm", TASKMESH_POOL_SIZE=str(POOL_SIZE), TASKMESH_FIND_LINKS=wheels.url) as stack:
            stack.wait_ready(60, sandbox=True)
            wait_pool(stack, POOL_SIZE)
            warm = run_async(sequential_figures(stack, p.w5_latency_runs, p.w5_pace_s, True))
            wait_pool(stack, POOL_SIZE)
            # the engine's rate drifts with the machine's other load: measure it right before each burst
            raw = run_async(raw_docker(image, p.w5_burst, slots))
            with ServiceCpu(stack.pids()) as meter:
                sustained = run_async(burst(stack, p.w5_burst))
            sustained["services"] = meter.as_dict()
            result.notes.append(
                f"Taskmesh burst of {p.w5_burst}: CPU (cores) {describe_cpu(meter.shares, meter.waiting)}"
            )
    finally:
        wheels.stop()
    raw_sequential = run_async(raw_docker(image, max(5, p.w5_latency_runs // 5), 1))
    cel: dict = {}
    if ctx.celery:
        with celery(ctx, "w5", BENCH_SANDBOX_IMAGE=image) as stack:
            cel["latency"] = summarize(
                stack.driver("w5-latency", n=p.w5_latency_runs, pace=p.w5_pace_s, warmup=1)["latencies_ms"]
            )
            cel["raw_docker"] = summarize_raw(run_async(raw_docker(image, p.w5_burst, slots)))
            with ServiceCpu(stack.pids()) as meter:
                cel["burst"] = stack.driver("w5-burst", n=p.w5_burst, timeout=1800)
            result.notes.append(f"Celery burst: CPU (cores) {describe_cpu(meter.shares, meter.waiting)}")
    figures = {
        "cold": summarize(cold["plain"]),
        "warm": summarize(warm["plain"]),
        "cached": summarize(warm["cached"]),
        "numpy": summarize(warm["numpy"]),
        "cold_requirements_ms": warm["cold_requirements_ms"],
        "cold_requirements_install_ms": warm["cold_requirements_install_ms"],
        "sustained": sustained,
        "raw_docker": summarize_raw(raw),
        "raw_docker_sequential": summarize(raw_sequential["latencies_ms"]),
        "image": image,
    }
    add_rows(result, p.w5_latency_runs, p.w5_burst, slots, figures, cel)
    result.details = {"taskmesh": figures, "celery": cel}
    return result


def summarize_raw(raw: dict) -> dict:
    return {**raw, "latencies_ms": summarize(raw["latencies_ms"])}


def add_rows(result: WorkloadResult, n: int, burst_n: int, slots: int, tm: dict, cel: dict) -> None:
    latency = cel.get("latency", {})
    for label, key in (("cold (no pool)", "cold"), ("warm pool", "warm")):
        for quantile in ("p50", "p99"):
            goal = key == "warm" and quantile == "p50"
            result.add(
                f"code task e2e, {label}, {quantile} ({n} runs)",
                "ms",
                tm[key][quantile],
                latency.get(quantile),
                goal=f"≤ {GOAL_WARM_P50_MS:g} ms" if goal else "",
                met=tm[key][quantile] <= GOAL_WARM_P50_MS if goal else None,
            )
    result.add("engine: docker run --rm, sequential p50 (reference)", "ms", tm["raw_docker_sequential"]["p50"])
    raw_rate = tm["raw_docker"]["rate_per_s"]
    celery_rate = cel["burst"]["rate_per_s"] if "burst" in cel else None
    celery_raw = cel["raw_docker"]["rate_per_s"] if "raw_docker" in cel else None
    result.add(
        f"{burst_n} short code tasks, sustained",
        "tasks/s",
        tm["sustained"]["rate_per_s"],
        celery_rate,
        higher_is_better=True,
    )
    result.add(
        f"engine: docker run --rm × {burst_n}, {slots} at once, just before (reference)",
        "runs/s",
        raw_rate,
        celery_raw,
        compare=False,
    )
    share = tm["sustained"]["rate_per_s"] / raw_rate
    result.add(
        "sustained rate ÷ engine's raw rate",
        "%",
        share * 100,
        celery_rate / celery_raw * 100 if celery_rate and celery_raw else None,
        higher_is_better=True,
        goal=f"≥ {GOAL_SUSTAINED_SHARE:.0%}",
        met=share >= GOAL_SUSTAINED_SHARE,
    )
    result.add("cold requirements set (six + numpy from the wheelhouse), e2e", "ms", tm["cold_requirements_ms"])
    result.add("  of which dependency install", "ms", tm["cold_requirements_install_ms"])
    result.add("cached requirements (six + numpy), warm, p50", "ms", tm["cached"]["p50"])
    extra = tm["cached"]["p50"] - tm["warm"]["p50"]
    result.add(
        "cached requirements − no requirements, p50",
        "ms",
        extra,
        goal=f"≤ {GOAL_REQUIREMENTS_MS:g} ms",
        met=extra <= GOAL_REQUIREMENTS_MS,
    )
    result.add("cached requirements, task imports numpy, p50", "ms", tm["numpy"]["p50"])
