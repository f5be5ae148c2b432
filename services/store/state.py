"""The store's materialised state: tasks and runs in progress, changed only by applying events.

Applying is synchronous and idempotent: a redelivered or replayed event changes nothing, and
counters move only on a state *transition*, so nothing is counted twice. Each apply reports
what the caller must do next (``Effects``) and marks what must be written back (``dirty_*``).

Memory follows work in progress, not history: ``tasks`` holds tasks that are not final (and
final ones whose runs are still active, or whose write is pending). Once a final task is
written it leaves for a bounded cache; from then on KV has its record and the catalog (an
SQLite file) lists and counts it. Events that still arrive for it are stale and change nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import timedelta

from proto import codec, cron, events, runs, schedules, subjects
from proto.api import LedgerEntry
from proto.control import CancelRun
from proto.records import AttemptRecord, RunRecord, RunSummary, TaskRecord
from proto.runs import FINAL_RUN_STATUSES, RunError
from proto.tasks import FINAL_STATUSES
from services.common.clock import ms_between
from services.store.cache import RecordCache
from services.store.catalog import Catalog
from services.store.effects import Effects  # callers import it from here
from services.store.metrics import RunMetrics
from services.store.writes import LEDGER_RUN_ID, Writes, ledger_key

ACTIVE_RUN_STATUSES = frozenset({"queued", "running", "retrying"})
METRICS_KEY = "metrics"
"""The catalog's meta key of the saved run metrics."""
TOMBSTONES_KEPT = 100_000


