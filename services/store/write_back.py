"""Write-back: what changed in memory since the last flush, taken as encoded records; then, once
they are written, a finished task leaves memory for the cache (KV has its records from then on).

A task leaves only after the write, not when its records are taken: until KV holds its final run,
a read of its runs must still find them in memory (a finished task's runs are read from KV).

A one-shot task before its end is held back until it has gone unwritten for ``hold_seconds``:
most end sooner, and then only their final records are written (one KV write of the task instead
of one per step). The events that changed a held task stay unacknowledged until a flush
writes it (``services.store.consumers``), so a crash meanwhile replays them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from proto import codec, subjects
from proto.records import TaskRecord
from proto.tasks import FINAL_STATUSES
from services.store.cache import RecordCache
from services.store.catalog import catalog_row
from services.store.writes import LEDGER_RUN_ID, Writes, ledger_key

if TYPE_CHECKING:
    from services.store.run_book import RunBook
    from services.store.schedule_view import Ledgers


ON_THE_WAY = frozenset({"pending", "queued", "running", "retrying"})
"""Statuses of a one-shot task before its end (``proto.tasks.TaskStatus``)."""


class PendingWrites:
    """Keys of the records changed or removed since the last flush: every apply marks, each flush takes."""

    def __init__(self) -> None:
        self.tasks: set[str] = set()
        self.runs: set[tuple[str, str]] = set()
        self.ledgers: set[str] = set()
        self.removed_tasks: set[str] = set()
        self.removed_runs: set[tuple[str, str]] = set()

    def __bool__(self) -> bool:
        """Anything to write or remove."""
        return bool(self.tasks or self.runs or self.ledgers or self.removed_tasks or self.removed_runs)

    def forget_task(self, task_id: str) -> None:
        """A deleted task's records are not written (they are removed instead)."""
        self.tasks.discard(task_id)
        self.ledgers.discard(task_id)
        self.runs = {key for key in self.runs if key[0] != task_id}


class WriteBack:
    """Takes the pending writes of tasks, runs and ledgers in memory; puts them back when a write fails."""

    def __init__(
        self,
        pending: PendingWrites,
        tasks: dict[str, TaskRecord],
        run_book: RunBook,
        ledgers: Ledgers,
        cache: RecordCache,
        hold_seconds: float = 0.0,
    ) -> None:
        self.pending = pending
        self.tasks = tasks
        self.run_book = run_book
        self.ledgers = ledgers
        self.cache = cache
        self.hold_seconds = hold_seconds
        self.unwritten_since: dict[str, float] = {}
        """Held tasks: when a take first found each one changed (monotonic seconds)."""
        self.evicted = 0

    def take(self, needs_row: Callable[[str], bool], now: float | None = None) -> Writes:
        """Everything changed since the last call, encoded now (a snapshot), and removals; with
        the catalog rows, taken at the same moment, of the tasks whose catalog row may differ
        from the record (``needs_row``). Tasks held back (``holds``) and their runs stay pending."""
        now = time.monotonic() if now is None else now
        pending = self.pending
        writes = Writes()
        for task_id in pending.tasks:
            task = self.tasks.get(task_id)
            if task is not None and self.holds(task, now):
                writes.held_back.add(task_id)
            elif task is not None:
                encoded = codec.encode(task)
                writes.tasks.append((task_id, encoded))
                if needs_row(task_id):
                    writes.catalog_rows[task_id] = catalog_row(task)
                if task.status in FINAL_STATUSES and not self.run_book.active(task_id):
                    writes.leaving.append((task_id, encoded))
        held = writes.held_back
        for task_id, run_id in pending.runs:
            run = self.run_book.of(task_id).get(run_id)
            if run is not None and task_id not in held:
                writes.runs.append((subjects.run_key(task_id, run_id), codec.encode(run)))
        for task_id in pending.ledgers:
            if task_id in self.ledgers.entries:
                writes.runs.append((ledger_key(task_id), codec.encode(self.ledgers.entries[task_id])))
        writes.removed_tasks = pending.removed_tasks
        writes.removed_runs = [subjects.run_key(t, r) for t, r in pending.removed_runs]
        pending.tasks = set(held)
        pending.runs = {key for key in pending.runs if key[0] in held} if held else set()
        pending.ledgers = set()
        pending.removed_tasks, pending.removed_runs = set(), set()
        self.unwritten_since = {task_id: self.unwritten_since[task_id] for task_id in held}
        return writes

    def holds(self, task: TaskRecord, now: float) -> bool:
        """Whether ``task``'s changes wait for a later take: a one-shot task on its way to its end
        that no take has yet found unwritten for ``hold_seconds``. Schedules are not held: they
        never end, so a hold would only delay each of their writes (it cost W4 CPU)."""
        if not self.hold_seconds or task.status not in ON_THE_WAY:
            return False
        return now - self.unwritten_since.setdefault(task.id, now) < self.hold_seconds

    def written(self, writes: Writes) -> None:
        """KV holds ``writes``: their finished tasks leave memory for the cache, unless one changed
        since it was taken (a late event, a delete: a later flush writes it, and then it leaves)."""
        if not writes.leaving:
            return
        pending = self.pending
        runs_changed = {task_id for task_id, _ in pending.runs}
        for task_id, encoded in writes.leaving:
            if task_id not in self.tasks:
                continue  # deleted meanwhile
            if task_id in pending.tasks or task_id in pending.ledgers or task_id in runs_changed:
                pending.tasks.add(task_id)  # the next flush takes it again, and it leaves after that write
                continue
            del self.tasks[task_id]
            self.run_book.forget(task_id)
            self.ledgers.forget(task_id)
            self.cache.put(task_id, encoded)
            self.evicted += 1

    def requeue(self, writes: Writes) -> None:
        """Mark the records of a failed write dirty again. Its tasks are all still in memory (they
        leave only after a write that succeeds) unless deleted meanwhile; a record of a deleted
        task, or of a run dropped past the history limit, is not written: its removal is pending."""
        pending = self.pending
        pending.tasks.update(key for key, _ in writes.tasks if key in self.tasks)
        for key, _ in writes.runs:
            task_id, _, run_id = key.partition(".")
            if run_id == LEDGER_RUN_ID:
                if task_id in self.ledgers.entries:
                    pending.ledgers.add(task_id)
            elif run_id in self.run_book.of(task_id):
                pending.runs.add((task_id, run_id))
        pending.removed_tasks |= writes.removed_tasks
        for key in writes.removed_runs:
            task_id, _, run_id = key.partition(".")
            pending.removed_runs.add((task_id, run_id))
