"""The store service: load state, catch up, then answer requests and materialise events."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import Counter
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from functools import partial

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from proto import codec, subjects
from proto.api import DeleteTaskRequest
from proto.control import Heartbeat
from services import VERSION
from services.common import natsio
from services.common.clock import utcnow
from services.common.ids import new_instance_id
from services.common.lease import LeaderLease, stand_by_and_lead
from services.common.lifecycle import sleep_or_stop, stop_within
from services.common.presence import ServiceRegistry, announce_forever, hostname
from services.store.catalog import CHECKPOINT_SECONDS, Catalog
from services.store.commands import Commands
from services.store.consumers import EventConsumers
from services.store.errors import TaskNotFound
from services.store.handlers import ApiHandlers
from services.store.persistence import Persistence
from services.store.queries import Queries
from services.store.secrets import Secrets
from services.store.settings import StoreSettings
from services.store.state import Effects, StoreState
from services.store.storage import watch_storage

log = logging.getLogger(__name__)
TOMBSTONE_MARKER_AGE = timedelta(hours=6)
"""How long a deleted task's marker stays in the tasks bucket (runners tell "deleted" by it)."""
RETENTION_CONCURRENCY = 64
"""Deletions in flight at once: each waits for its event's acknowledgement, so one by one a sweep
deleted ~50 tasks a second, fewer than a busy install finishes."""
LOST_LEASE_STOP_SECONDS = 5.0
"""After losing the lease, the longest wait for the loops to stop before they are cancelled: a
loop stuck in a NATS call during an election kept a store from standing by (and from leading
again) for longer than a client waits."""


STORE_CONSUMERS = (subjects.CONSUMER_STORE_TASKS, subjects.CONSUMER_STORE_EVENTS, subjects.CONSUMER_STORE_LOGS)


async def main(settings: StoreSettings, stop: asyncio.Event) -> None:
    """Run a store replica until ``stop`` is set: stand by, lead while it holds the lease."""
    instance_id = new_instance_id()
    started_at = utcnow()
    async with AsyncExitStack() as stack:
        nc = await natsio.connect(settings, f"taskmesh-store-{instance_id}", stop, user="store")
        stack.push_async_callback(natsio.close, nc)
        js = nc.jetstream(timeout=10)
        buckets = await natsio.while_forming(
            "the store's streams", lambda: natsio.setup_owned(js, "store", settings.js_replicas), stop
        )
        for name in STORE_CONSUMERS:
            await natsio.while_forming(name, partial(natsio.ensure_consumer, js, name), stop)
        lease = LeaderLease(buckets[subjects.BUCKET_STORE_LEASE], subjects.LEASE_STORE, instance_id, connection=nc)
        registry = ServiceRegistry()
        await registry.follow(nc)
        leading = asyncio.Event()
        restarts: Counter[str] = Counter()

        def heartbeat() -> Heartbeat:
            return Heartbeat(
                service="store",
                instance_id=instance_id,
                host=hostname(),
                version=VERSION,
                started_at=started_at,
                sent_at=utcnow(),
                leader=leading.is_set(),
                consumer_restarts=dict(restarts),
            )

        changed = asyncio.Event()
        beats = asyncio.create_task(announce_forever(nc, heartbeat, settings.heartbeat_interval, stop, changed))
        log.info("store standing by", extra={"instance": instance_id})
        lead = partial(_lead, settings, nc, js, buckets, lease, registry, restarts, stop)
        await stand_by_and_lead(nc, lease, subjects.store_ping, lead, leading, changed, stop)
        await beats


