"""The scheduler service: stand by, take the lease when it is free, lead until it is lost."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from contextlib import AsyncExitStack
from functools import partial

from proto import subjects
from proto.control import Heartbeat
from services import VERSION
from services.common import natsio
from services.common.clock import utcnow
from services.common.ids import new_instance_id
from services.common.lease import LeaderLease, stand_by_and_lead
from services.common.presence import announce_forever, hostname
from services.scheduler.leader import Leader
from services.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)


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
        if stop.is_set():
            return
        for name in (subjects.CONSUMER_SCHEDULER_TASKS, subjects.CONSUMER_SCHEDULER_RUNS):
            await natsio.while_forming(name, partial(natsio.ensure_consumer, js, name), stop)
        lease = LeaderLease(owned[subjects.BUCKET_LEASES], subjects.LEASE_SCHEDULER, instance_id, connection=nc)
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

        async def lead(until: asyncio.Event) -> None:  # each leadership starts from what is stored
            await Leader(js, owned[subjects.BUCKET_SCHEDULES], settings, nc, restarts).run(until)

        await stand_by_and_lead(nc, lease, subjects.scheduler_ping, lead, leading, changed, stop)
        await beats
