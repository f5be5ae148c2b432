"""Reading the store's buckets at start, and writing changed records back in batches."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from proto import codec, streams, subjects
from proto.api import LedgerEntry
from proto.records import RunRecord, TaskRecord
from proto.runs import LogChunk
from services.common.natsio import read_bucket
from services.store.state import StoreState
from services.store.writes import LEDGER_RUN_ID, Writes

log = logging.getLogger(__name__)

_ledger_decoder = msgspec.json.Decoder(list[LedgerEntry])
WRITE_DEADLINE_SECONDS = streams.NATS_CALL_DEADLINE.total_seconds() / 2
"""Longest wait for a batch of KV writes to be acknowledged. nats-py never resolves the future of
a publish answered by a JetStream API error (nats.py #985): without a deadline one such write
would hold every later flush."""


class Persistence:
    """The tasks, runs and logs buckets, as the store's only writer sees them."""

    def __init__(self, js: JetStreamContext, buckets: dict[str, KeyValue]) -> None:
        self.js = js
        self.tasks = buckets[subjects.BUCKET_TASKS]
        self.runs = buckets[subjects.BUCKET_RUNS]
        self.logs = buckets[subjects.BUCKET_LOGS]
        self._lock = asyncio.Lock()
        self.failed_writes = 0
        """Flushes that failed since the last one that succeeded (their records wait to be written again)."""

    async def load(self, state: StoreState) -> None:
        """Fill ``state`` from the buckets."""
        started = time.perf_counter()
        task_decoder, run_decoder = codec.decoder(TaskRecord), codec.decoder(RunRecord)
        async for _, value in read_bucket(self.js, subjects.BUCKET_TASKS):
            try:
                state.load_task(task_decoder.decode(value))
            except msgspec.MsgspecError as exc:
                log.error("unreadable task record skipped: %s", exc)
        runs = 0
        async for key, value in read_bucket(self.js, subjects.BUCKET_RUNS):
            task_id, _, run_id = key.partition(".")
            try:
                if run_id == LEDGER_RUN_ID:
                    state.load_ledger(task_id, _ledger_decoder.decode(value))
                elif task_id in state.tasks:
                    state.load_run(run_decoder.decode(value))
                    runs += 1
            except msgspec.MsgspecError as exc:
                log.error("unreadable run record %s skipped: %s", key, exc)
        state.finish_loading()
        log.info("state loaded", extra={"tasks": len(state.tasks), "runs": runs,
                                        "ms": round((time.perf_counter() - started) * 1000)})

    async def flush(self, state: StoreState) -> int:
        """Write everything changed in ``state``; returns how many records were written.

        Records are encoded when taken (a snapshot), and flushes are serialised, so a newer
        snapshot of a record is never overtaken by an older one.
        """
        async with self._lock:
            writes = state.take_writes()
            if not writes:
                return 0
            try:
                await self._write(writes)
            except BaseException as exc:
                # Nothing was acknowledged; the same changes must be written by the next flush.
                state.requeue(writes)
                self.failed_writes += 1
                log.warning("records not written (%s: %s); written again by the next flush", type(exc).__name__, exc,
                            extra={"records": len(writes.tasks) + len(writes.runs), "failed": self.failed_writes})
                raise
            self.failed_writes = 0
            return len(writes.tasks) + len(writes.runs)

    async def _write(self, writes: Writes) -> None:
        pending = []
        for key, value in writes.tasks:
            pending.append(await self._publish(f"$KV.{subjects.BUCKET_TASKS}.{key}", value))
        for key, value in writes.runs:
            pending.append(await self._publish(f"$KV.{subjects.BUCKET_RUNS}.{key}", value))
        await _acknowledged(pending)
        for task_id in writes.removed_tasks:
            await self.remove_task(task_id)
        for key in writes.removed_runs:
            await self.runs.purge(key)
            task_id, _, run_id = key.partition(".")
            await self._purge_subject(subjects.BUCKET_LOGS, f"{task_id}.{run_id}.>")

    async def remove_task(self, task_id: str) -> None:
        """Remove a task's record, runs, ledger and logs from the buckets."""
        await self.tasks.purge(task_id)
        await self._purge_subject(subjects.BUCKET_RUNS, f"{task_id}.>")
        await self._purge_subject(subjects.BUCKET_LOGS, f"{task_id}.>")

    async def _purge_subject(self, bucket: str, keys: str) -> None:
        await self.js.purge_stream(f"KV_{bucket}", subject=f"$KV.{bucket}.{keys}")

    async def put_log_chunks(self, chunks: list[LogChunk]) -> None:
        """File log chunks under their (task, run, attempt, seq) keys."""
        pending = [
            await self._publish(f"$KV.{subjects.BUCKET_LOGS}.{subjects.log_key(c.task_id, c.run_id, c.attempt, c.seq)}",
                                codec.encode(c))
            for c in chunks
        ]
        await _acknowledged(pending)

    async def _publish(self, subject: str, payload: bytes) -> asyncio.Future:
        return await self.js.publish_async(subject, payload, wait_stall=WRITE_DEADLINE_SECONDS)

    async def read_log_chunks(self, task_id: str, run_id: str, attempt: int) -> list[LogChunk]:
        """Every stored chunk of one run attempt, in order."""
        decoder = codec.log_chunk_decoder
        chunks = [decoder.decode(value)
                  async for _, value in read_bucket(self.js, subjects.BUCKET_LOGS, f"{task_id}.{run_id}.{attempt}.*")]
        chunks.sort(key=lambda c: c.seq)
        return chunks


async def _acknowledged(pending: list[asyncio.Future]) -> None:
    """Wait for every write's acknowledgement, at most ``WRITE_DEADLINE_SECONDS`` (then raise)."""
    if not pending:
        return
    try:
        await asyncio.wait_for(asyncio.gather(*pending), WRITE_DEADLINE_SECONDS)
    finally:
        for future in pending:  # a failed write leaves the others: retrieve them, free their slots
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()
