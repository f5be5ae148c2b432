"""The Celery baseline's processes: its own venv, redis-server, a prefork worker, Beat, and the driver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.machine import ROOT

VENV = ROOT / ".taskmesh" / "bench-celery-venv"
REQUIREMENTS = ["celery[redis]==5.5.3", "requests==2.32.3"]
"""Pinned: the figures compare against one known Celery."""
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    """The Celery venv, made and installed once (a set-up step: the only time PyPI is reached)."""
    stamp = VENV / f".installed-{'-'.join(REQUIREMENTS)}"
    if stamp.exists():
        return venv_python()
    print(f"bench: installing {', '.join(REQUIREMENTS)} into {VENV}", file=sys.stderr)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if os.path.exists(CA_BUNDLE):
        env.setdefault("SSL_CERT_FILE", CA_BUNDLE)
    done = subprocess.run(
        [str(venv_python()), "-m", "pip", "install", "-q", *REQUIREMENTS], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install into {VENV} failed: {done.stderr[-3000:]}")
    stamp.write_text("ok\n")
    return venv_python()


def ensure_redis_server() -> str:
    """redis-server from the OS packages (apt never starts it here: policy-rc.d; we start our own)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("redis-server is missing: install it (apt-get install -y redis-server)")
    print("bench: apt-get install -y redis-server", file=sys.stderr)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "redis-server"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL,
    )
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("apt-get installed redis-server but it is not on PATH")
    return found


@dataclass
class CeleryStack:
    """redis-server + one prefork worker (as many processes as cores) + optionally Beat."""

    root: Path
    target_url: str
    concurrency: int = os.cpu_count() or 1
    beat_schedules: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    redis_port: int = 0
    redis: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    beat: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        return {
            "BENCH_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}",
            "BENCH_TARGET_URL": self.target_url,
            "BENCH_BEAT_SCHEDULES": str(self.beat_schedules or 0),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def _celery(self, *args: str) -> list[str]:
        return [str(venv_python()), "-m", "celery", "-A", "bench.celery_app.app", *args]

    def start(self) -> CeleryStack:
        logs = self.root / "logs"
        self.redis_port = procs.free_port()
        self.redis = procs.start_child(
            [
                ensure_redis_server(),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            logs / "redis.log",
        )
        procs.wait_port(self.redis_port, self.redis)
        self.worker = procs.start_child(
            self._celery(
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(self.concurrency),
                "--loglevel",
                "WARNING",
                "--hostname",
                f"bench@{self.redis_port}",
            ),
            logs / "celery-worker.log",
            self.env(),
            cwd=str(ROOT),
        )
        self.driver("ping", timeout=60, wait_s=90)
        if self.beat_schedules is not None:
            self.start_beat()
        return self

    def start_beat(self) -> None:
        self.beat = procs.start_child(
            self._celery(
                "beat",
                "--scheduler",
                "bench.celery_app.beat:DueScheduler",
                "--schedule",
                str(self.root / "beat-schedule"),
                "--loglevel",
                "WARNING",
            ),
            self.root / "logs" / "celery-beat.log",
            self.env(),
            cwd=str(ROOT),
        )
        time.sleep(0.5)
        if self.beat.poll() is not None:
            raise RuntimeError(f"celery beat exited: {(self.root / 'logs' / 'celery-beat.log').read_text()[-2000:]}")

    def driver(self, workload: str, wait_s: float = 3600, **options: object) -> dict:
        """Run the load driver in the Celery venv; its JSON answer (and its wall time)."""
        command = [str(venv_python()), "-m", "bench.celery_app.driver", workload]
        for name, value in options.items():
            command += [f"--{name}", str(value)]
        started = time.monotonic()
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, **self.env()}, cwd=str(ROOT), timeout=wait_s
        )
        if done.returncode != 0:
            raise RuntimeError(f"celery driver {workload} failed ({done.returncode}): {done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["driver_wall_s"] = time.monotonic() - started
        return result

    def pids(self) -> dict[str, int]:
        found = {}
        for name, process in (("celery-worker", self.worker), ("celery-beat", self.beat), ("redis-server", self.redis)):
            if process is not None and process.poll() is None:
                found[name] = process.pid
        return found

    def stop(self) -> None:
        for process in (self.beat, self.worker, self.redis):
            procs.stop_tree(process, 20)
