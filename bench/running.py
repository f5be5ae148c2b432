"""What every workload shares: the run context, stacks as context managers, CPU and profile meters."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench import procs
from bench.celery_side import CeleryStack
from bench.config import Params
from bench.stack import TaskmeshStack
from bench.target import TargetProcess

T = TypeVar("T")


@dataclass
class Context:
    """One harness run: parameters, a scratch directory, the HTTP target, what to run."""

    params: Params
    work_dir: Path
    target: TargetProcess
    celery: bool = True
    profile: bool = False
    wheelhouse: Path | None = None

    def directory(self, name: str) -> Path:
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run the load generator on uvloop, so the client is not the bottleneck."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


@contextlib.contextmanager
def taskmesh(ctx: Context, name: str, runners: int = 1, **env: str) -> Iterator[TaskmeshStack]:
    """A fresh Taskmesh stack (own nats store, deps dir, logs) stopped however the block ends."""
    stack = TaskmeshStack(ctx.directory(f"taskmesh-{name}"), runners=runners, env_extra=env)
    try:
        yield stack.start()
    finally:
        stack.stop()


@contextlib.contextmanager
def celery(ctx: Context, name: str, beat_schedules: int | None = None, **env: str) -> Iterator[CeleryStack]:
    """A fresh redis-server + Celery worker (+ Beat), stopped however the block ends."""
    stack = CeleryStack(
        ctx.directory(f"celery-{name}"),
        ctx.target.url,
        beat_schedules=beat_schedules,
        concurrency=ctx.params.cores,
        extra_env=env,
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


class ServiceCpu:
    """CPU of each process tree over a phase, in cores, and time it was runnable but waited for a CPU."""

    # "waited" (schedstat's run-queue delay) is how a shared machine's other load shows up.

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.shares: dict[str, float] = {}
        self.waiting: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.wall_s = 0.0

    def __enter__(self) -> ServiceCpu:
        self.before = {name: procs.tree_schedstat_seconds(pid) for name, pid in self.pids.items()}
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = self.wall_s = max(time.monotonic() - self.started, 1e-6)
        for name, pid in self.pids.items():
            on_cpu, waiting = procs.tree_schedstat_seconds(pid)
            self.cpu_seconds[name] = round(on_cpu - self.before[name][0], 3)
            self.shares[name] = round((on_cpu - self.before[name][0]) / wall, 3)
            self.waiting[name] = round((waiting - self.before[name][1]) / wall, 3)

    def total_cpu_seconds(self) -> float:
        return sum(self.cpu_seconds.values())

    def as_dict(self) -> dict:
        return {
            "cpu_share": self.shares,
            "cpu_wait_share": self.waiting,
            "cpu_seconds": self.cpu_seconds,
            "wall_s": round(self.wall_s, 3),
        }


def describe_cpu(shares: dict[str, float], waiting: dict[str, float] | None = None) -> str:
    """``store 0.97 (waited 0.20), runner 0.61, …`` (cores), busiest first."""

    def one(name: str, share: float) -> str:
        wait = (waiting or {}).get(name)
        return f"{name} {share:.2f}" + (f" (waited {wait:.2f})" if wait is not None else "")

    return ", ".join(one(name, share) for name, share in sorted(shares.items(), key=lambda item: -item[1]))


class Profiler:
    """py-spy on each service for the phase (``--profile``): collapsed stacks plus a top-functions list."""

    def __init__(self, enabled: bool, pids: dict[str, int], out_dir: Path, label: str) -> None:
        beside = Path(sys.executable).with_name("py-spy")  # make bench runs .venv/bin/python unactivated
        self.py_spy = str(beside) if beside.exists() else shutil.which("py-spy")
        self.enabled = enabled and self.py_spy is not None
        self.pids = {name: pid for name, pid in pids.items() if "nats" not in name and "redis" not in name}
        self.out_dir, self.label = out_dir, label
        self.recorders: dict[str, tuple[subprocess.Popen, Path]] = {}
        self.top: dict[str, dict[str, list[tuple[str, float]]]] = {}
        if enabled and not self.enabled:
            print("bench: --profile needs py-spy (pip install py-spy into .venv); not profiling", file=sys.stderr)

    def __enter__(self) -> Profiler:
        if self.enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for name, pid in self.pids.items():
                path = self.out_dir / f"{self.label}-{name}.collapsed"
                recorder = subprocess.Popen(
                    [
                        self.py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        "200",
                        "--format",
                        "raw",
                        "--output",
                        str(path),
                        "--nonblocking",
                        "--subprocesses",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                self.recorders[name] = (recorder, path)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, (recorder, path) in self.recorders.items():
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                recorder.wait(30)
            except subprocess.TimeoutExpired:
                recorder.kill()
            if path.exists():
                self.top[name] = top_functions(path)

    def paths(self) -> dict[str, str]:
        return {name: str(path) for name, (_, path) in self.recorders.items()}


def top_functions(path: Path, limit: int = 12) -> dict[str, list[tuple[str, float]]]:
    """Frames with the most samples on top of the stack (``self``) and anywhere in it (``inclusive``)."""
    # py-spy leaves idle samples out; wrappers present in > 90 % of the samples tell nothing.
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames[1:]):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return {"self": [], "inclusive": [], "samples": []}

    def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
        shares = [(frame, round(count / total, 3)) for frame, count in counts.items() if count / total <= 0.9]
        return sorted(shares, key=lambda item: -item[1])[:limit]

    return {"self": ranked(own), "inclusive": ranked(inclusive), "samples": [("total", float(total))]}
