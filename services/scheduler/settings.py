"""Scheduler settings (``TASKMESH_*``)."""

from __future__ import annotations

from datetime import timedelta

from services.common.settings import ServiceSettings


class SchedulerSettings(ServiceSettings, kw_only=True, forbid_unknown_fields=True):
    """Misfire handling and firing concurrency."""

    misfire_grace: timedelta = timedelta(seconds=10)
    """A fire later than this (no scheduler was running) is a misfire, handled by the task's policy."""
    run_all_limit: int = 100
    """At most this many missed fires are caught up under misfire policy ``run_all``."""
    fire_concurrency: int = 512
    fire_round_spacing: timedelta = timedelta(milliseconds=5)
    """Under load, rounds of fires start at least this far apart, so the fires of that moment share
    their writes downstream; a fire waits at most this long, and a timer due alone fires on time."""
