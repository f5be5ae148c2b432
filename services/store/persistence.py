"""Reading the store's buckets at start, and writing changed records back in batches.

At start only work in progress is read back: the catalog lists which tasks are not final, and
those (with their runs) are fetched by key. The catalog itself is checked against KV first:
KV writes it has not seen (a crash between the two) are read from the bucket's stream after the
sequence the catalog recorded, and a catalog that cannot be reconciled is rebuilt from KV.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import InvalidKeyError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from proto import codec, streams, subjects
from proto.api import LedgerEntry
from proto.records import RunRecord, TaskRecord
from proto.runs import FINAL_RUN_STATUSES, LogChunk, run_id_for
from proto.tasks import FINAL_STATUSES
from services.common.natsio import read_bucket
from services.common.publishing import abandon, acknowledged, publish_async
from services.store.state import METRICS_KEY, StoreState
from services.store.writes import LEDGER_RUN_ID, Writes

log = logging.getLogger(__name__)

T = TypeVar("T")
_ledger_decoder = msgspec.json.Decoder(list[LedgerEntry])
_task_decoder = codec.decoder(TaskRecord)
_run_decoder = codec.decoder(RunRecord)
KV_SEQ_KEY = "kv_tasks_seq"
"""The catalog's meta key of the last tasks-bucket sequence whose write it reflects."""
CATCH_UP_LIMIT = 20_000
"""More unseen tasks-bucket writes than this: rebuild the catalog rather than read them one by one."""
LOAD_CONCURRENCY = 256
REMOVAL_CONCURRENCY = 64
"""Purges in flight at once. One by one, each waits a JetStream round trip: a retention sweep of
1,000 tasks (3 purges each) held the flush lock for seconds and deleted ~50 tasks a second."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Held = Literal["deleted", "absent", "unreadable"]
"""What the tasks bucket holds for a task besides a readable record."""
FLUSH_INTERVAL_SECONDS = 0.02
"""Least time between the starts of two flushes that have something to write. Without it, at a
moderate rate every event was a flush of its own: a KV write, a catalog transaction and a socket
write for its acknowledgement, five times a task. Waiting lets the events of that time share
one; a task's records then usually go out once, in their state at the end of the wait. Nothing
a client waits for waits on a flush (replies, ``?wait`` and verdicts are answered from memory):
the wait delays only acknowledgements, and what a crash makes the store apply again."""
MAX_FLUSH_INTERVAL_SECONDS = 0.1
RECORDS_PER_INTERVAL = 64
"""Past this many records a flush, the next one waits longer, in proportion, up to
MAX_FLUSH_INTERVAL_SECONDS (``next_flush_interval``). Under a burst more of a task's states then
fall into one flush (2,000 API tasks by NATS: 6.1 → 4.3 KV writes a task); a task alone (W2)
never gets there, so its acknowledgements are not held longer (a fixed 100 ms made W2's p99
worse)."""


def next_flush_interval(written: int) -> float:
    """The least time before the next flush, after one that wrote ``written`` records."""
    return min(MAX_FLUSH_INTERVAL_SECONDS, FLUSH_INTERVAL_SECONDS * max(1.0, written / RECORDS_PER_INTERVAL))


WRITE_DEADLINE_SECONDS = streams.NATS_CALL_DEADLINE.total_seconds() / 2
"""Longest wait for a batch of KV writes to be acknowledged. An acknowledgement lost with a
connection never comes: without a deadline one such write would hold every later flush."""


class Persistence:
    """The tasks, runs and logs buckets, as the store's only writer sees them."""

    def __init__(
        self, js: JetStreamContext, buckets: dict[str, KeyValue], fence: Callable[[], None] = lambda: None
    ) -> None:
        self.js = js
        self.fence = fence
        """Raises unless this store may write (it leads); called before every write."""
        self.tasks = buckets[subjects.BUCKET_TASKS]
        self.runs = buckets[subjects.BUCKET_RUNS]
        self.logs = buckets[subjects.BUCKET_LOGS]
        self._lock = asyncio.Lock()
        self._last_flush = 0.0
        self._interval = FLUSH_INTERVAL_SECONDS
        self._next: asyncio.Future[int] | None = None
        """The next flush, while it waits for its turn (callers join it)."""
        self.failed_writes = 0
        """Flushes that failed since the last one that succeeded (their records wait to be written again)."""

    async def load(self, state: StoreState) -> None:
        """Reconcile the catalog with KV, then fill ``state`` with the tasks in progress and their runs."""
        started = time.perf_counter()
        catalog = state.catalog
        saved = catalog.get_meta(METRICS_KEY)
        if saved:
            state.metrics.restore(saved)
        rebuilt = catalog.created or not await self._catch_up_catalog(state)
        if not rebuilt:
            in_kv, expected = await self._task_keys(), len(catalog) + catalog.deleted_count()
            if in_kv != expected:
                log.warning(
                    "the tasks bucket holds %d keys, the catalog accounts for %d: rebuilding it", in_kv, expected
                )
                rebuilt = True
        if rebuilt:
            await self.rebuild_catalog(state)
        active = catalog.active_ids()
        runs = 0
        for start in range(0, len(active), LOAD_CONCURRENCY):
            batch = active[start : start + LOAD_CONCURRENCY]
            for task_id, task in zip(batch, await asyncio.gather(*map(self.get_task, batch)), strict=True):
                if task is None:  # read from a replica that may be behind: the leader decides
                    task = await self._task_at_leader(task_id)
                if task is not None:
                    state.load_task(task)
        for task_id in active:
            for run in await self.get_runs(state, task_id, loading=True):
                state.load_run(run)
                runs += 1
            if state.tasks.get(task_id) is not None and state.tasks[task_id].task_type == "scheduled":
                ledger = await self.get_ledger(task_id)
                if ledger:
                    state.load_ledger(task_id, ledger)
        missing = [t for t in active if t not in state.tasks]
        if missing:  # catalogued but never written to KV (a crash in between): the catalog forgets them
            catalog.commit((), missing)
        state.finish_loading()
        await state.sync_catalog(ahead=False)
        log.info(
            "state loaded",
            extra={
                "tasks": len(state.tasks),
                "runs": runs,
                "catalogued": len(catalog),
                "catalog_rebuilt": rebuilt,
                "ms": round((time.perf_counter() - started) * 1000),
            },
        )

    async def _task_keys(self) -> int:
        """Keys in the tasks bucket, delete markers included (one message per key: history 1)."""
        info = await self.js.stream_info(f"KV_{subjects.BUCKET_TASKS}")
        return info.state.messages

    async def _catch_up_catalog(self, state: StoreState) -> bool:
        """Catalog the tasks-bucket writes made after the catalog's last commit; False: rebuild instead."""
        raw = state.catalog.get_meta(KV_SEQ_KEY)
        seen = int(raw) if raw else 0
        info = await self.js.stream_info(f"KV_{subjects.BUCKET_TASKS}")
        last = info.state.last_seq
        if last - seen > CATCH_UP_LIMIT:
            return False
        found = []
        for seq in range(max(seen + 1, info.state.first_seq), last + 1):
            try:
                message = await self.js.get_msg(f"KV_{subjects.BUCKET_TASKS}", seq)
            except Exception:  # overwritten or removed since: a later sequence holds what matters
                continue
            if message.data:
                found.append(_task_decoder.decode(message.data))
        marks = state.catalog.unconfirmed()
        for task in found:
            # a marked row ran ahead of KV: what the saved metrics counted is the status it had before
            _count_lost_outcome(state, task, marks[task.id] if task.id in marks else state.catalog.status_of(task.id))
        state.catalog.commit(found, (), {KV_SEQ_KEY: str(last).encode(), METRICS_KEY: state.metrics.encode()})
        if marks:
            await self._confirm_from_kv(state, list(marks))
        return True

    async def _confirm_from_kv(self, state: StoreState, task_ids: list[str]) -> None:
        """Make the rows that ran ahead of KV what KV holds (a store stopped before writing them)."""
        records: list[TaskRecord] = []
        deleted: list[str] = []
        absent: list[str] = []
        for start in range(0, len(task_ids), LOAD_CONCURRENCY):
            batch = task_ids[start : start + LOAD_CONCURRENCY]
            for task_id, held in zip(batch, await asyncio.gather(*map(self._held, batch)), strict=True):
                if isinstance(held, TaskRecord):
                    records.append(held)
                elif held != "unreadable":  # that row stays as it is
                    (deleted if held == "deleted" else absent).append(task_id)
        state.catalog.confirm_from_kv(records, deleted, absent)
        log.info(
            "catalog rows ahead of KV made what KV holds",
            extra={"rows": len(task_ids), "records": len(records), "deleted": len(deleted), "absent": len(absent)},
        )

    async def rebuild_catalog(self, state: StoreState) -> None:
        """Make the catalog anew from every record in the tasks bucket (the catalog is derived)."""
        started = time.perf_counter()
        catalog = state.catalog
        catalog.clear()
        last = (await self.js.stream_info(f"KV_{subjects.BUCKET_TASKS}")).state.last_seq
        batch: list[TaskRecord] = []
        total = 0
        async for key, value in read_bucket(self.js, subjects.BUCKET_TASKS):
            task = _decoded(_task_decoder, "task record", key, value)
            if task is not None:
                batch.append(task)
            if len(batch) >= 5000:
                catalog.commit(batch)
                total += len(batch)
                batch = []
        catalog.commit(batch, (), {KV_SEQ_KEY: str(last).encode(), METRICS_KEY: state.metrics.encode()})
        total += len(batch)
        log.info("catalog rebuilt from KV", extra={"tasks": total, "ms": round((time.perf_counter() - started) * 1000)})

    # --- reading what is not in memory --------------------------------------------------------

    async def get_task(self, task_id: str) -> TaskRecord | None:
        """A task's record from the tasks bucket, or None."""
        try:
            held = await self._held(task_id)
        except InvalidKeyError:  # a key NATS cannot take. Any other error is raised: a record that
            return None  # cannot be read now is not absent (a load would forget its task for good)
        return held if isinstance(held, TaskRecord) else None

    async def _task_at_leader(self, task_id: str) -> TaskRecord | None:
        """A task's record as the bucket's leader holds it, or None.

        Reads are direct, so any replica answers, and one that is behind after an election may
        not have a record written just before it: a load would take the task as never written.
        """
        try:
            message = await self.js.get_last_msg(
                f"KV_{subjects.BUCKET_TASKS}", f"$KV.{subjects.BUCKET_TASKS}.{task_id}"
            )
        except NotFoundError:
            return None
        if not message.data:  # a delete or purge marker
            return None
        return _decoded(_task_decoder, "task record", task_id, message.data)

    async def task_deleted(self, task_id: str) -> bool:
        """Whether the tasks bucket holds a delete marker for the task (False: a record, or no key yet)."""
        return await self._held(task_id) == "deleted"

    async def _held(self, task_id: str) -> TaskRecord | Held:
        """What the tasks bucket holds for a task: its record, a delete marker, no key, or a record it cannot read."""
        try:
            entry = await self.tasks.get(task_id)
        except KeyNotFoundError as exc:
            return "deleted" if exc.op is not None else "absent"  # nats-py: a deleted or purged key has its op
        if not entry.value:
            return "deleted"
        task = _decoded(_task_decoder, "task record", task_id, entry.value)
        return "unreadable" if task is None else task

    async def get_runs(self, state: StoreState, task_id: str, *, loading: bool = False) -> list[RunRecord]:
        """A task's runs from the runs bucket, in the order they were queued.

        A one-shot task has one run whose id follows from its task id: one direct read. A schedule's
        runs are read with a filter on its key prefix.
        """
        task = state.tasks.get(task_id) if loading else None
        found: list[RunRecord] = []
        if task is not None and task.task_type != "scheduled":
            key = subjects.run_key(task_id, run_id_for(task_id, "once"))
            try:
                entry = await self.runs.get(key)
            except KeyNotFoundError:  # no run yet (a bucket that does not answer raises: a run
                entry = None  # missed here would be written back without its history)
            run = _decoded(_run_decoder, "run record", key, entry.value) if entry is not None and entry.value else None
            if run is not None:
                found.append(run)
        else:
            async for key, value in read_bucket(self.js, subjects.BUCKET_RUNS, f"{task_id}.*"):
                if key.endswith("." + LEDGER_RUN_ID):
                    continue
                run = _decoded(_run_decoder, "run record", key, value)
                if run is not None:
                    found.append(run)
        found.sort(key=lambda r: (r.queued_at or r.started_at or r.finished_at or _EPOCH, r.run_id))
        return found

    async def get_ledger(self, task_id: str) -> list[LedgerEntry]:
        """A schedule's ledger of skipped and missed slots."""
        key = subjects.run_key(task_id, LEDGER_RUN_ID)
        try:
            entry = await self.runs.get(key)
        except KeyNotFoundError:
            return []
        if not entry.value:
            return []
        return _decoded(_ledger_decoder, "ledger", key, entry.value) or []

    async def flush(self, state: StoreState) -> int:
        """Write everything changed in ``state`` so far; returns how many records that flush wrote.

        Callers share flushes: one that comes while the next flush waits for its turn joins it (that
        flush will take its changes), so every batch applied during the wait completes with it, at
        once. Records are encoded when taken (a snapshot), and flushes are serialised, so a newer
        snapshot of a record is never overtaken by an older one.
        """
        if self._next is not None:
            return await asyncio.shield(self._next)
        done = self._next = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda future: abandon([future]))  # retrieved: every joiner may be gone
        try:
            async with self._lock:
                if state.pending:
                    wait = self._last_flush + self._interval - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                self._last_flush = time.monotonic()
                self._next = None  # changes from here on are the next flush's (taken below, no await between)
                written = await self._flush_now(state)
                self._interval = next_flush_interval(written)
        except BaseException as exc:
            if self._next is done:
                self._next = None
            # A cancelled flush (its caller stops) fails its joiners like any failed flush: their
            # batches stay unacknowledged and come again.
            failure = RuntimeError("flush cancelled") if isinstance(exc, asyncio.CancelledError) else exc
            done.set_exception(failure)
            raise
        done.set_result(written)
        return written

    async def _flush_now(self, state: StoreState) -> int:
        """One flush (the caller holds the lock)."""
        self.fence()
        writes = state.take_writes()
        if not writes:
            state.held_back = writes.held_back
            return 0
        try:
            kv_seq = await self._write(writes)
        except BaseException as exc:
            # Nothing was acknowledged; the same changes must be written by the next flush.
            state.requeue(writes)
            self.failed_writes += 1
            log.warning(
                "records not written (%s: %s); written again by the next flush",
                type(exc).__name__,
                exc,
                extra={"records": len(writes.tasks) + len(writes.runs), "failed": self.failed_writes},
            )
            raise
        self.failed_writes = 0
        # The rows and metrics taken with the records, in one commit: a restart neither loses
        # nor recounts what this batch finished (the metrics are a few KB; the sample is bounded).
        await state.commit_written(writes, {KV_SEQ_KEY: str(kv_seq).encode()} if kv_seq else {})
        state.held_back = writes.held_back
        return len(writes.tasks) + len(writes.runs)

    async def _write(self, writes: Writes) -> int:
        """Write the batch; returns the highest tasks-bucket sequence written (0: none)."""
        pending = await self._publish_all(
            [
                *((f"$KV.{subjects.BUCKET_TASKS}.{key}", value) for key, value in writes.tasks),
                *((f"$KV.{subjects.BUCKET_RUNS}.{key}", value) for key, value in writes.runs),
            ]
        )
        task_writes = len(writes.tasks)
        acks = await acknowledged(pending, WRITE_DEADLINE_SECONDS)
        kv_seq = max((ack.seq for ack in acks[:task_writes]), default=0)
        removals = [*(self.remove_task(t) for t in writes.removed_tasks), *map(self._remove_run, writes.removed_runs)]
        await in_batches(removals, REMOVAL_CONCURRENCY)
        return kv_seq

    async def _remove_run(self, key: str) -> None:
        await self._purge_subject(subjects.BUCKET_RUNS, key)
        task_id, _, run_id = key.partition(".")
        await self._purge_subject(subjects.BUCKET_LOGS, f"{task_id}.{run_id}.>")

    async def remove_task(self, task_id: str) -> None:
        """Remove a task's record, runs, ledger and logs from the buckets.

        The task's key keeps a delete marker (runners tell "deleted" from "not written yet" by it);
        the catalog remembers the deletion until ``purge_markers`` removes the marker.
        """
        self.fence()
        await self.tasks.purge(task_id)
        await self._purge_subject(subjects.BUCKET_RUNS, f"{task_id}.>")
        await self._purge_subject(subjects.BUCKET_LOGS, f"{task_id}.>")

    async def purge_markers(self, catalog_: object, older_than: datetime, limit: int = 1000) -> int:
        """Remove delete markers older than ``older_than`` (each by its own subject: O(deleted))."""
        from services.store.catalog import Catalog

        assert isinstance(catalog_, Catalog)
        ids = catalog_.deleted_before(older_than, limit)
        for task_id in ids:
            await self._purge_subject(subjects.BUCKET_TASKS, task_id)
        catalog_.forget_deleted(ids)
        return len(ids)

    async def _purge_subject(self, bucket: str, keys: str) -> None:
        self.fence()
        await self.js.purge_stream(f"KV_{bucket}", subject=f"$KV.{bucket}.{keys}")

    async def put_log_chunks(self, chunks: list[LogChunk]) -> None:
        """File log chunks under their (task, run, attempt, seq) keys."""
        bucket = subjects.BUCKET_LOGS
        pending = await self._publish_all(
            [
                (f"$KV.{bucket}.{subjects.log_key(c.task_id, c.run_id, c.attempt, c.seq)}", codec.encode(c))
                for c in chunks
            ]
        )
        await acknowledged(pending, WRITE_DEADLINE_SECONDS)

    async def _publish_all(self, messages: list[tuple[str, bytes]]) -> list[asyncio.Future]:
        """Hand every (subject, payload) over without yielding (one socket write); their ack futures.
        When one cannot be handed over, those already are abandoned."""
        pending: list[asyncio.Future] = []
        try:
            for subject, payload in messages:
                self.fence()
                pending.append(await publish_async(self.js, subject, payload, seconds=WRITE_DEADLINE_SECONDS))
        except BaseException:
            abandon(pending)
            raise
        return pending

    async def read_log_chunks(self, task_id: str, run_id: str, attempt: int) -> list[LogChunk]:
        """Every stored chunk of one run attempt, in order."""
        decoder = codec.log_chunk_decoder
        chunks = [
            decoder.decode(value)
            async for _, value in read_bucket(self.js, subjects.BUCKET_LOGS, f"{task_id}.{run_id}.{attempt}.*")
        ]
        chunks.sort(key=lambda c: c.seq)
        return chunks


