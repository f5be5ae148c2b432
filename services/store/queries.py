"""Reads: tasks, runs, logs, schedules, ledgers, statistics and waiting for an outcome."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from nats.js import JetStreamContext

from proto import api, codec, subjects
from proto.records import RunRecord, TaskRecord
from proto.runs import FINAL_RUN_STATUSES, DeadLetter, LogChunk
from proto.streams import REPLY_PAGE_BYTES
from proto.tasks import FINAL_STATUSES
from services.common.clock import utcnow
from services.common.presence import ServiceRegistry
from services.store.catalog import ListFilter
from services.store.errors import TaskNotFound
from services.store.persistence import Persistence
from services.store.state import StoreState
from services.store.writes import LEDGER_RUN_ID

log = logging.getLogger(__name__)
LOG_SETTLE_SECONDS = 3.0


class Queries:
    """Answers built from the materialised state (and the logs bucket for output)."""

    def __init__(
        self, js: JetStreamContext, state: StoreState, persistence: Persistence, registry: ServiceRegistry
    ) -> None:
        self.js = js
        self.state = state
        self.persistence = persistence
        self.registry = registry
        self._waiters: dict[str, list[asyncio.Future[None]]] = defaultdict(list)

    async def task(self, task_id: str) -> TaskRecord:
        """The task from memory, else from the tasks bucket (a finished one), else TaskNotFound."""
        task = self.state.get(task_id)
        if task is None and self.state.is_retained(task_id):
            task = await self.persistence.get_task(task_id)
            if task is not None and task_id not in self.state.tasks:
                self.state.cache.put(task_id, codec.encode(task))
        if task is None:
            raise TaskNotFound(f"no task {task_id!r}", "id")
        return task

    async def _tasks(self, task_ids: list[str]) -> list[TaskRecord]:
        """Records of these tasks in order (read concurrently from KV where not in memory)."""
        found = await asyncio.gather(*(self._maybe_task(t) for t in task_ids))
        return [task for task in found if task is not None]

    async def _maybe_task(self, task_id: str) -> TaskRecord | None:
        try:
            return await self.task(task_id)
        except TaskNotFound:  # deleted between the catalog's answer and the read
            return None

    async def list_tasks(self, request: api.ListTasksRequest) -> api.TaskPage:
        """Newest first, from the catalog; the cursor is the id of the last task of the previous page."""
        await self.state.sync_catalog()  # what was just accepted is listed too
        where = ListFilter(
            status=request.status,
            kind=request.kind,
            task_type=request.task_type,
            name_prefix=request.name,
            created_after=request.created_after,
            created_before=request.created_before,
        )
        ids, cursor = self.state.catalog.page(where, request.cursor, request.limit)
        page: list[TaskRecord] = []
        size = 0
        for task in await self._tasks(ids):
            size += len(codec.encode(task))
            if page and size > REPLY_PAGE_BYTES:
                cursor = page[-1].id  # the rest comes with the next page
                break
            page.append(task)
        return api.TaskPage(tasks=page, next_cursor=cursor)

    async def _runs(self, task: TaskRecord) -> list[RunRecord]:
        """The task's runs in the order they appeared (from memory while it is in progress)."""
        if task.id in self.state.tasks:
            return list(self.state.runs.get(task.id, {}).values())
        return await self.persistence.get_runs(self.state, task.id)

    async def list_runs(self, request: api.ListRunsRequest) -> api.RunPage:
        """Runs of one task, newest first; the cursor is the last run id of the previous page."""
        runs = list(reversed(await self._runs(await self.task(request.id))))
        start = 0
        if request.cursor:
            positions = [i for i, r in enumerate(runs) if r.run_id == request.cursor]
            start = positions[0] + 1 if positions else len(runs)
        page = runs[start : start + request.limit]
        more = start + request.limit < len(runs)
        return api.RunPage(runs=page, next_cursor=page[-1].run_id if more and page else None)

    async def run(self, request: api.RunRef) -> RunRecord:
        task = await self.task(request.id)
        run = next((r for r in await self._runs(task) if r.run_id == request.run_id), None)
        if run is None:
            raise TaskNotFound(f"task {request.id} has no run {request.run_id!r}", "run_id")
        return run

    async def run_verdict(self, request: api.RunRef) -> api.RunVerdict:
        """Whether a run about to start is still wanted; asked by the runner holding its delivery.

        Answered from memory for a task in progress (every run about to start belongs to one,
        bar a trigger of a finished task), with this store's latest word: what a KV read would
        show only after the next flush."""
        if request.id in self.state.uncatalogued_removals:
            return api.RunVerdict(verdict="deleted")
        if not self.state.is_retained(request.id):
            # Deleted, or submitted and not yet applied here (the scheduler may be ahead of this
            # store on TASKS): only a delete marker in KV says which.
            deleted = await self.persistence.task_deleted(request.id)
            return api.RunVerdict(verdict="deleted" if deleted else "run")
        task = await self.task(request.id)
        if task.status == "cancelled":
            return api.RunVerdict(verdict="cancelled")
        if request.id in self.state.tasks:
            run = self.state.runs.get(request.id, {}).get(request.run_id)
        else:
            run = next((r for r in await self._runs(task) if r.run_id == request.run_id), None)
        cancelled_early = (request.id, request.run_id) in self.state.run_book.early_cancels
        if cancelled_early or (run is not None and run.status == "cancelled"):
            return api.RunVerdict(verdict="cancelled")
        return api.RunVerdict(verdict="run")

    async def run_verdicts(self, request: api.RunVerdictsRequest) -> api.RunVerdicts:
        """``run_verdict`` for each run of a runner's pulled batch, in order."""
        return api.RunVerdicts(verdicts=[await self.run_verdict(run) for run in request.runs])

    async def logs(self, request: api.GetLogsRequest) -> api.LogsReply:
        """Stored output of one run attempt (default: the latest run, its latest attempt)."""
        task = await self.task(request.id)
        run_id = request.run_id or (task.last_run.run_id if task.last_run else None)
        if run_id is None:
            return api.LogsReply(
                task_id=task.id, run_id=None, attempt=None, chunks=[], finished=task.status in FINAL_STATUSES
            )
        ref = api.RunRef(id=task.id, run_id=run_id)
        run = await self.run(ref)
        attempt = request.attempt or run.attempt
        chunks = await self.persistence.read_log_chunks(task.id, run_id, attempt)
        if run.status not in FINAL_RUN_STATUSES:
            # As it is after the read: an outcome applied meanwhile has filed the chunks it carries,
            # and judged by the run as it was, the whole log would come as unfinished.
            run = await self.run(ref)
        ended = (
            run.status in FINAL_RUN_STATUSES
            or attempt < run.attempt
            or (run.status == "retrying" and attempt <= run.attempt)
        )
        expected = next((a.log_chunks for a in run.attempts if a.attempt == attempt), run.log_chunks)
        # Chunks travel on their own stream and may reach us just after the outcome: once a run has
        # ended, wait briefly for them, so "finished" reliably means "the whole log".
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOG_SETTLE_SECONDS
        while ended and len(chunks) < expected and loop.time() < deadline:
            await asyncio.sleep(0.05)
            chunks = await self.persistence.read_log_chunks(task.id, run_id, attempt)
        all_stored = len(chunks) >= expected
        chunks = [c for c in chunks if c.seq > request.after]
        page: list[LogChunk] = []
        size = 0
        for chunk in chunks:
            size += len(chunk.data) + 200
            if page and size > REPLY_PAGE_BYTES:
                break
            page.append(chunk)
        more, chunks = len(page) < len(chunks), page
        finished = ended and all_stored
        return api.LogsReply(
            task_id=task.id,
            run_id=run_id,
            attempt=attempt,
            chunks=chunks,
            finished=finished,
            truncated=run.output_truncated,
            more=more,
        )

    async def schedules(self) -> api.ScheduleList:
        """Every retained schedule, newest first."""
        await self.state.sync_catalog()
        found = []
        for task in await self._tasks(self.state.catalog.schedule_ids()):
            found.append(
                api.ScheduleSummary(
                    id=task.id,
                    name=task.name,
                    kind=task.kind,
                    status=task.status,
                    cron_expression=task.spec.cron_expression or "",
                    timezone=task.spec.timezone,
                    next_run_at=task.next_run_at,
                    last_run=task.last_run,
                    fired_count=task.fired_count,
                    missed_count=task.missed_count,
                    skipped_count=task.skipped_count,
                    created_at=task.created_at,
                )
            )
        return api.ScheduleList(schedules=found)

    async def ledger(self, request: api.LedgerRequest) -> api.Ledger:
        """Each fire slot with what became of it: a run (and its state, lag), skipped or missed."""
        task = await self.task(request.id)
        entries = [
            api.LedgerEntry(
                scheduled_for=r.scheduled_for,
                state=r.status,
                run_id=r.run_id,
                lag_ms=r.lag_ms,
                reason="manual trigger" if r.slot.startswith("trigger:") else None,
            )
            for r in await self._runs(task)
            if r.run_id != LEDGER_RUN_ID and r.scheduled_for is not None
        ]
        in_memory = self.state.ledgers.get(task.id)
        if in_memory is None and task.id not in self.state.tasks:
            in_memory = await self.persistence.get_ledger(task.id)
        entries.extend(in_memory or [])
        entries.sort(key=lambda e: e.scheduled_for, reverse=True)
        return api.Ledger(
            id=task.id,
            entries=entries[: request.limit],
            fired_count=task.fired_count,
            missed_count=task.missed_count,
            skipped_count=task.skipped_count,
        )

    async def stats(self) -> api.Stats:
        metrics = self.state.metrics
        queue = api.QueueDepth()
        for consumer, pending_field, flight_field in (
            (subjects.CONSUMER_RUNNER_CODE, "code_pending", "code_in_flight"),
            (subjects.CONSUMER_RUNNER_API, "api_pending", "api_in_flight"),
        ):
            try:
                info = await self.js.consumer_info(subjects.STREAM_WORK, consumer, timeout=1)
                setattr(queue, pending_field, info.num_pending or 0)
                setattr(queue, flight_field, info.num_ack_pending or 0)
            except Exception as exc:  # no runner yet, or JetStream busy: depth unknown
                log.debug("queue depth of %s unknown: %s", consumer, exc)
        await self.state.sync_catalog()
        catalog = self.state.catalog
        runs_by_status = self.state.runs_by_status()
        by_trigger = catalog.counts("trigger")
        return api.Stats(
            tasks_total=sum(by_trigger.values()),
            tasks_by_status=catalog.counts("status"),
            tasks_by_kind=catalog.counts("kind"),
            tasks_by_trigger=by_trigger,
            runs_total=sum(runs_by_status.values()),
            runs_by_status=runs_by_status,
            runs_per_minute=metrics.per_minute(utcnow()),
            success_rate=metrics.success_rate(),
            duration_ms=metrics.percentiles(),
            duration_histogram=metrics.durations.snapshot(),
            schedule_lag_histogram=metrics.lag.snapshot(),
            queue=queue,
            runners=self.registry.alive("runner"),
            services=self.registry.alive(),
            stale_outcomes_rejected=metrics.stale_outcomes_rejected,
            dead_letters=await self._dead_letter_count(),
        )

    async def _dead_letter_count(self) -> int:
        try:
            info = await self.js.stream_info(subjects.STREAM_DEAD_LETTERS)
            return info.state.messages
        except Exception:  # unknown rather than wrong
            return 0

    async def dead_letters(self, limit: int = 100) -> api.DeadLetterList:
        """The newest dead letters, read straight from their stream."""
        info = await self.js.stream_info(subjects.STREAM_DEAD_LETTERS)
        found: list[DeadLetter] = []
        seq = info.state.last_seq
        while seq >= max(info.state.first_seq, 1) and len(found) < limit:
            try:
                message = await self.js.get_msg(subjects.STREAM_DEAD_LETTERS, seq)
                found.append(codec.decode(DeadLetter, message.data))
            except Exception as exc:  # deleted or foreign message
                log.debug("dead letter %d skipped: %s", seq, exc)
            seq -= 1
        return api.DeadLetterList(dead_letters=found)

    # --- waiting ------------------------------------------------------------------------------

    async def wait(self, request: api.WaitTaskRequest) -> api.WaitReply:
        """Return when the task is final (a schedule: when one of its runs ends) or on timeout."""
        task = await self.task(request.id)
        if task.status in FINAL_STATUSES:
            return api.WaitReply(done=True, task=task)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout_seconds
        future: asyncio.Future[None] = loop.create_future()
        self._waiters[task.id].append(future)
        is_schedule = task.task_type == "scheduled"
        try:
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    return api.WaitReply(done=False, task=await self.task(request.id))
                current = await self.task(request.id)  # raises TaskNotFound once deleted
                if current.status in FINAL_STATUSES or is_schedule:
                    return api.WaitReply(done=True, task=current)
                future = loop.create_future()
                self._waiters[task.id].append(future)
        finally:
            waiting = self._waiters.get(task.id)
            if waiting is not None:
                if future in waiting:
                    waiting.remove(future)
                if not waiting:
                    del self._waiters[task.id]

    def wake(self, task_ids: set[str]) -> None:
        """Let waiters of these tasks look again."""
        for task_id in task_ids:
            for future in self._waiters.pop(task_id, []):
                if not future.done():
                    future.set_result(None)
