"""The store's materialised state: tasks and runs in progress, changed only by applying events.

Applying is synchronous and idempotent: a redelivered or replayed event changes nothing, and
counters move only on a state *transition*, so nothing is counted twice. Each apply reports
what the caller must do next (``Effects``) and marks what must be written back.

Memory follows work in progress, not history: ``tasks`` holds tasks that are not final (and
final ones whose runs are still active, or whose write is pending). Once a final task is
written it leaves for a bounded cache; from then on KV has its record and the catalog (an
SQLite file) lists and counts it. Events that still arrive for it are stale and change nothing.

``StoreState`` holds the state and answers lookups; the parts each do one job: ``lifecycle``
applies events, stepping each task through its state machine (the table in ``transitions``);
``run_book`` keeps the runs and fences their attempts; ``schedule_view`` keeps a schedule's
counters and ledger; ``write_back`` hands what changed to the flush.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from proto import events
from proto.api import LedgerEntry
from proto.records import RunRecord, TaskRecord
from proto.runs import RunEvent
from proto.tasks import FINAL_STATUSES
from services.store.cache import RecordCache
from services.store.catalog import Catalog, catalog_row
from services.store.effects import Effects  # callers import it from here
from services.store.lifecycle import TaskLifecycle
from services.store.metrics import RunMetrics
from services.store.run_book import RunBook
from services.store.schedule_view import Ledgers
from services.store.write_back import PendingWrites, WriteBack
from services.store.writes import Writes

METRICS_KEY = "metrics"
"""The catalog's meta key of the saved run metrics."""


