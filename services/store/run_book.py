"""The runs of the tasks in memory: their records, how many are in each status, a bounded history,
and what each run event does to its run.

Attempts fence each other off: an event of an attempt older than the run's is stale (counted,
never applied), and a repeated event finds the run already there. Only a run that really changed
yields a ``Step`` for its task's state machine (``transitions``); otherwise the methods return None.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

from proto import runs
from proto.control import CancelRun
from proto.records import AttemptRecord, RunRecord, RunSummary, TaskRecord
from proto.runs import FINAL_RUN_STATUSES, OutcomeStatus, RunError, RunStatus
from services.common.clock import ms_between
from services.store.effects import Effects
from services.store.metrics import RunMetrics
from services.store.transitions import OUTCOME_KINDS, Step
from services.store.write_back import PendingWrites

ACTIVE_RUN_STATUSES = frozenset({"queued", "running", "retrying"})
NOT_STARTED = ("queued", "retrying")
"""Runs no runner holds: a cancel ends them at once."""
UNKNOWN_SLOT = "unknown"
"""The slot of a run whose start or outcome was applied before its queued event."""
EARLY_CANCELS_KEPT = 10_000
"""Cancels of runs not seen yet, kept for their run's first event (the oldest are dropped first)."""


class RunBook:
    """Runs per task in memory (in the order they appeared), counted by status."""

    def __init__(self, history_limit: int, metrics: RunMetrics, pending: PendingWrites) -> None:
        self.history_limit = history_limit
        self.metrics = metrics
        self.pending = pending
        self.runs: dict[str, dict[str, RunRecord]] = {}
        self.counts: dict[str, int] = {}
        self.early_cancels: OrderedDict[tuple[str, str], runs.RunCancelRequested] = OrderedDict()
        """Cancels applied before any event of their run, by task and run id."""

    # --- records ------------------------------------------------------------------------------

    def of(self, task_id: str) -> dict[str, RunRecord]:
        """The task's runs in memory, by run id."""
        return self.runs.get(task_id, {})

    def active(self, task_id: str) -> list[RunRecord]:
        """Runs of the task that are queued, running or waiting for a retry."""
        return [r for r in self.of(task_id).values() if r.status in ACTIVE_RUN_STATUSES]

    def by_status(self) -> dict[str, int]:
        """Runs in progress (counted in memory) and finished runs by outcome (aggregates, all time)."""
        found = {status: n for status, n in self.counts.items() if status in ACTIVE_RUN_STATUSES and n}
        found.update({status: n for status, n in self.metrics.outcomes.items() if n})
        return dict(sorted(found.items()))

    def load(self, run: RunRecord) -> None:
        """Take a run record read back from the runs bucket."""
        self.runs.setdefault(run.task_id, {})[run.run_id] = run
        self._count(None, run.status)

    def order_loaded(self) -> None:
        """Order each task's runs by queue time after an unordered load."""
        for task_id, task_runs in self.runs.items():
            ordered = sorted(task_runs.values(), key=lambda r: (r.queued_at or r.started_at or r.finished_at, r.run_id))
            self.runs[task_id] = {r.run_id: r for r in ordered}

    def forget(self, task_id: str) -> None:
        """Drop a task's runs from memory (deleted, or finished and written)."""
        for run in self.runs.pop(task_id, {}).values():
            self._count(run.status, None)

    def summarise(self, task: TaskRecord) -> None:
        """Show the task its latest run (and a schedule the outcome of its latest finished one)."""
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

    # --- run events ---------------------------------------------------------------------------

    def queued(self, task: TaskRecord, event: runs.RunQueued, effects: Effects) -> Step | None:
        """A new run, or a retry queued again; a late retry of a cancelled run is killed."""
        run, created = self._get_or_create(task, event.run_id, event.slot, "queued", event.attempt)
        if run.slot == UNKNOWN_SLOT:
            run.slot = event.slot  # its start was applied first
        run.scheduled_for = run.scheduled_for or event.scheduled_for
        run.queued_at = run.queued_at or event.occurred_at
        self.pending.runs.add((task.id, run.run_id))
        if not created:
            if not (run.status == "retrying" and event.attempt > run.attempt):
                if run.status == "cancelled" and event.attempt > run.attempt:
                    # a retry queued after the cancel: whoever picks it up must stop
                    effects.cancels.append(CancelRun(task_id=task.id, run_id=run.run_id, reason="run was cancelled"))
                return None  # a repeated event, or the run is already further along
            self._set_status(run, "queued")
            run.next_retry_at = None
        run.attempt = max(run.attempt, event.attempt)
        run.retry = event.retry
        return Step("run_queued", event.occurred_at, run)

    def started(self, task: TaskRecord, event: runs.RunStarted, effects: Effects) -> Step | None:
        """An attempt began; the attempt it supersedes (if any) was lost with its runner."""
        run, _ = self._get_or_create(task, event.run_id, UNKNOWN_SLOT, "queued", event.attempt)
        if event.attempt < run.attempt:
            self._reject_stale()
            return None
        if run.status in FINAL_RUN_STATUSES:
            if run.status == "cancelled":
                # it started anyway (the runner checked just before the cancel was written): kill it
                effects.cancels.append(CancelRun(task_id=task.id, run_id=run.run_id, reason="run was cancelled"))
            return None
        if event.attempt == run.attempt and run.status in ("running", "retrying"):
            return None  # a repeated event
        run.attempt = event.attempt
        run.runner_id = event.runner_id
        run.scheduled_for = run.scheduled_for or event.scheduled_for
        run.queued_at = run.queued_at or event.queued_at
        first_start = run.started_at is None
        run.started_at = event.occurred_at
        run.finished_at = None
        self._set_status(run, "running")
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
        self.pending.runs.add((task.id, run.run_id))
        return Step("run_started", event.occurred_at, run)

    def finished(self, task: TaskRecord, event: runs.RunFinished) -> Step | None:
        """An attempt's outcome: the run waits for its retry, or ends."""
        run, _ = self._get_or_create(task, event.run_id, UNKNOWN_SLOT, "running", event.attempt)
        if event.attempt < run.attempt:
            self._reject_stale()  # superseded attempt: fenced off
            return None
        if run.status in FINAL_RUN_STATUSES or (run.status == "retrying" and event.attempt <= run.attempt):
            return None  # this attempt's outcome is already in
        run.attempt = event.attempt
        run.runner_id = event.runner_id
        for name, value in runs.execution_facts(event).items():
            setattr(run, name, value)
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
            self._set_status(run, "retrying")
            self.pending.runs.add((task.id, run.run_id))
            return Step("run_will_retry", event.occurred_at, run)
        return self.end(run, event.status, event.occurred_at, event.error)

    def cancel_requested(self, task: TaskRecord, event: runs.RunCancelRequested, effects: Effects) -> Step | None:
        """Cancel one run: one not started ends now; a running one is asked to stop (its outcome follows);
        one not seen yet waits for its first event (``take_early_cancel``)."""
        run = self.of(task.id).get(event.run_id)
        if run is None:
            # Its RunQueued was published first but can be applied later (redelivered after a
            # failure); it may also never come (a run that left memory). Count nothing until it does.
            self.early_cancels[(task.id, event.run_id)] = event
            while len(self.early_cancels) > EARLY_CANCELS_KEPT:
                self.early_cancels.popitem(last=False)
            effects.cancels.append(CancelRun(task_id=task.id, run_id=event.run_id, reason=event.reason))
            return None
        if run.status in FINAL_RUN_STATUSES:
            return None
        effects.cancels.append(CancelRun(task_id=task.id, run_id=run.run_id, reason=event.reason))
        if run.status in NOT_STARTED:
            return self.end(run, "cancelled", event.occurred_at, RunError(type="cancelled", message=event.reason))
        return None

    def take_early_cancel(self, task_id: str, run_id: str) -> runs.RunCancelRequested | None:
        """The cancel that came before the run, once the run is known (it applies now)."""
        if run_id not in self.of(task_id):
            return None
        return self.early_cancels.pop((task_id, run_id), None)

    def end(self, run: RunRecord, status: OutcomeStatus, at: datetime, error: RunError | None) -> Step:
        """The run reaches its final status (counted once: only a run not final gets here)."""
        run.error = error
        run.finished_at = at
        run.next_retry_at = None
        run.duration_ms = ms_between(run.started_at, run.finished_at) if run.started_at else None
        self._set_status(run, status)
        self.metrics.run_finished(status, run.finished_at, run.duration_ms)
        for attempt in run.attempts:
            if attempt.status == "running":
                attempt.status = status
                attempt.finished_at = run.finished_at
        self.pending.runs.add((run.task_id, run.run_id))
        return Step(OUTCOME_KINDS[status], at, run)

    # --- helpers ------------------------------------------------------------------------------

    def _get_or_create(
        self, task: TaskRecord, run_id: str, slot: str, status: RunStatus, attempt: int
    ) -> tuple[RunRecord, bool]:
        task_runs = self.runs.setdefault(task.id, {})
        run = task_runs.get(run_id)
        if run is not None:
            return run, False
        run = RunRecord(task_id=task.id, run_id=run_id, slot=slot, status=status, attempt=attempt)
        task_runs[run_id] = run
        task.run_count += 1
        self._count(None, status)
        self._drop_old(task.id)
        return run, True

    def _drop_old(self, task_id: str) -> None:
        """Past the history limit, the oldest finished runs go (from memory and from KV)."""
        task_runs = self.runs[task_id]
        if len(task_runs) <= self.history_limit:
            return
        for run_id in list(task_runs):
            if len(task_runs) <= self.history_limit:
                break
            run = task_runs[run_id]
            if run.status in FINAL_RUN_STATUSES:
                del task_runs[run_id]
                self._count(run.status, None)
                self.pending.runs.discard((task_id, run_id))
                self.pending.removed_runs.add((task_id, run_id))

    def _reject_stale(self) -> None:
        self.metrics.stale_outcomes_rejected += 1
        self.metrics.changes += 1

    def _set_status(self, run: RunRecord, status: RunStatus) -> None:
        self._count(run.status, status)
        run.status = status

    def _count(self, old: str | None, new: str | None) -> None:
        if old is not None:
            self.counts[old] = self.counts.get(old, 0) - 1
        if new is not None:
            self.counts[new] = self.counts.get(new, 0) + 1
