"""``python -m bench.celery_app.driver <workload> …``: the Celery load generator; prints one JSON line.

Runs in the Celery venv, as one synchronous client (Celery's own API), while the harness owns
redis-server, the worker and Beat.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime

import redis

from bench.celery_app.app import BACKEND_URL, REDIS_URL
from bench.celery_app.tasks import fetch, fetch_timed, noop, run_code

CODE = "print(1 + 1)"
"""The short code task of W5 (Taskmesh runs ``def main(): return 1 + 1``)."""


def ping(args: argparse.Namespace) -> dict:
    """Until a worker answers a task (it has finished starting)."""
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            return {"pong": noop.delay().get(timeout=5)}
        except Exception:
            if time.monotonic() > deadline:
                raise


def wait_results(task_ids: list[str], timeout_s: float, stored_before: int) -> list[dict]:
    """Result metas of ``task_ids`` once all are stored (or ``timeout_s`` passed)."""
    # DBSIZE of the results database is O(1): waiting costs Redis and the two cores nothing.
    backend = redis.Redis.from_url(BACKEND_URL)
    deadline = time.monotonic() + timeout_s
    while backend.dbsize() < stored_before + len(task_ids) and time.monotonic() < deadline:
        time.sleep(0.02)
    keys = [f"celery-task-meta-{task_id}" for task_id in task_ids]
    metas = []
    for start in range(0, len(keys), 5000):
        metas += [json.loads(value) for value in backend.mget(keys[start : start + 5000]) if value is not None]
    return [meta for meta in metas if meta.get("status") in ("SUCCESS", "FAILURE")]


def done_at(meta: dict) -> float:
    """When the worker stored the result (epoch seconds)."""
    when = datetime.fromisoformat(meta["date_done"])
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def burst(args: argparse.Namespace, send) -> dict:
    """Submit ``args.n`` tasks as fast as one client can, then wait for every result."""
    stored_before = redis.Redis.from_url(BACKEND_URL).dbsize()
    cpu0 = time.process_time()
    first = time.time()
    ids = [send().id for _ in range(args.n)]
    submitted = time.time()
    metas = wait_results(ids, args.timeout, stored_before)
    last = max((done_at(meta) for meta in metas), default=time.time())
    return {
        "n": args.n,
        "stored": len(metas),
        "failed": sum(1 for m in metas if m["status"] != "SUCCESS"),
        "submit_s": submitted - first,
        "completion_s": last - first,
        "rate_per_s": len(metas) / (last - first) if last > first else None,
        "client_cpu_s": time.process_time() - cpu0,
    }


def w1(args: argparse.Namespace) -> dict:
    return burst(args, lambda: fetch.delay(args.url))


def w5_burst(args: argparse.Namespace) -> dict:
    return burst(args, lambda: run_code.delay(CODE))


def sequential(args: argparse.Namespace, call) -> dict:
    """``args.n`` round trips ``delay().get()``, one after another; milliseconds each."""
    for _ in range(args.warmup):
        call()
    latencies = []
    for _ in range(args.n):
        started = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - started) * 1000)
        if args.pace:
            time.sleep(args.pace)
    return {"latencies_ms": latencies}


def w2(args: argparse.Namespace) -> dict:
    return sequential(args, lambda: fetch.delay(args.url).get(timeout=30))


def w5_latency(args: argparse.Namespace) -> dict:
    return sequential(args, lambda: run_code.delay(CODE).get(timeout=120))


def w3(args: argparse.Namespace) -> dict:
    """Countdown tasks over [dmin, dmax] s; each records its start against its ETA."""
    records = redis.Redis.from_url(f"{REDIS_URL}/2")
    key = f"bench:w3:{args.n}"
    records.delete(key)
    rng = random.Random(args.seed)
    cpu0, first = time.process_time(), time.time()
    last_due = 0.0
    for _ in range(args.n):
        due = time.time() + rng.uniform(args.dmin, args.dmax)
        last_due = max(last_due, due)
        fetch_timed.apply_async((args.url, due, key), eta=datetime.fromtimestamp(due, UTC))
    submitted = time.time()
    deadline = max(last_due, time.time()) + args.grace
    while records.llen(key) < args.n and time.time() < deadline:
        time.sleep(0.2)
    lateness = [
        (float(started) - float(due)) * 1000 for due, started in (item.split() for item in records.lrange(key, 0, -1))
    ]
    return {
        "n": args.n,
        "started": len(lateness),
        "submit_s": submitted - first,
        "lateness_ms": lateness,
        "client_cpu_s": time.process_time() - cpu0,
    }


def w4(args: argparse.Namespace) -> dict:
    """Fires of Beat's schedules whose due time falls in [start + warmup, + window)."""
    records = redis.Redis.from_url(f"{REDIS_URL}/2")
    time.sleep(args.warmup)
    window_start = time.time()
    time.sleep(args.window + args.grace)
    fires = []
    for item in records.lrange("bench:w4", 0, -1):
        name, due, started = item.decode().split()
        if due != "None" and window_start <= float(due) < window_start + args.window:
            fires.append((name, float(due), float(started)))
    return {"window_start": window_start, "fires": fires}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workload", choices=["ping", "w1", "w2", "w3", "w4", "w5-latency", "w5-burst"])
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--url", default="")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--warmup", type=float, default=0)
    parser.add_argument("--pace", type=float, default=0)
    parser.add_argument("--dmin", type=float, default=2)
    parser.add_argument("--dmax", type=float, default=30)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--grace", type=float, default=30)
    parser.add_argument("--window", type=float, default=60)
    args = parser.parse_args()
    handlers = {"ping": ping, "w1": w1, "w2": w2, "w3": w3, "w4": w4, "w5-latency": w5_latency, "w5-burst": w5_burst}
    if args.workload in ("w2", "w5-latency"):
        args.warmup = int(args.warmup)
    result = handlers[args.workload](args)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
