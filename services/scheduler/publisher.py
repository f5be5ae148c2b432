"""Everything the scheduler writes: due runs, run and schedule events, and its timers.

Every message carries a de-duplication id derived from what it is (task, slot, attempt), so a
fire published twice — by a leader that crashed before recording it, or by two leaders during a
failover — lands once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from proto import codec, events, runs, subjects
from proto.flow import WaitingRun
from proto.runs import RunDue, RunError, RunFinished, RunQueued, ScheduleView
from proto.schedules import AnyTimer, CronTimer
from proto.tasks import TaskSpec
from services.common.clock import utcnow
from services.common.ids import new_event_id
from services.common.publishing import abandon, acknowledged, publish_async

PUBLISH_TIMEOUT_SECONDS = 10.0
log = logging.getLogger(__name__)


class Publisher:
    """Publishes with JetStream acknowledgement; every method returns once the writes are durable."""

    def __init__(self, js: JetStreamContext, timers: KeyValue) -> None:
        self.js = js
        self.timers = timers
        self.fired = 0

    async def _publish(self, subject: str, payload: bytes, msg_id: str) -> asyncio.Future:
        return await publish_async(
            self.js, subject, payload, headers={subjects.HEADER_MSG_ID: msg_id}, seconds=PUBLISH_TIMEOUT_SECONDS
        )

    async def _settle(self, *futures: asyncio.Future) -> None:
        await acknowledged(list(futures), PUBLISH_TIMEOUT_SECONDS)

    async def fire(
        self,
        task_id: str,
        spec: TaskSpec,
        *,
        slot: str,
        scheduled_for: datetime,
        run_id: str | None = None,
        attempt: int = 1,
        retry: int = 0,
        schedule: ScheduleView | None = None,
    ) -> str:
        """Make one run due now; returns its run id. An expired start deadline ends it as expired."""
        run_id = run_id or runs.run_id_for(task_id, slot)
        now = utcnow()
        deadline = None
        if spec.start_deadline_seconds is not None:
            deadline = scheduled_for + timedelta(seconds=spec.start_deadline_seconds)
        identity = f"{task_id}:{slot}:{attempt}"
        queued = RunQueued(
            event_id=f"q:{identity}",
            occurred_at=now,
            task_id=task_id,
            run_id=run_id,
            slot=slot,
            scheduled_for=scheduled_for,
            attempt=attempt,
            retry=retry,
            deadline_at=deadline,
            schedule=schedule,
        )
        first = await self._publish(
            subjects.run_event(task_id, run_id, "queued"), codec.encode(queued), queued.event_id
        )
        try:
            second = await self._publish_fired(spec, identity, queued, now, deadline)
        except BaseException:
            abandon([first])
            raise
        await self._settle(first, second)
        self.fired += 1
        return run_id

    async def _publish_fired(
        self, spec: TaskSpec, identity: str, queued: RunQueued, now: datetime, deadline: datetime | None
    ) -> asyncio.Future:
        """The run on WORK, or its end as expired when its start deadline has passed."""
        task_id, run_id, slot, scheduled_for = queued.task_id, queued.run_id, queued.slot, queued.scheduled_for
        if deadline is not None and now > deadline:
            expired = RunFinished(
                event_id=f"x:{identity}",
                occurred_at=now,
                task_id=task_id,
                run_id=run_id,
                attempt=queued.attempt,
                runner_id="scheduler",
                status="expired",
                slot=slot,
                scheduled_for=scheduled_for,
                error=RunError(
                    type="expired",
                    message=(
                        f"not started within start_deadline_seconds={spec.start_deadline_seconds:g} "
                        f"of {scheduled_for.isoformat()}"
                    ),
                ),
            )
            return await self._publish(
                subjects.run_event(task_id, run_id, "finished"), codec.encode(expired), expired.event_id
            )
        due = RunDue(
            task_id=task_id,
            run_id=run_id,
            slot=slot,
            spec=spec,
            scheduled_for=scheduled_for,
            queued_at=now,
            attempt=queued.attempt,
            retry=queued.retry,
            deadline_at=deadline,
        )
        work = subjects.WORK_CODE if spec.sandboxed else subjects.WORK_API
        return await self._publish(work, codec.encode(due), identity)

    async def waiting(self, run: WaitingRun, reason: str) -> None:
        """Tell the store a run is queued but held back by flow control, and why."""
        queued = RunQueued(
            event_id=f"w:{run.task_id}:{run.slot}:{run.attempt}",
            occurred_at=utcnow(),
            task_id=run.task_id,
            run_id=run.run_id,
            slot=run.slot,
            scheduled_for=run.scheduled_for,
            attempt=run.attempt,
            retry=run.retry,
            schedule=run.schedule,
            waiting_reason=reason,
        )
        subject = subjects.run_event(run.task_id, run.run_id, "queued")
        await self._settle(await self._publish(subject, codec.encode(queued), queued.event_id))

    async def event(self, event: events.ScheduleEvent | runs.RunCancelRequested, msg_id: str | None = None) -> None:
        """Publish a schedule bookkeeping event (or a run cancel request)."""
        if isinstance(event, runs.RunCancelRequested):
            subject = subjects.run_event(event.task_id, event.run_id, event.subject_kind)
        else:
            subject = subjects.schedule_event(event.task_id, event.subject_kind)
        await self._settle(await self._publish(subject, codec.encode(event), msg_id or event.event_id))

    async def schedule_updated(self, timer: CronTimer, state: str, *, next_run_at: datetime | None) -> None:
        """Tell the store where a schedule stands."""
        await self.event(
            events.ScheduleUpdated(
                event_id=new_event_id(),
                occurred_at=utcnow(),
                task_id=timer.task_id,
                state=state,  # type: ignore[arg-type]  # one of ScheduleUpdated's states, by construction
                next_run_at=next_run_at,
                fired_count=timer.fired_count,
                missed_count=timer.missed_count,
                skipped_count=timer.skipped_count,
                last_fire_at=timer.last_fire_at,
            )
        )

    async def save(self, timer: AnyTimer) -> None:
        """Persist a timer (it survives a restart or a failover)."""
        await self.timers.put(timer.key, codec.encode(timer))

    async def save_soon(self, timer: AnyTimer) -> None:
        """Persist a cron timer after a fire without waiting for the acknowledgement.

        Losing it (a crash right now) only repeats the fire at a takeover, and a repeated fire
        lands once (its message id); waiting would hold every other fire of the moment.
        """
        future = await publish_async(
            self.js,
            f"$KV.{subjects.BUCKET_SCHEDULES}.{timer.key}",
            codec.encode(timer),
            seconds=PUBLISH_TIMEOUT_SECONDS,
        )
        # an acknowledgement lost with a connection never comes: do not let it hold room for good
        asyncio.get_running_loop().call_later(PUBLISH_TIMEOUT_SECONDS, future.cancel)
        future.add_done_callback(_log_failed_save)

    async def drop(self, key: str) -> None:
        """Remove a timer that has fired or was cancelled."""
        await self.timers.purge(key)


def _log_failed_save(future: asyncio.Future) -> None:
    if future.cancelled():
        log.warning("timer not saved within %.0f s; the next fire saves it again", PUBLISH_TIMEOUT_SECONDS)
    elif future.exception() is not None:
        log.warning("timer not saved (%s); the next fire saves it again", future.exception())