class StoreState:
    """Tasks in progress with their runs and ledgers; the catalog and a cache for the rest."""

    def __init__(
        self,
        *,
        run_history_limit: int = 100,
        ledger_limit: int = 200,
        catalog: Catalog | None = None,
        cache_bytes: int = 32 * 1024 * 1024,
        hold_seconds: float = 0.0,
    ) -> None:
        self.catalog = catalog if catalog is not None else Catalog(":memory:")
        self.cache = RecordCache(cache_bytes)
        self.tasks: dict[str, TaskRecord] = {}
        self.idempotency: dict[str, str] = {}
        self.metrics = RunMetrics()
        self.tombstones: OrderedDict[str, None] = OrderedDict()
        self.uncatalogued: dict[str, TaskRecord] = {}
        """Tasks whose catalog row is behind: written by the next list or count (``sync_catalog``),
        or by a flush when the task has no row yet or has come to its end (``catalog_row_due``)."""
        self.rowless: set[str] = set()
        """Accepted tasks the catalog has no row for yet."""
        self.uncatalogued_removals: set[str] = set()
        self.unconfirmed: set[str] = set()
        """Ids whose catalog row runs ahead of KV (marked in the catalog until a flush confirms them)."""
        self._metrics_taken = -1
        self._catalog_backlog: Writes | None = None
        """Rows and metrics of a flush whose catalog commit failed: committed with the next one."""
        self._catalog_writes = asyncio.Lock()
        """Held across a catalog commit (it awaits a worker thread): commits keep their order."""
        self.pending = PendingWrites()
        self.run_book = RunBook(run_history_limit, self.metrics, self.pending)
        self.schedule_ledgers = Ledgers(ledger_limit, self.pending)
        self.write_back = WriteBack(
            self.pending, self.tasks, self.run_book, self.schedule_ledgers, self.cache, hold_seconds
        )
        self.held_back: set[str] = set()
        """Tasks whose changes the last completed flush left for a later one (``WriteBack.holds``)."""
        self.lifecycle = TaskLifecycle(self)

    @property
    def runs(self) -> dict[str, dict[str, RunRecord]]:
        """Runs of the tasks in memory, by task id and run id."""
        return self.run_book.runs

    @property
    def run_counts(self) -> dict[str, int]:
        """Runs in memory by status."""
        return self.run_book.counts

    @property
    def ledgers(self) -> dict[str, list[LedgerEntry]]:
        """Ledgers of the schedules in memory, by task id."""
        return self.schedule_ledgers.entries

    def holds_any(self, task_ids: set[str]) -> bool:
        """Whether the last completed flush held back a change of any of ``task_ids`` (an event
        about them is acknowledged only once a flush has written it)."""
        return not self.held_back.isdisjoint(task_ids)

    @property
    def dirty_tasks(self) -> set[str]:
        """Tasks whose record is written by the next flush."""
        return self.pending.tasks

    # --- looking up ---------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord | None:
        """The task if it is in memory (in progress, or recently finished and cached)."""
        return self.tasks.get(task_id) or self.cache.get(task_id)

    def is_retained(self, task_id: str) -> bool:
        """Whether the task exists, in memory or only in KV (the catalog knows every one)."""
        if task_id in self.tasks or task_id in self.uncatalogued:
            return True
        return task_id not in self.uncatalogued_removals and self.catalog.status_of(task_id) is not None

    def task_for_key(self, idempotency_key: str) -> str | None:
        """The retained task submitted with this idempotency key."""
        return self.idempotency.get(idempotency_key) or self.catalog.task_for_key(idempotency_key)

    async def sync_catalog(self, *, ahead: bool = True) -> int:
        """Show in the catalog what memory knows (a list or a count right after an answer); returns rows written.

        Memory is ahead of KV here, so the rows are marked unconfirmed until the flush that writes
        them commits its own rows (``commit_written``). ``ahead=False`` only where memory holds
        what KV holds (just loaded). Until the commit is done the tasks stay in ``uncatalogued``
        (a lookup meanwhile answers from memory); a task whose row changed meanwhile stays there.
        """
        async with self._catalog_writes:
            changed, removed = dict(self.uncatalogued), set(self.uncatalogued_removals)
            if not changed and not removed:
                return 0
            rows = {task_id: catalog_row(task) for task_id, task in changed.items()}
            await self._in_catalog((), removed, rows=rows.values(), ahead=ahead)
            for task_id, row in rows.items():
                task = self.uncatalogued.get(task_id)
                if task is not None and catalog_row(task) == row:
                    del self.uncatalogued[task_id]
            self.uncatalogued_removals -= removed
            if ahead:
                self.unconfirmed.update(rows.keys(), removed)
            self.rowless.difference_update(rows)
            for task_id, task in changed.items():
                key = task.idempotency_key
                if task_id not in self.tasks and key and self.idempotency.get(key) == task_id:
                    self.idempotency.pop(key)  # the catalog answers for it now
            return len(rows) + len(removed)

    async def commit_written(self, writes: Writes, meta: dict[str, bytes]) -> None:
        """Once KV holds ``writes``: the catalog takes the rows and metrics taken with them (never
        memory's newer state, which KV does not hold yet), their marks go, and their finished
        tasks leave memory (after the commit: until then a lookup finds them in memory)."""
        async with self._catalog_writes:
            backlog, self._catalog_backlog = self._catalog_backlog, None
            rows = writes
            if backlog is not None:  # older than these: these win where both have a row
                rows = Writes(
                    removed_tasks=backlog.removed_tasks | writes.removed_tasks,
                    catalog_rows={**backlog.catalog_rows, **writes.catalog_rows},
                    metrics=writes.metrics or backlog.metrics,
                )
            meta = dict(meta)
            if rows.metrics is not None:
                meta[METRICS_KEY] = rows.metrics
            confirmed = [t for t in (*rows.catalog_rows, *rows.removed_tasks) if t in self.unconfirmed]
            try:
                await self._in_catalog(
                    (), rows.removed_tasks, meta, rows=rows.catalog_rows.values(), confirmed=confirmed
                )
            except BaseException:
                self._catalog_backlog = rows
                self.write_back.written(writes)  # KV holds them: they leave memory all the same
                raise
            self.write_back.written(writes)  # first: a task out of memory has its idempotency key in the catalog
            self.unconfirmed.difference_update(confirmed)
            self.uncatalogued_removals -= rows.removed_tasks
            self.rowless.difference_update(rows.catalog_rows)
            for task_id, row in rows.catalog_rows.items():
                task = self.tasks.get(task_id)
                if task_id not in self.pending.tasks:
                    self.uncatalogued.pop(task_id, None)  # the row committed is the task as it is
                elif task is not None:
                    self.uncatalogued[task_id] = task  # changed since taken: shown again by the next sync
                key = row.idempotency_key
                if task is None and key and self.idempotency.get(key) == task_id:
                    self.idempotency.pop(key)  # the catalog answers for it now

    async def _in_catalog(self, *args: Any, **kwargs: Any) -> None:
        """One catalog commit. A file's runs in a worker thread: SQLite releases the GIL while it
        writes, and a commit of a few hundred rows (milliseconds under load) would otherwise stop
        the event loop; commits are serialised by ``_catalog_writes``, reads use their own
        connection and see each commit whole."""
        if self.catalog.on_disk:
            await asyncio.to_thread(self.catalog.commit, *args, **kwargs)
        else:
            self.catalog.commit(*args, **kwargs)

    def runs_by_status(self) -> dict[str, int]:
        """Runs in progress (counted in memory) and finished runs by outcome (aggregates, all time)."""
        return self.run_book.by_status()

    # --- loading at start ---------------------------------------------------------------------

    def load_task(self, task: TaskRecord) -> None:
        """Take the record of a task in progress read back from the tasks bucket."""
        self.tasks[task.id] = task
        self.uncatalogued[task.id] = task  # the catalog may trail KV after a crash
        if task.idempotency_key:
            self.idempotency[task.idempotency_key] = task.id

    def load_run(self, run: RunRecord) -> None:
        """Take a run record read back from the runs bucket (after its task)."""
        self.run_book.load(run)

    def load_ledger(self, task_id: str, entries: list[LedgerEntry]) -> None:
        """Take a ledger read back from the runs bucket."""
        self.schedule_ledgers.load(task_id, entries)

    def finish_loading(self) -> None:
        """Order each task's runs by queue time after an unordered load, and count a one-shot
        task's runs from what was read back: its record and its run's are separate writes, and a
        kill between them leaves a count the replayed events would otherwise add to again."""
        self.run_book.order_loaded()
        for task in self.tasks.values():
            loaded = len(self.run_book.of(task.id))
            if task.task_type != "scheduled" and task.run_count != loaded:
                task.run_count = loaded
                self.pending.tasks.add(task.id)

    # --- applying events ----------------------------------------------------------------------

    def apply_task_event(self, event: events.TaskEvent, seq: int) -> Effects:
        """Apply a TASKS-stream event with stream sequence ``seq``."""
        return self.lifecycle.apply_task_event(event, seq)

    def apply_schedule_event(self, event: events.ScheduleEvent) -> Effects:
        """Apply a scheduler bookkeeping event."""
        return self.lifecycle.apply_schedule_event(event)

    def apply_run_event(self, event: RunEvent) -> Effects:
        """Apply a run event; stale and repeated events change nothing."""
        return self.lifecycle.apply_run_event(event)

    def catalog_row_due(self, task_id: str) -> bool:
        """Whether a flush writes the task's catalog row with its record.

        A row marked ahead of KV is confirmed by it; a new task needs one (a start finds the tasks
        in progress by their rows), and so does a task at its end (it leaves memory, and lists,
        counts and the retention sweep then read only its row). The steps between (queued,
        running) are not written by flushes: every list and count syncs the catalog first, and a
        start reads tasks in progress back from KV. Half the row writes of a task.
        """
        if task_id in self.unconfirmed:
            return True
        task = self.uncatalogued.get(task_id)
        return task is not None and (task_id in self.rowless or task.status in FINAL_STATUSES)

    def take_writes(self) -> Writes:
        """Everything changed since the last call, encoded now (a snapshot), with its catalog rows
        and the run metrics of the same moment, and removals."""
        writes = self.write_back.take(self.catalog_row_due)
        if writes and self.metrics.changes != self._metrics_taken:
            writes.metrics = self.metrics.encode()
            self._metrics_taken = self.metrics.changes
        return writes

    def requeue(self, writes: Writes) -> None:
        """Mark the records of a failed write dirty again (and save the metrics again)."""
        self._metrics_taken = -1  # the next take saves them again
        self.write_back.requeue(writes)