class StoreState:
    """Tasks in progress with their runs and ledgers; the catalog and a cache for the rest."""

    def __init__(
        self,
        *,
        run_history_limit: int = 100,
        ledger_limit: int = 200,
        catalog: Catalog | None = None,
        cache_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.run_history_limit = run_history_limit
        self.ledger_limit = ledger_limit
        self.catalog = catalog if catalog is not None else Catalog(":memory:")
        self.cache = RecordCache(cache_bytes)
        self.tasks: dict[str, TaskRecord] = {}
        self.runs: dict[str, dict[str, RunRecord]] = {}
        self.ledgers: dict[str, list[LedgerEntry]] = {}
        self.idempotency: dict[str, str] = {}
        self.metrics = RunMetrics()
        self.run_counts: dict[str, int] = {}
        self.tombstones: OrderedDict[str, None] = OrderedDict()
        self.dirty_tasks: set[str] = set()
        self.dirty_runs: set[tuple[str, str]] = set()
        self.dirty_ledgers: set[str] = set()
        self.removed_tasks: set[str] = set()
        self.removed_runs: set[tuple[str, str]] = set()
        self.uncatalogued: dict[str, TaskRecord] = {}
        """Tasks whose catalog row is behind (written with the next catalog commit)."""
        self.uncatalogued_removals: set[str] = set()
        self.evicted = 0

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

    def sync_catalog(self, meta: dict[str, bytes] | None = None, *, save_metrics: bool = False) -> int:
        """Bring the catalog up to date with memory (and save the metrics if asked); returns rows written."""
        changed, removed = self.uncatalogued, self.uncatalogued_removals
        if not changed and not removed and not meta and not save_metrics:
            return 0
        self.uncatalogued, self.uncatalogued_removals = {}, set()
        meta = dict(meta or {})
        if save_metrics:
            meta[METRICS_KEY] = self.metrics.encode()
        try:
            self.catalog.commit(changed.values(), removed, meta)
        except BaseException:
            self.uncatalogued = {**changed, **self.uncatalogued}
            self.uncatalogued_removals |= removed
            raise
        for task in changed.values():
            if task.id not in self.tasks and task.idempotency_key:
                self.idempotency.pop(task.idempotency_key, None)  # the catalog answers for it now
        return len(changed) + len(removed)

    # --- loading at start ---------------------------------------------------------------------

    def load_task(self, task: TaskRecord) -> None:
        """Take the record of a task in progress read back from the tasks bucket."""
        self.tasks[task.id] = task
        self.uncatalogued[task.id] = task  # the catalog may trail KV after a crash
        if task.idempotency_key:
            self.idempotency[task.idempotency_key] = task.id

    def load_run(self, run: RunRecord) -> None:
        """Take a run record read back from the runs bucket (after its task)."""
        self.runs.setdefault(run.task_id, {})[run.run_id] = run
        self._count_run(None, run.status)

    def load_ledger(self, task_id: str, entries: list[LedgerEntry]) -> None:
        """Take a ledger read back from the runs bucket."""
        self.ledgers[task_id] = entries

    def finish_loading(self) -> None:
        """Order each task's runs by queue time after an unordered load, and count a one-shot
        task's runs from what was read back: its record and its run's are separate writes, and a
        kill between them leaves a count the replayed events would otherwise add to again."""
        for task_id, task_runs in self.runs.items():
            ordered = sorted(task_runs.values(), key=lambda r: (r.queued_at or r.started_at or r.finished_at, r.run_id))
            self.runs[task_id] = {r.run_id: r for r in ordered}
        for task in self.tasks.values():
            loaded = len(self.runs.get(task.id, {}))
            if task.task_type != "scheduled" and task.run_count != loaded:
                task.run_count = loaded
                self.dirty_tasks.add(task.id)

    # --- task lifecycle -----------------------------------------------------------------------

    def apply_task_event(self, event: events.TaskEvent, seq: int) -> Effects:
        """Apply a TASKS-stream event with stream sequence ``seq``."""
        effects = Effects()
        if isinstance(event, events.TaskSubmitted):
            self._submitted(event, seq)
            return effects
        task = self.tasks.get(event.task_id)
        if task is None:
            if isinstance(event, events.TaskDeleted) and self.is_retained(event.task_id):
                self._deleted_cold(event.task_id, effects)  # finished and written: only KV and catalog have it
            return effects
        if task.event_seq >= seq:
            return effects
        task.event_seq = seq
        self._touch(task, event.occurred_at)
        if isinstance(event, events.TaskCancelled):
            self._cancelled(task, event, effects)
        elif isinstance(event, events.TaskDeleted):
            self._deleted(task, event, effects)
        elif isinstance(event, events.SchedulePaused) and task.status == "active":
            self._set_status(task, "paused")
            task.next_run_at = None
        elif isinstance(event, events.ScheduleResumed) and task.status == "paused":
            self._set_status(task, "active")
        return effects

    def _submitted(self, event: events.TaskSubmitted, seq: int) -> None:
        if event.task_id in self.tombstones or self.is_retained(event.task_id):
            return
        spec = event.spec
        task = TaskRecord(
            id=event.task_id,
            name=spec.name,
            kind=spec.kind,
            task_type=spec.task_type,
            status="active" if spec.task_type == "scheduled" else "pending",
            spec=spec,
            created_at=event.occurred_at,
            updated_at=event.occurred_at,
            idempotency_key=event.idempotency_key,
            event_seq=seq,
        )
        if spec.task_type == "delayed" and spec.delay_seconds is not None:
            task.next_run_at = event.occurred_at + timedelta(seconds=spec.delay_seconds)
        elif spec.task_type == "immediate":
            task.next_run_at = event.occurred_at
        else:  # what the scheduler will compute too: the 201 already says when the first fire is
            try:
                task.next_run_at = schedules.next_fire(task.id, spec, event.occurred_at)
            except cron.CronError:  # accepted by an older version: the scheduler will say
                pass
        self.tasks[task.id] = task
        self.uncatalogued[task.id] = task
        if event.idempotency_key:
            self.idempotency[event.idempotency_key] = task.id
        self.dirty_tasks.add(task.id)

    def _cancelled(self, task: TaskRecord, event: events.TaskCancelled, effects: Effects) -> None:
        if task.status in FINAL_STATUSES:
            return
        self._set_status(task, "cancelled")
        task.finished_at = event.occurred_at
        task.next_run_at = None
        task.next_retry_at = None
        task.error = RunError(type="cancelled", message=event.reason)
        effects.wake.add(task.id)
        for run in self.runs.get(task.id, {}).values():
            if run.status in ("queued", "retrying"):
                # A queued run's runner will see the cancelled task and drop it; a retry's timer
                # is dropped by the scheduler. Either way no outcome may follow: final now.
                self._finish_run(
                    task, run, "cancelled", event.occurred_at, RunError(type="cancelled", message=event.reason)
                )
            elif run.status == "running":
                effects.cancels.append(CancelRun(task_id=task.id, run_id=run.run_id, reason=event.reason))

    def _deleted(self, task: TaskRecord, event: events.TaskDeleted, effects: Effects) -> None:
        if event.cancel_running:
            for run in self.runs.get(task.id, {}).values():
                if run.status == "running":
                    effects.cancels.append(CancelRun(task_id=task.id, run_id=run.run_id, reason="task deleted"))
        for run in self.runs.pop(task.id, {}).values():
            self._count_run(run.status, None)
        self.ledgers.pop(task.id, None)
        del self.tasks[task.id]
        if task.idempotency_key and self.idempotency.get(task.idempotency_key) == task.id:
            del self.idempotency[task.idempotency_key]
        self.dirty_tasks.discard(task.id)
        self.dirty_ledgers.discard(task.id)
        self.dirty_runs = {key for key in self.dirty_runs if key[0] != task.id}
        self._deleted_cold(task.id, effects)

    def _deleted_cold(self, task_id: str, effects: Effects) -> None:
        """Forget a task that is no longer in memory: its records go from KV, its row from the catalog."""
        self.cache.pop(task_id)
        self.uncatalogued.pop(task_id, None)
        self.uncatalogued_removals.add(task_id)
        self.tombstones[task_id] = None
        while len(self.tombstones) > TOMBSTONES_KEPT:
            self.tombstones.popitem(last=False)
        self.removed_tasks.add(task_id)
        effects.wake.add(task_id)

    # --- schedule bookkeeping -----------------------------------------------------------------

    def apply_schedule_event(self, event: events.ScheduleEvent) -> Effects:
        """Apply a scheduler bookkeeping event."""
        effects = Effects()
        task = self.tasks.get(event.task_id)
        if task is None:
            effects.unknown_task = not self._known_elsewhere(event.task_id)
            return effects
        if isinstance(event, events.ScheduleUpdated):
            self._schedule_view(task, event.next_run_at, event.fired_count, event.missed_count, event.skipped_count)
            if event.state == "completed" and task.status in ("active", "paused"):
                self._set_status(task, "completed")
                task.finished_at = event.occurred_at
                task.next_run_at = None
                effects.wake.add(task.id)
        elif isinstance(event, events.SlotSkipped):
            self._ledger_add(
                task.id, LedgerEntry(scheduled_for=event.scheduled_for, state="skipped", reason=event.reason)
            )
        elif isinstance(event, events.SlotsMissed):
            self._ledger_add(
                task.id,
                LedgerEntry(
                    scheduled_for=event.first,
                    state="missed",
                    count=event.count,
                    reason=f"{event.count} fire(s) from {event.first.isoformat()} to {event.last.isoformat()} "
                    f"missed while no scheduler ran; policy {event.policy}, {event.caught_up} caught up",
                ),
            )
        self._touch(task, event.occurred_at)
        return effects

    def _schedule_view(self, task: TaskRecord, next_run_at: object, fired: int, missed: int, skipped: int) -> None:
        task.fired_count = max(task.fired_count, fired)
        task.missed_count = max(task.missed_count, missed)
        task.skipped_count = max(task.skipped_count, skipped)
        if task.status == "active":
            task.next_run_at = next_run_at  # type: ignore[assignment]  # next_run_at comes from a datetime field of the event

    def _ledger_add(self, task_id: str, entry: LedgerEntry) -> None:
        ledger = self.ledgers.setdefault(task_id, [])
        if any(e.scheduled_for == entry.scheduled_for and e.state == entry.state for e in ledger):
            return  # a redelivered event
        ledger.append(entry)
        del ledger[: -self.ledger_limit]
        self.dirty_ledgers.add(task_id)

    # --- runs ---------------------------------------------------------------------------------

    def apply_run_event(self, event: runs.RunEvent) -> Effects:
        """Apply a run event; stale and repeated events change nothing."""
        effects = Effects()
        task = self.tasks.get(event.task_id)
        if task is None:
            effects.unknown_task = not self._known_elsewhere(event.task_id)
            if not effects.unknown_task and isinstance(event, (runs.RunQueued, runs.RunStarted)):
                # A finished (or deleted) task's run must not go on: whoever holds it stops.
                effects.cancels.append(
                    CancelRun(task_id=event.task_id, run_id=event.run_id, reason="task no longer active")
                )
            return effects
        if isinstance(event, runs.RunQueued):
            self._queued(task, event, effects)
        elif isinstance(event, runs.RunStarted):
            self._started(task, event, effects)
        elif isinstance(event, runs.RunFinished):
            self._finished(task, event, effects)
        elif isinstance(event, runs.RunCancelRequested):
            self._cancel_run(task, event, effects)
        return effects

    def _known_elsewhere(self, task_id: str) -> bool:
        """A task not in memory that was deleted, or finished and written (its events are stale)."""
        return task_id in self.tombstones or self.is_retained(task_id)

    def _cancel_run(self, task: TaskRecord, event: runs.RunCancelRequested, effects: Effects) -> None:
        run, _ = self._run(task, event.run_id, "unknown", "queued", 1)
        if run.status in FINAL_RUN_STATUSES:
            return
        effects.cancels.append(CancelRun(task_id=task.id, run_id=run.run_id, reason=event.reason))
        if run.status in ("queued", "retrying"):
            self._finish_run(
                task, run, "cancelled", event.occurred_at, RunError(type="cancelled", message=event.reason)
            )
            effects.wake.add(task.id)

    def _run(self, task: TaskRecord, run_id: str, slot: str, status: str, attempt: int) -> tuple[RunRecord, bool]:
        task_runs = self.runs.setdefault(task.id, {})
        run = task_runs.get(run_id)
        if run is not None:
            return run, False
        run = RunRecord(task_id=task.id, run_id=run_id, slot=slot, status=status, attempt=attempt)  # type: ignore[arg-type]  # status is one of RunStatus, by construction
        task_runs[run_id] = run
        task.run_count += 1
        self._count_run(None, status)
        self._evict_old_runs(task.id)
        return run, True

    def _queued(self, task: TaskRecord, event: runs.RunQueued, effects: Effects) -> None:
        if task.waiting_reason != event.waiting_reason and task.status not in FINAL_STATUSES:
            task.waiting_reason = event.waiting_reason  # flow control holds it back, or (None) let it go
            self.dirty_tasks.add(task.id)
        if event.schedule is not None:
            view = event.schedule
            self._schedule_view(task, view.next_run_at, view.fired_count, view.missed_count, view.skipped_count)
        run, created = self._run(task, event.run_id, event.slot, "queued", event.attempt)
        if run.slot == "unknown":
            run.slot = event.slot  # its start was applied first
        run.scheduled_for = run.scheduled_for or event.scheduled_for
        run.queued_at = run.queued_at or event.occurred_at
        self.dirty_runs.add((task.id, run.run_id))
        if not created:
            if not (run.status == "retrying" and event.attempt > run.attempt):
                if run.status == "cancelled" and event.attempt > run.attempt:
                    # a retry queued after the cancel: whoever picks it up must stop
                    effects.cancels.append(CancelRun(task_id=task.id, run_id=run.run_id, reason="run was cancelled"))
                return  # a repeated event, or the run is already further along
            self._set_run_status(run, "queued")
            run.next_retry_at = None
        run.attempt = max(run.attempt, event.attempt)
        run.retry = event.retry
        if task.status == "cancelled":
            # Fired just before a cancel reached the scheduler: never let it run. (A completed
            # schedule's last fires still run: completing means no more fires, not fewer runs.)
            self._finish_run(
                task, run, "cancelled", event.occurred_at, RunError(type="cancelled", message="task no longer active")
            )
            effects.cancels.append(CancelRun(task_id=task.id, run_id=run.run_id, reason="task no longer active"))
            return
        if task.status in ("pending", "retrying"):
            self._set_status(task, "queued")
            task.next_retry_at = None
        task.queued_at = task.queued_at or event.occurred_at
        self._summarise(task)
        self._touch(task, event.occurred_at)

    def _started(self, task: TaskRecord, event: runs.RunStarted, effects: Effects) -> None:
        run, _ = self._run(task, event.run_id, "unknown", "queued", event.attempt)
        if event.attempt < run.attempt:
            self.metrics.stale_outcomes_rejected += 1
            self.metrics.changes += 1
            return
        if run.status in FINAL_RUN_STATUSES:
            if run.status == "cancelled":
                # it started anyway (the runner checked just before the cancel was written): kill it
                effects.cancels.append(CancelRun(task_id=task.id, run_id=run.run_id, reason="run was cancelled"))
            return
        if event.attempt == run.attempt and run.status in ("running", "retrying"):
            return  # a repeated event
        if task.waiting_reason is not None:
            task.waiting_reason = None  # started: admitted, whatever came first
        run.attempt = event.attempt
        run.runner_id = event.runner_id
        run.scheduled_for = run.scheduled_for or event.scheduled_for
        first_start = run.started_at is None
        run.started_at = event.occurred_at
        run.finished_at = None
        self._set_run_status(run, "running")
        if first_start:
            run.lag_ms = ms_between(run.scheduled_for, event.occurred_at)
            self.metrics.run_started(run.lag_ms)
        for earlier in run.attempts:
            if earlier.status == "running":  # superseded: its runner stopped without an outcome
                earlier.status = "lost"
                earlier.finished_at = event.occurred_at
                earlier.error_type = "runner_lost"
        run.attempts.append(
            AttemptRecord(
                attempt=event.attempt, runner_id=event.runner_id, status="running", started_at=event.occurred_at
            )
        )
        self.dirty_runs.add((task.id, run.run_id))
        if task.status == "cancelled":
            effects.cancels.append(CancelRun(task_id=task.id, run_id=run.run_id, reason="task no longer active"))
        elif task.task_type != "scheduled" and task.status not in FINAL_STATUSES:
            self._set_status(task, "running")
            task.started_at = task.started_at or event.occurred_at
        self._summarise(task)
        self._touch(task, event.occurred_at)

    def _finished(self, task: TaskRecord, event: runs.RunFinished, effects: Effects) -> None:
        run, _ = self._run(task, event.run_id, "unknown", "running", event.attempt)
        if event.attempt < run.attempt:
            self.metrics.stale_outcomes_rejected += 1  # superseded attempt: fenced off
            self.metrics.changes += 1
            return
        if run.status in FINAL_RUN_STATUSES or (run.status == "retrying" and event.attempt <= run.attempt):
            return  # this attempt's outcome is already in
        run.attempt = event.attempt
        run.runner_id = event.runner_id
        run.result = event.result
        run.exit_code = event.exit_code
        run.deps_cache_hit = event.deps_cache_hit
        run.timings = event.timings
        run.output_truncated = event.output_truncated
        run.log_bytes = max(run.log_bytes, event.log_bytes)
        run.log_chunks = event.log_chunks
        run.started_at = event.started_at or run.started_at
        run.retry = event.retry
        attempt = next((a for a in run.attempts if a.attempt == event.attempt), None)
        if attempt is None:
            attempt = AttemptRecord(attempt=event.attempt, runner_id=event.runner_id, started_at=event.started_at)
            run.attempts.append(attempt)
        attempt.status = event.status
        attempt.finished_at = event.occurred_at
        attempt.error_type = event.error.type if event.error else None
        attempt.log_bytes = event.log_bytes
        attempt.log_chunks = event.log_chunks
        if event.will_retry:
            run.error = event.error
            run.finished_at = event.occurred_at
            run.duration_ms = ms_between(run.started_at, event.occurred_at)
            run.next_retry_at = event.retry_at
            self._set_run_status(run, "retrying")
            self.dirty_runs.add((task.id, run.run_id))
            if task.task_type != "scheduled" and task.status not in FINAL_STATUSES:
                self._set_status(task, "retrying")
                task.next_retry_at = event.retry_at
                task.error = event.error
            self._summarise(task)
            self._touch(task, event.occurred_at)
            return
        self._finish_run(task, run, event.status, event.occurred_at, event.error)
        effects.wake.add(task.id)

    def _finish_run(self, task: TaskRecord, run: RunRecord, status: str, at: object, error: RunError | None) -> None:
        task.waiting_reason = None
        run.error = error
        run.finished_at = at  # type: ignore[assignment]  # a datetime from the event
        run.next_retry_at = None
        run.duration_ms = ms_between(run.started_at, run.finished_at) if run.started_at else None
        self._set_run_status(run, status)
        self.metrics.run_finished(status, run.finished_at, run.duration_ms)
        for attempt in run.attempts:
            if attempt.status == "running":
                attempt.status = status
                attempt.finished_at = run.finished_at
        self.dirty_runs.add((task.id, run.run_id))
        if task.task_type != "scheduled" and task.status not in FINAL_STATUSES:
            self._set_status(task, status)
            task.result = run.result
            task.error = error
            task.finished_at = run.finished_at
            task.next_run_at = None
            task.next_retry_at = None
            task.duration_ms = ms_between(task.started_at, task.finished_at) if task.started_at else None
        self._summarise(task)
        self._touch(task, run.finished_at)

    # --- helpers ------------------------------------------------------------------------------

    def _summarise(self, task: TaskRecord) -> None:
        task_runs = self.runs.get(task.id)
        if not task_runs:
            return
        run = next(reversed(task_runs.values()))  # runs are kept in the order they appeared
        task.last_run = RunSummary(
            run_id=run.run_id,
            attempt=run.attempt,
            status=run.status,
            scheduled_for=run.scheduled_for,
            started_at=run.started_at,
            finished_at=run.finished_at,
            duration_ms=run.duration_ms,
        )
        if task.task_type == "scheduled" and run.status in FINAL_RUN_STATUSES:
            task.result = run.result
            task.error = run.error

    def _set_status(self, task: TaskRecord, status: str) -> None:
        task.status = status  # type: ignore[assignment]  # statuses come from the transitions, all members of TaskStatus
        self.dirty_tasks.add(task.id)
        self.uncatalogued[task.id] = task

    def _set_run_status(self, run: RunRecord, status: str) -> None:
        self._count_run(run.status, status)
        run.status = status  # type: ignore[assignment]  # statuses come from the transitions, all members of RunStatus

    def _count_run(self, old: str | None, new: str | None) -> None:
        if old is not None:
            self.run_counts[old] = self.run_counts.get(old, 0) - 1
        if new is not None:
            self.run_counts[new] = self.run_counts.get(new, 0) + 1

    def _touch(self, task: TaskRecord, at: object) -> None:
        if at is not None and at > task.updated_at:  # type: ignore[operator]  # a datetime from the event
            task.updated_at = at  # type: ignore[assignment]  # a datetime from the event
        self.dirty_tasks.add(task.id)

    def _evict_old_runs(self, task_id: str) -> None:
        task_runs = self.runs[task_id]
        if len(task_runs) <= self.run_history_limit:
            return
        for run_id in list(task_runs):
            if len(task_runs) <= self.run_history_limit:
                break
            run = task_runs[run_id]
            if run.status in FINAL_RUN_STATUSES:
                del task_runs[run_id]
                self._count_run(run.status, None)
                self.dirty_runs.discard((task_id, run_id))
                self.removed_runs.add((task_id, run_id))

    def runs_by_status(self) -> dict[str, int]:
        """Runs in progress (counted in memory) and finished runs by outcome (aggregates, all time)."""
        found = {status: n for status, n in self.run_counts.items() if status in ACTIVE_RUN_STATUSES and n}
        found.update({status: n for status, n in self.metrics.outcomes.items() if n})
        return dict(sorted(found.items()))

    def active_runs(self, task_id: str) -> list[RunRecord]:
        """Runs of the task that are queued, running or waiting for a retry."""
        return [r for r in self.runs.get(task_id, {}).values() if r.status in ACTIVE_RUN_STATUSES]

    def take_writes(self) -> Writes:
        """Everything changed since the last call, encoded now (a snapshot), and removals."""
        writes = Writes()
        finished = []
        for task_id in self.dirty_tasks:
            task = self.tasks.get(task_id)
            if task is not None:
                encoded = codec.encode(task)
                writes.tasks.append((task_id, encoded))
                if task.status in FINAL_STATUSES and not self.active_runs(task_id):
                    finished.append((task, encoded))
        for task_id, run_id in self.dirty_runs:
            run = self.runs.get(task_id, {}).get(run_id)
            if run is not None:
                writes.runs.append((subjects.run_key(task_id, run_id), codec.encode(run)))
        for task_id in self.dirty_ledgers:
            if task_id in self.ledgers:
                writes.runs.append((ledger_key(task_id), codec.encode(self.ledgers[task_id])))
        writes.removed_tasks = self.removed_tasks
        writes.removed_runs = [subjects.run_key(t, r) for t, r in self.removed_runs]
        self.dirty_tasks, self.dirty_runs, self.dirty_ledgers = set(), set(), set()
        self.removed_tasks, self.removed_runs = set(), set()
        for task, encoded in finished:
            self._evict(task, encoded)
        return writes

    def _evict(self, task: TaskRecord, encoded: bytes) -> None:
        """A final task with nothing left to run leaves memory for the cache (its records are written)."""
        del self.tasks[task.id]
        for run in self.runs.pop(task.id, {}).values():
            self._count_run(run.status, None)
        self.ledgers.pop(task.id, None)
        self.cache.put(task.id, encoded)
        self.evicted += 1

    def requeue(self, writes: Writes) -> None:
        """Mark the records of a failed write dirty again (an evicted task comes back from the cache)."""
        for key, _ in writes.tasks:
            if key not in self.tasks and (cached := self.cache.pop(key)) is not None:
                self.tasks[key] = cached
        self.dirty_tasks.update(key for key, _ in writes.tasks if key in self.tasks)
        for key, _ in writes.runs:
            task_id, _, run_id = key.partition(".")
            if run_id == LEDGER_RUN_ID:
                self.dirty_ledgers.add(task_id)
            else:
                self.dirty_runs.add((task_id, run_id))
        self.removed_tasks |= writes.removed_tasks
        for key in writes.removed_runs:
            task_id, _, run_id = key.partition(".")
            self.removed_runs.add((task_id, run_id))