async def _lead(
    settings: StoreSettings,
    nc: Client,
    js: JetStreamContext,
    buckets: dict[str, KeyValue],
    lease: LeaderLease,
    registry: ServiceRegistry,
    restarts: Counter[str],
    stop: asyncio.Event,
    until: asyncio.Event,
) -> None:
    """Load the state, then answer requests and materialise events until ``until``: the lease is
    lost or ``stop`` is set.

    Every write is fenced by the lease (``lease.check``): a leader that was paused past its lease
    writes nothing more, and the next leader replays what it had not written.
    """
    async with AsyncExitStack() as stack:
        catalog = Catalog.open_or_reset(settings.catalog_path(), settings.catalog_cache_mb)
        stack.callback(catalog.close)
        state = StoreState(
            run_history_limit=settings.run_history_limit,
            catalog=catalog,
            cache_bytes=settings.cache_mb * 1024 * 1024,
            hold_seconds=max(0.0, settings.unfinished_write_delay.total_seconds()),
        )
        persistence = Persistence(js, buckets, fence=lease.check)
        try:
            await persistence.load(state)
        except sqlite3.DatabaseError as exc:  # a damaged page met while loading: lead again with it made anew
            catalog.mark_damaged(str(exc))
            raise
        await natsio.redeliver_unacknowledged(  # what a dead leader held, now
            nc, subjects.CONSUMER_STORE_TASKS, subjects.CONSUMER_STORE_EVENTS, subjects.CONSUMER_STORE_LOGS
        )
        queries = Queries(js, state, persistence, registry)
        background: set[asyncio.Task[None]] = set()

        def after_apply(effects: Effects) -> None:
            if effects.wake:
                queries.wake(effects.wake)
            for cancel in effects.cancels:
                task = asyncio.create_task(_broadcast(nc, codec.encode(cancel)))
                background.add(task)
                task.add_done_callback(background.discard)

        secret_store = Secrets(js, buckets[subjects.BUCKET_SECRETS], fence=lease.check)
        commands = Commands(
            js, state, settings.limits(), after_apply, queries.task, secret_store.check_references, fence=lease.check
        )
        consumers = EventConsumers(nc, js, state, persistence, after_apply, settings.log_cap_bytes, restarts)
        caught_up = await consumers.catch_up_tasks()
        handlers = ApiHandlers(
            nc, commands, queries, settings.max_concurrent_requests, settings.store_max_waiters, secret_store
        )
        await handlers.start()
        log.info(
            "store ready",
            extra={"tasks_in_progress": len(state.tasks), "tasks": len(catalog), "replayed_task_events": caught_up},
        )
        loops = [
            asyncio.create_task(consumers.run(until), name="consumers"),
            asyncio.create_task(_sweep_forever(commands, state, persistence, settings, until), name="retention"),
            asyncio.create_task(watch_storage(js, commands, settings.storage_limit_bytes, until), name="storage"),
        ]
        checking = asyncio.create_task(_check_catalog(catalog, until), name="catalog-check")
        loops.append(checking)
        loops.append(asyncio.create_task(_checkpoint_forever(catalog, until), name="catalog-checkpoint"))
        for loop_task in loops:
            loop_task.add_done_callback(_report_crash)
        await until.wait()
        checking.cancel()  # its thread ends on its own; nothing waits for it
        if not stop.is_set():  # lost: writes are fenced off, so cancelling loses nothing; stand by, lead again
            log.warning("lease lost: no more answers or writes; the next leader replays what is unwritten")
            stopping = asyncio.create_task(handlers.stop(0.0), name="requests")
            await stop_within([stopping], LOST_LEASE_STOP_SECONDS, "the lease was lost")
            await stop_within(loops, LOST_LEASE_STOP_SECONDS, "the lease was lost")
        else:
            log.info("stopping: finishing requests in progress")
            await handlers.stop(settings.shutdown_grace.total_seconds())
            await asyncio.gather(*loops, return_exceptions=True)
            try:
                await persistence.flush(state)
            except Exception as exc:  # replayed from the streams at the next start
                log.warning("final flush failed (%s); changes will be replayed at next start", exc)
        log.info(
            "store stopped leading",
            extra={
                "tasks_in_progress": len(state.tasks),
                "tasks": len(catalog),
                "unknown_task_events": consumers.unknown_task_events,
            },
        )


