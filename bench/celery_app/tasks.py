"""The baseline's tasks: one GET (API task), one timed GET (delayed, scheduled), one ``docker run`` (code task)."""

from __future__ import annotations

import os
import subprocess
import time

import redis
import requests

from bench.celery_app.app import REDIS_URL, app
from bench.celery_app.sandbox import CONTAINER_LABEL, SANDBOX_FLAGS

_clients: dict[str, object] = {}


def session() -> requests.Session:
    """One keep-alive HTTP session per worker process (made after the fork)."""
    if "http" not in _clients:
        _clients["http"] = requests.Session()
    return _clients["http"]  # type: ignore[return-value]


def records() -> redis.Redis:
    """Where timed tasks append their start times (database 2: neither broker nor results)."""
    if "redis" not in _clients:
        _clients["redis"] = redis.Redis.from_url(f"{REDIS_URL}/2")
    return _clients["redis"]  # type: ignore[return-value]


@app.task(name="bench.noop")
def noop() -> str:
    return "pong"


@app.task(name="bench.fetch")
def fetch(url: str) -> int:
    return session().get(url, timeout=30).status_code


@app.task(name="bench.fetch_timed")
def fetch_timed(url: str, due: float, key: str) -> int:
    started = time.time()  # the start, as Taskmesh's RunStarted: before the HTTP call
    records().rpush(key, f"{due!r} {started!r}")
    return session().get(url, timeout=30).status_code


@app.task(name="bench.beat_fetch")
def beat_fetch(url: str, name: str, due: float | None = None) -> int:
    started = time.time()
    records().rpush("bench:w4", f"{name} {due!r} {started!r}")
    return session().get(url, timeout=30).status_code


@app.task(name="bench.run_code")
def run_code(code: str) -> str:
    """What the original did for a code task: ``docker run --rm`` per call, the result on stdout."""
    command = [
        "docker",
        "run",
        "--rm",
        "--label",
        CONTAINER_LABEL,
        *SANDBOX_FLAGS,
        os.environ["BENCH_SANDBOX_IMAGE"],
        "python3",
        "-c",
        code,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"docker run exited {done.returncode}: {done.stderr[-500:]}")
    return done.stdout.strip()
