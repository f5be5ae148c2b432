"""Scale-out: W1 (NATS submission) and the W5 code-task burst with 1, 2 and 3 runner processes."""

from __future__ import annotations

from bench.report import WorkloadResult
from bench.running import Context, ServiceCpu, describe_cpu, run_async, taskmesh
from bench.sandbox_load import burst, wait_pool
from bench.w1_throughput import taskmesh_burst

NAME = "SCALE"


def run(ctx: Context) -> WorkloadResult:
    result = WorkloadResult(NAME)
    p = ctx.params
    details: dict[str, dict] = {}
    for runners in p.scale_runners:
        with taskmesh(ctx, f"scale-{runners}", runners=runners) as stack:
            api = run_async(taskmesh_burst(stack, ctx.target.url, p.scale_w1_tasks, "nats", p.nats_concurrency))
            stack.wait_ready(60, sandbox=True)
            wait_pool(stack, 2)
            with ServiceCpu(stack.pids()) as meter:
                code = run_async(burst(stack, p.scale_w5_burst))
            code["services"] = meter.as_dict()
        details[str(runners)] = {"w1": api, "w5": code}
        result.notes.append(
            f"{runners} runner(s), W1 CPU (cores): "
            f"{describe_cpu(api['services']['cpu_share'], api['services']['cpu_wait_share'])}"
        )
    for runners in p.scale_runners:
        result.add(
            f"W1 {p.scale_w1_tasks:,} API tasks (nats), {runners} runner(s)",
            "tasks/s",
            details[str(runners)]["w1"]["rate_per_s"],
            higher_is_better=True,
        )
    for runners in p.scale_runners:
        result.add(
            f"W5 {p.scale_w5_burst} code tasks, {runners} runner(s)",
            "tasks/s",
            details[str(runners)]["w5"]["rate_per_s"],
            higher_is_better=True,
        )
    result.details = details
    return result
