"""Store settings (``TASKMESH_*``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from services.common.settings import LimitSettings


class StoreSettings(LimitSettings, kw_only=True, forbid_unknown_fields=True):
    """Retention, caps, and the operator limits submissions are checked against."""

    task_retention: timedelta = timedelta(days=7)
    """Finished one-shot tasks (with their runs and logs) are deleted this long after finishing."""
    retention_sweep_interval: timedelta = timedelta(seconds=60)
    retention_batch: int = 1000
    """Expired tasks a sweep reads from the catalog and deletes at a time (64 in flight), until none
    is left."""
    storage_limit_bytes: int = 0
    """Refuse new tasks (HTTP 507) while JetStream holds this many bytes or more, so a full disk
    stops submissions before it stops writes of tasks already accepted. 0: the account's
    JetStream storage limit when one is set, else no limit."""
    run_history_limit: int = 100
    """Runs kept per task (schedules fire forever); the oldest finished ones go first."""
    log_cap_bytes: int = 1024 * 1024
    max_concurrent_requests: int = 1024
    store_max_waiters: int = 10_000
    """Waits the store holds at once for every gateway and NATS client (they hold no request slot);
    past it a `too_many_waiters` error. Above a gateway's `max_waiters`: a wait whose client hung up
    is held until its timeout."""
    store_dir: str = ".taskmesh/store"
    """Where the store keeps its catalog (an SQLite file: derived from KV, rebuilt when lost)."""
    catalog_cache_mb: int = 16
    """SQLite page cache of the catalog (shared by its reading and its writing connection)."""
    cache_mb: int = 32
    """Finished task records kept in memory for fast reads (least recently used go first)."""
    unfinished_write_delay: timedelta = timedelta(milliseconds=100)
    """How long a changed one-shot task that is not at its end (pending, queued, running) waits
    before its record is written to KV. Most end sooner and are written once, at their end. The
    events that changed it stay unacknowledged meanwhile: a crash replays them. 0: every state is
    written by the next flush."""

    def catalog_path(self) -> Path:
        """The catalog's file."""
        return Path(self.store_dir) / "catalog.sqlite3"