def _decoded(decoder: msgspec.json.Decoder[T], what: str, key: str, data: bytes) -> T | None:
    """``data`` decoded, or None with an error log: one damaged record is skipped, never raised
    (a raise here would fail every load, and the store could not lead)."""
    try:
        return decoder.decode(data)
    except msgspec.MsgspecError as exc:
        log.error("unreadable %s %s skipped: %s", what, key, exc)
        return None


async def in_batches(calls: list[Coroutine[Any, Any, None]], size: int) -> None:
    """Await ``calls``, ``size`` at a time; every one runs even when one fails, then the first
    failure is raised (the caller writes the batch again: purges and deletes are idempotent)."""
    failure: BaseException | None = None
    for start in range(0, len(calls), size):
        for result in await asyncio.gather(*calls[start : start + size], return_exceptions=True):
            if isinstance(result, BaseException) and failure is None:
                failure = result
    if failure is not None:
        raise failure


def _count_lost_outcome(state: StoreState, task: TaskRecord, before: str | None) -> None:
    """Count a one-shot task's outcome that KV has but the saved aggregates missed.

    The aggregates are saved with the catalog, after the KV writes of the same flush: a store
    killed between the two finds the task final in KV here, while the catalog (and the counts)
    still knew it unfinished. Its outcome event comes back, but finds the task final and stale.
    ``before`` is the task's status in the last row a flush committed (the one the aggregates match).
    """
    run = task.last_run
    if task.task_type == "scheduled" or run is None or run.status not in FINAL_RUN_STATUSES:
        return
    if before is None or before not in FINAL_STATUSES:
        state.metrics.run_finished(run.status, run.finished_at, run.duration_ms)