async def _check_catalog(catalog: Catalog, until: asyncio.Event) -> None:
    """Read the whole catalog once, after the store serves (at start it would cost O(history));
    a damaged one is marked, and leading starts over with the catalog made anew from KV."""
    problem = await asyncio.to_thread(catalog.check)
    if problem is None or until.is_set():
        return
    log.error("catalog damaged (%s): leading again with a catalog rebuilt from KV", problem)
    catalog.mark_damaged(problem)
    until.set()


async def _checkpoint_forever(catalog: Catalog, stop: asyncio.Event) -> None:
    """Copy the catalog's WAL into its file every CHECKPOINT_SECONDS, in a worker thread: SQLite
    does it inside a commit otherwise, and the flush waiting for that commit waits for it too."""
    while not await sleep_or_stop(stop, CHECKPOINT_SECONDS):
        try:
            await asyncio.to_thread(catalog.checkpoint)
        except sqlite3.Error as exc:  # the next one tries again; the WAL only grows meanwhile
            log.warning("catalog checkpoint failed: %s", exc)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped by an error", task.get_name(), exc_info=task.exception())


async def _broadcast(nc: Client, payload: bytes) -> None:
    try:
        await nc.publish(subjects.CANCEL_RUNS, payload)
    except Exception as exc:  # NATS away: the runner will see the cancelled task on its next check
        log.warning("cancel broadcast failed: %s", exc)


async def _sweep_forever(
    commands: Commands, state: StoreState, persistence: Persistence, settings: StoreSettings, stop: asyncio.Event
) -> None:
    """Delete finished one-shot tasks older than the retention period; drop old delete markers.

    Both come from the catalog's time indexes, oldest first, in batches: a sweep costs what it
    deletes, not what is retained, and goes on batch after batch until nothing expired is left
    (a sweep a minute must keep up with a thousand tasks finishing every second).
    """
    batch = max(1, settings.retention_batch)
    while not await sleep_or_stop(stop, settings.retention_sweep_interval.total_seconds()):
        try:
            purged = await persistence.purge_markers(state.catalog, utcnow() - TOMBSTONE_MARKER_AGE)
            if purged:
                log.info("delete markers purged", extra={"count": purged})
        except Exception as exc:
            log.debug("purge of delete markers failed: %s", exc)
        removed = 0
        started = time.monotonic()
        while not stop.is_set():
            cutoff: datetime = utcnow() - settings.task_retention
            expired = state.catalog.finished_before(cutoff, batch)
            deleted, all_went = await _delete_batch(commands, expired)
            removed += deleted
            if len(expired) < batch or not all_went or not deleted:
                break  # all caught up, or NATS trouble: the next sweep goes on
            try:  # purge them now: the catalog forgets them only once KV has, and the next batch reads it
                await persistence.flush(state)
            except Exception as exc:
                log.debug("flush after a retention batch failed: %s", exc)
                break
        if removed:
            log.info(
                "retention removed finished tasks",
                extra={"count": removed, "ms": round((time.monotonic() - started) * 1000)},
            )


async def _delete_batch(commands: Commands, task_ids: list[str]) -> tuple[int, bool]:
    """Delete these tasks, RETENTION_CONCURRENCY at a time; after a failure, no further group is
    started (the next sweep goes on). Returns (how many this call deleted, whether all went)."""

    async def delete(task_id: str) -> str:
        try:
            await commands.delete(DeleteTaskRequest(id=task_id, cancel_running=False))
        except TaskNotFound:  # deleted already; the catalog forgets it with the next flush
            return "gone"
        except Exception as exc:  # try again next sweep
            log.warning("retention delete of %s failed: %s", task_id, exc)
            return "failed"
        return "deleted"

    deleted = 0
    for start in range(0, len(task_ids), RETENTION_CONCURRENCY):
        results = await asyncio.gather(*map(delete, task_ids[start : start + RETENTION_CONCURRENCY]))
        deleted += results.count("deleted")
        if "failed" in results:
            return deleted, False
    return deleted, True
