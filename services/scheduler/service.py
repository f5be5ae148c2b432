"""The scheduler service: stand by, take the lease when it is free, lead until it is lost."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from contextlib import AsyncExitStack
from functools import partial

from proto import streams, subjects
from proto.control import Heartbeat
from services import VERSION
from services.common import natsio
from services.common.clock import utcnow
from services.common.ids import new_instance_id
from services.common.lease import LeaderLease
from services.common.lifecycle import sleep_or_stop
from services.common.presence import announce_forever, hostname
from services.scheduler.leader import Leader
from services.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)

RENEW_EVERY_SECONDS = streams.LEASE_TTL.total_seconds() / 4


async def main(settings: SchedulerSettings, stop: asyncio.Event) -> None:
    """Run a scheduler replica until ``stop`` is set."""
    instance_id = new_instance_id()
    started_at = utcnow()
    async with AsyncExitStack() as stack:
        nc = await natsio.connect(settings, f"taskmesh-scheduler-{instance_id}", stop, user="scheduler")
        stack.push_async_callback(natsio.close, nc)
        js = nc.jetstream(timeout=10)
        owned = await natsio.while_forming(
            "the scheduler's streams", lambda: natsio.setup_owned(js, "scheduler", settings.js_replicas), stop
        )
        for stream in (subjects.STREAM_TASKS, subjects.STREAM_EVENTS):
            await natsio.wait_for_stream(js, stream, stop)
        tasks_kv = await natsio.wait_for_bucket(js, subjects.BUCKET_TASKS, stop)
        if stop.is_set():
            return
        for name in (subjects.CONSUMER_SCHEDULER_TASKS, subjects.CONSUMER_SCHEDULER_RUNS):
            await natsio.while_forming(name, partial(natsio.ensure_consumer, js, name), stop)
        lease = LeaderLease(owned[subjects.BUCKET_LEASES], subjects.LEASE_SCHEDULER, instance_id)
        leading = asyncio.Event()
        restarts: Counter[str] = Counter()

        def heartbeat() -> Heartbeat:
            return Heartbeat(
                service="scheduler",
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
        log.info("scheduler standing by", extra={"instance": instance_id})
        while not stop.is_set():
            if await lease.try_acquire():
                leading.set()
                changed.set()
                log.info("leading", extra={"instance": instance_id})
                await _lead(Leader(js, owned[subjects.BUCKET_SCHEDULES], tasks_kv, settings, restarts, nc), lease, stop)
                leading.clear()
                changed.set()
                if not stop.is_set():
                    log.warning("lease lost; standing by")
            else:
                await sleep_or_stop(stop, RENEW_EVERY_SECONDS)
        await lease.release()
        await beats


async def _lead(leader: Leader, lease: LeaderLease, stop: asyncio.Event) -> None:
    """Lead until ``stop`` or until the lease cannot be renewed."""
    until = asyncio.Event()

    async def keep_lease() -> None:
        while not stop.is_set():
            if await sleep_or_stop(stop, RENEW_EVERY_SECONDS):
                break
            if not await lease.renew():
                break
        until.set()

    keeper = asyncio.create_task(keep_lease())
    try:
        await leader.run(until)
    except Exception:  # NATS trouble while loading: stand by and try again
        log.exception("leading failed")
        await sleep_or_stop(stop, 1.0)
    finally:
        until.set()
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
