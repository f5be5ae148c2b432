"""The Celery app, configured from ``BENCH_*`` variables set by the harness."""

from __future__ import annotations

import os
from datetime import timedelta

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
BROKER_URL = f"{REDIS_URL}/0"
BACKEND_URL = f"{REDIS_URL}/1"
"""Results in their own database, so the driver can read them without scanning the broker's keys."""

app = Celery("bench", broker=BROKER_URL, backend=BACKEND_URL, include=["bench.celery_app.tasks"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    timezone="UTC",
    enable_utc=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
    # ETA tasks are kept by the worker until due; the default visibility timeout (1 h) is longer than any run.
    broker_transport_options={"visibility_timeout": 3600},
)


def beat_schedule(count: int, url: str) -> dict:
    """``count`` entries, each firing every second (Beat's interval schedule; crontab has no seconds)."""
    return {
        f"schedule-{number}": {
            "task": "bench.beat_fetch",
            "schedule": timedelta(seconds=1),
            "args": (url, f"schedule-{number}"),
        }
        for number in range(count)
    }


app.conf.beat_schedule = beat_schedule(
    int(os.environ.get("BENCH_BEAT_SCHEDULES", "0")), os.environ.get("BENCH_TARGET_URL", "http://127.0.0.1:9/")
)
