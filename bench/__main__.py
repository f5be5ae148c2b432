"""``python -m bench [W1 … W8 SCALE] [--quick]``: run workloads on Taskmesh and Celery, print one table, write JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import shutil
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

WORKLOADS = {
    "W1": "bench.w1_throughput",
    "W2": "bench.w2_latency",
    "W3": "bench.w3_delayed",
    "W4": "bench.w4_schedules",
    "W5": "bench.w5_sandbox",
    "W6": "bench.w6_footprint",
    "W7": "bench.w7_retention",
    "W8": "bench.w8_flow",
    "SCALE": "bench.scaleout",
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "workloads", nargs="*", metavar="WORKLOAD", help=f"any of {', '.join(WORKLOADS)} (default: all, in that order)"
    )
    parser.add_argument("--quick", action="store_true", help="about 1/20 of every size: a few minutes in all")
    parser.add_argument("--no-celery", action="store_true", help="Taskmesh only (no baseline, no ratios)")
    parser.add_argument("--profile", action="store_true", help="py-spy every service during load phases")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, nats data) afterwards")
    parser.add_argument("--w7-retained", metavar="N,N,…", help="W7's checkpoints (default 10000,100000,1000000)")
    parser.add_argument("--soak-minutes", type=float, help="W7's soak (default 10, --quick 1; 0: none)")
    args = parser.parse_args(argv)
    args.workloads = [name.upper() for name in args.workloads] or list(WORKLOADS)
    unknown = [name for name in args.workloads if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    return args


def set_up(args: argparse.Namespace) -> Path | None:
    """Everything that may touch the network happens here, before any measurement."""
    from bench.celery_side import ensure_redis_server, ensure_venv

    if not args.no_celery:
        ensure_venv()
        ensure_redis_server()
    if "W5" in args.workloads or "SCALE" in args.workloads:
        from bench.machine import ROOT

        directory = Path(os.environ.get("TASKMESH_TEST_WHEELHOUSE", ROOT / ".taskmesh" / "wheelhouse"))
        if not any(directory.glob("numpy-*.whl")):
            import subprocess

            subprocess.run([sys.executable, "-m", "tests.wheelhouse"], check=True, cwd=ROOT)
        return directory
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from bench import report
    from bench.celery_app.sandbox import CONTAINER_LABEL
    from bench.celery_side import venv_python
    from bench.config import Params
    from bench.machine import ROOT, git_info, load_average, machine_info, versions
    from bench.running import Context
    from bench.stack import remove_containers
    from bench.target import TargetProcess

    params = Params().quick() if args.quick else Params()
    if args.w7_retained:
        params = replace(params, w7_retained=tuple(sorted(int(n) for n in args.w7_retained.split(","))))
    if args.soak_minutes is not None:
        params = replace(params, w7_soak_s=args.soak_minutes * 60)
    started = dt.datetime.now(dt.UTC)
    wheelhouse = set_up(args)
    git = git_info()
    header = {
        "date": started.date().isoformat(),
        "started_at": started.isoformat(),
        "git": git,
        "machine": machine_info(),
        "versions": versions(None if args.no_celery else str(venv_python())),
        "quick": args.quick,
        "workloads_selected": args.workloads,
        "params": params.as_dict(),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
    }
    work_dir = ROOT / ".taskmesh" / "bench-runs" / started.strftime("%Y%m%dT%H%M%S")
    work_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"bench: {', '.join(args.workloads)}{' (quick)' if args.quick else ''} on {os.cpu_count()} cores, "
        f"commit {git['commit']}{' (dirty)' if git['dirty'] else ''}; logs in {work_dir}",
        file=sys.stderr,
    )
    target = TargetProcess(work_dir).start()
    ctx = Context(params, work_dir, target, celery=not args.no_celery, profile=args.profile, wheelhouse=wheelhouse)
    results: list[report.WorkloadResult] = []
    try:
        for name in args.workloads:
            print(f"bench: {name} …", file=sys.stderr)
            began = time.monotonic()
            try:
                result = importlib.import_module(WORKLOADS[name]).run(ctx)
            except Exception as exc:  # one workload failing must not cost the others' figures
                traceback.print_exc()
                result = report.WorkloadResult(name, error=f"{type(exc).__name__}: {exc}")
            result.seconds = time.monotonic() - began
            results.append(result)
            print(report.render_table([result]), file=sys.stderr)
    finally:
        target.stop()
        remove_containers(CONTAINER_LABEL)
    header["machine"]["load_average_end"] = load_average()  # type: ignore[index]
    header["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
    path = report.results_path(str(git["commit"]), started.date())
    report.write_json(path, header, results)
    print(report.render_table(results))
    for result in results:
        for note in result.notes:
            print(f"  {result.name}: {note}")
    print(
        f"\nwritten {path.relative_to(ROOT)} ({os.cpu_count()} cores, load average "
        f"{header['machine']['load_average_start']} → {header['machine']['load_average_end']})"
    )  # type: ignore[index]
    failed = any(result.error for result in results)
    if args.keep or failed:
        print(f"run directory kept: {work_dir}")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
