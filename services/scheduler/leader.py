"""The leader's work: load the timers, follow task and run events, fire what is due.

Events for one task are handled in order under that task's lock; different tasks proceed
concurrently. A TASKS or EVENTS message is acknowledged only after what it caused is durable
(a published run, a saved timer), so a leader that dies mid-way leaves nothing half done that
the next leader would not redo — and redoing is harmless because fires are de-duplicated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial

import msgspec
from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from proto import api, codec, events, runs, subjects
from proto.flow import WaitingRun
from proto.records import TaskRecord
from proto.runs import ONCE_SLOT, RunFinished, ScheduleView, slot_for_fire
from proto.schedules import AnyTimer, CronTimer, OnceTimer, RetryTimer
from proto.tasks import FINAL_STATUSES, TaskSpec
from services.common.clock import utcnow
from services.common.ids import new_event_id
from services.common.lifecycle import supervise
from services.common.natsio import read_bucket, redeliver_unacknowledged
from services.common.poison import handling_failed, settle_each
from services.common.pulling import ContinuousPull
from services.scheduler import planner
from services.scheduler.admission import Admission
from services.scheduler.heap import TimerHeap
from services.scheduler.publisher import Publisher
from services.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)

BATCH = 256
STORE_REQUEST_TIMEOUT_SECONDS = 5.0
"""How long the store has to give a task's spec (a retry or a trigger); then the event is retried."""
ENDED_REMEMBERED = 100_000
"""Cancelled or deleted tasks remembered, so a submission redelivered after its cancel arms nothing."""
DUE_FIRST_MAX_WAIT_SECONDS = 0.05
"""How long a batch of new events waits at most for the fire round of timers already due."""
_timer_decoder = msgspec.json.Decoder(AnyTimer)


class StoreUnavailable(nats_errors.Error):
    """The store answered with an error it may not give next time (counted as transient)."""


class Leader:
    """Holds every timer in memory (mirrored in the schedules bucket) while this process leads."""

    def __init__(
        self,
        js: JetStreamContext,
        timers_kv: KeyValue,
        settings: SchedulerSettings,
        nc: Client,
        restarts: Counter[str] | None = None,
    ) -> None:
        self.js = js
        self.nc = nc
        self.settings = settings
        self.publisher = Publisher(js, timers_kv)
        self.timers_kv = timers_kv
        self.timers: dict[str, AnyTimer] = {}
        self.by_task: dict[str, set[str]] = defaultdict(set)
        self.heap = TimerHeap()
        self._locks: dict[str, asyncio.Lock] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._round_taken = asyncio.Event()
        """Set each time a fire round takes the timers due (``_due_fired_first`` waits for it)."""
        self._slots = asyncio.Semaphore(settings.fire_concurrency)
        self.restarts: Counter[str] = Counter() if restarts is None else restarts
        """Consumer loops that died and were restarted, by consumer name (kept across leadership terms)."""
        self.admission = Admission(timers_kv, self.publisher, self.lock, self._ended.__contains__)

    # --- timers -------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read every timer from the bucket (a takeover resumes exactly where the last leader was)."""
        started = time.perf_counter()
        async for key, value in read_bucket(self.js, subjects.BUCKET_SCHEDULES):
            try:
                if not self.admission.load(key, value):
                    self._remember(_timer_decoder.decode(value))
            except msgspec.MsgspecError as exc:
                log.error("unreadable timer %s dropped: %s", key, exc)
        self.admission.loaded()
        log.info(
            "timers loaded",
            extra={
                "timers": len(self.timers),
                "armed": len(self.heap),
                "ms": round((time.perf_counter() - started) * 1000),
            },
        )

    def _remember(self, timer: AnyTimer) -> None:
        self.timers[timer.key] = timer
        self.by_task[timer.task_id].add(timer.key)
        if isinstance(timer, CronTimer) and timer.state == "paused":
            self.heap.discard(timer.key)
        elif self.heap.put(timer.key, timer.fire_at.timestamp()):
            self._wakeup.set()

    def _forget(self, key: str) -> None:
        timer = self.timers.pop(key, None)
        self.heap.discard(key)
        if timer is not None:
            keys = self.by_task.get(timer.task_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_task[timer.task_id]
                    self._locks.pop(timer.task_id, None)

    async def _save(self, timer: AnyTimer) -> None:
        await self.publisher.save(timer)
        self._remember(timer)

    async def _drop(self, key: str) -> None:
        await self.publisher.drop(key)
        self._forget(key)

    def lock(self, task_id: str) -> asyncio.Lock:
        found = self._locks.get(task_id)
        if found is None:
            found = self._locks[task_id] = asyncio.Lock()
        return found

    # --- loops --------------------------------------------------------------------------------

    async def run(self, until: asyncio.Event) -> None:
        """Lead until ``until`` is set (stop requested or lease lost)."""
        await self.load()
        consumers = (
            (subjects.STREAM_TASKS, subjects.CONSUMER_SCHEDULER_TASKS, self._on_task_event),
            (subjects.STREAM_EVENTS, subjects.CONSUMER_SCHEDULER_RUNS, self._on_run_finished),
        )
        await redeliver_unacknowledged(self.nc, *(durable for _, durable, _ in consumers))  # what a dead leader held
        workers = [
            *(
                asyncio.create_task(
                    supervise(durable, partial(self._consume, stream, durable, handle, until), until, self.restarts),
                    name=durable,
                )
                for stream, durable, handle in consumers
            ),
            asyncio.create_task(self._fire_loop(until), name="fire-loop"),
            asyncio.create_task(supervise("admission", partial(self.admission.pump, until), until, self.restarts)),
        ]
        workers.append(asyncio.create_task(self.admission.serve(self.nc, until), name="limits-api"))
        try:
            await until.wait()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _consume(
        self, stream: str, durable: str, handle: Callable[[Msg], Awaitable[None]], until: asyncio.Event
    ) -> None:
        pull = await ContinuousPull(self.nc, stream, durable, BATCH).start(until)
        try:
            while not until.is_set():
                messages = await pull.next_batch()
                await self._due_fired_first()
                by_task: dict[str, list[Msg]] = defaultdict(list)
                for message in messages:
                    by_task[message.subject.split(".")[2]].append(message)
                handled: list[Msg] = []
                await asyncio.gather(*(self._in_order(group, handle, handled) for group in by_task.values()))
                # the next batch waits for this one anyway: one deadline for all its acks, not one each
                await settle_each(handled, Msg.ack)
        finally:
            await pull.close()

    async def _in_order(
        self, messages: list[Msg], handle: Callable[[Msg], Awaitable[None]], handled: list[Msg]
    ) -> None:
        """Handle one task's messages in order; those handled join ``handled`` to be acknowledged."""
        for message in messages:
            try:
                await handle(message)
            except Exception as exc:  # this message only: redelivered later with a delay, then given up
                log.exception("event on %s not handled", message.subject)
                await self._settle(handling_failed(self.js, message, exc, "scheduler"), message)
                continue
            handled.append(message)

    @staticmethod
    async def _settle(settling: Awaitable[object], message: Msg) -> None:
        try:
            await settling
        except Exception as exc:  # left unacknowledged: redelivered after the ack wait
            log.warning("message on %s not settled (%s); it will be redelivered", message.subject, exc)

    async def _due_fired_first(self) -> None:
        """Hold a batch of new events while timers are due that no fire round has taken yet: under
        a flood of submissions (each a timer to save) the runs already due go first. Bounded, so
        that a stopped fire loop never stops the consumers."""
        deadline = time.monotonic() + DUE_FIRST_MAX_WAIT_SECONDS
        while (due := self.heap.next_due()) is not None and due <= time.time():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._round_taken.clear()
            self._wakeup.set()  # the fire loop may sleep a moment longer than the timer's due time
            try:
                await asyncio.wait_for(self._round_taken.wait(), left)
            except TimeoutError:
                return

    async def _fire_loop(self, until: asyncio.Event) -> None:
        # At ~1,000 fires a second a round held one fire, and every hop downstream (WORK, the
        # runner's verdict and start, the store's writes) then paid its per-message cost per run:
        # rounds 5 ms apart cost 12-23 % less CPU a run in interleaved pairs (bench/README).
        spacing = self.settings.fire_round_spacing.total_seconds()
        last_round = float("-inf")
        while not until.is_set():
            next_due = self.heap.next_due()
            if next_due is not None and next_due <= time.time():
                pause = last_round + spacing - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)  # what comes due meanwhile joins this round
                    if until.is_set():
                        break
                last_round = time.monotonic()
                keys = self.heap.pop_due(time.time())
                self._round_taken.set()
                await asyncio.gather(*(self._fire(key) for key in keys))
                continue
            delay = 1.0 if next_due is None else min(1.0, max(0.0, next_due - time.time()))
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay)
            except TimeoutError:
                pass

    # --- task events --------------------------------------------------------------------------

    async def _on_task_event(self, message: Msg) -> None:
        try:
            event = codec.task_event_decoder.decode(message.data)
        except msgspec.MsgspecError as exc:
            log.warning("undecodable task event dropped: %s", exc)
            return
        async with self.lock(event.task_id):
            if isinstance(event, events.TaskSubmitted):
                if event.task_id not in self._ended:  # else: its submission failed and came back after its cancel
                    await self._submitted(event)
            elif isinstance(event, (events.TaskCancelled, events.TaskDeleted)):
                for key in list(self.by_task.get(event.task_id, ())):
                    await self._drop(key)
                await self.admission.cancelled(event.task_id, deleted=isinstance(event, events.TaskDeleted))
                self._ended[event.task_id] = None
                if len(self._ended) > ENDED_REMEMBERED:
                    self._ended.popitem(last=False)
            elif isinstance(event, events.SchedulePaused):
                await self._pause(event.task_id)
            elif isinstance(event, events.ScheduleResumed):
                await self._resume(event.task_id, event.occurred_at)
            elif isinstance(event, events.ScheduleTriggered):
                await self._trigger(event)

    async def _submitted(self, event: events.TaskSubmitted) -> None:
        spec = event.spec
        if spec.task_type == "immediate":
            await self._start_run(event.task_id, spec, slot=ONCE_SLOT, scheduled_for=event.occurred_at)
        elif spec.task_type == "delayed":
            if f"once.{event.task_id}" not in self.timers:
                due = event.occurred_at + timedelta(seconds=spec.delay_seconds or 0.0)
                await self._save(OnceTimer(task_id=event.task_id, spec=spec, due_at=due))
        elif f"cron.{event.task_id}" not in self.timers:
            timer = CronTimer(task_id=event.task_id, spec=spec, due_at=event.occurred_at)
            first = planner.next_due(spec, event.occurred_at)
            if first is None:
                await self.publisher.schedule_updated(timer, "completed", next_run_at=None)
                return
            timer.due_at = first
            await self._save(timer)
            await self.publisher.schedule_updated(timer, "active", next_run_at=timer.fire_at)

    async def _pause(self, task_id: str) -> None:
        timer = self.timers.get(f"cron.{task_id}")
        if isinstance(timer, CronTimer) and timer.state == "active":
            timer = msgspec.structs.replace(timer, state="paused")
            await self._save(timer)
            await self.publisher.schedule_updated(timer, "paused", next_run_at=None)

    async def _resume(self, task_id: str, at: datetime) -> None:
        timer = self.timers.get(f"cron.{task_id}")
        if isinstance(timer, CronTimer) and timer.state == "paused":
            following = planner.next_due(timer.spec, max(at, utcnow()))
            if following is None:
                await self._drop(timer.key)
                await self.publisher.schedule_updated(timer, "completed", next_run_at=None)
                return
            timer = msgspec.structs.replace(timer, state="active", due_at=following)
            await self._save(timer)
            await self.publisher.schedule_updated(timer, "active", next_run_at=timer.fire_at)

    async def _trigger(self, event: events.ScheduleTriggered) -> None:
        timer = self.timers.get(f"cron.{event.task_id}")
        spec = timer.spec if isinstance(timer, CronTimer) else await self._spec_of(event.task_id)
        if spec is None:
            return
        run_id = await self._start_run(
            event.task_id, spec, slot=f"trigger:{event.event_id}", scheduled_for=event.occurred_at
        )
        if isinstance(timer, CronTimer) and tracks_overlap(timer):
            await self._save(msgspec.structs.replace(timer, active_runs=[*timer.active_runs, run_id][-100:]))

    async def _spec_of(self, task_id: str) -> TaskSpec | None:
        """The spec of a live task, asked of the store; None once it is gone or finished.

        Raises when the store cannot answer now (no responders during its election, a timeout,
        an error other than "not found"): the event is handled again after a delay."""
        reply = await self.nc.request(
            subjects.GET_TASK, codec.encode(api.TaskRef(id=task_id)), timeout=STORE_REQUEST_TIMEOUT_SECONDS
        )
        if reply.headers and subjects.HEADER_ERROR in reply.headers:
            error = codec.error_reply(reply.data).error
            if error.code == "not_found":
                return None
            raise StoreUnavailable(f"the store did not give task {task_id}: {error.code}: {error.message}")
        task = codec.decode(TaskRecord, reply.data)
        if task.status in FINAL_STATUSES and task.task_type != "scheduled":
            return None
        if task.status in ("cancelled", "completed"):
            return None
        return task.spec

    # --- run outcomes -------------------------------------------------------------------------

    async def _on_run_finished(self, message: Msg) -> None:
        try:
            event = codec.run_event_decoder.decode(message.data)
        except msgspec.MsgspecError:
            return
        if not isinstance(event, RunFinished):
            return
        async with self.lock(event.task_id):
            if event.run_id in self.admission.state.permits:
                await self.admission.finished(event.run_id, event.attempt)
            cron = self.timers.get(f"cron.{event.task_id}")
            if isinstance(cron, CronTimer) and not event.will_retry and event.run_id in cron.active_runs:
                finished = msgspec.structs.replace(cron, active_runs=[r for r in cron.active_runs if r != event.run_id])
                self._remember(finished)
                await self.publisher.save_soon(finished)
            if event.will_retry and event.retry_at is not None:
                spec = cron.spec if isinstance(cron, CronTimer) else await self._spec_of(event.task_id)
                if spec is None:
                    return  # cancelled or deleted meanwhile: no retry
                retry = RetryTimer(
                    task_id=event.task_id,
                    spec=spec,
                    due_at=event.retry_at,
                    run_id=event.run_id,
                    slot=event.slot or ONCE_SLOT,
                    attempt=event.attempt + 1,
                    retry=event.retry + 1,
                    scheduled_for=event.scheduled_for or event.retry_at,
                )
                if retry.key not in self.timers:
                    await self._save(retry)

    # --- firing -------------------------------------------------------------------------------

    async def _start_run(
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
        """Publish a run now, or, when its task sets a limit, once admission lets it go."""
        if not spec.limited:  # no KV write, no extra hop for tasks without limits
            return await self.publisher.fire(
                task_id,
                spec,
                slot=slot,
                scheduled_for=scheduled_for,
                run_id=run_id,
                attempt=attempt,
                retry=retry,
                schedule=schedule,
            )
        run = WaitingRun(
            task_id=task_id,
            run_id=run_id or runs.run_id_for(task_id, slot),
            spec=spec,
            slot=slot,
            scheduled_for=scheduled_for,
            since=utcnow(),
            attempt=attempt,
            retry=retry,
            schedule=schedule,
        )
        await self.admission.offer(run)
        return run.run_id

    async def _fire(self, key: str) -> None:
        async with self._slots:
            timer = self.timers.get(key)
            if timer is None:
                return
            async with self.lock(timer.task_id):
                timer = self.timers.get(key)
                if timer is None:
                    return
                try:
                    if isinstance(timer, OnceTimer):
                        await self._start_run(timer.task_id, timer.spec, slot=ONCE_SLOT, scheduled_for=timer.due_at)
                        await self._drop(key)
                    elif isinstance(timer, RetryTimer):
                        await self._start_run(
                            timer.task_id,
                            timer.spec,
                            slot=timer.slot,
                            run_id=timer.run_id,
                            scheduled_for=timer.scheduled_for,
                            attempt=timer.attempt,
                            retry=timer.retry,
                        )
                        await self._drop(key)
                    elif isinstance(timer, CronTimer) and timer.state == "active":
                        await self._fire_cron(timer)
                except Exception as exc:  # NATS trouble: try again shortly, dedup makes that safe
                    log.warning("fire of %s failed (%s); retrying in 1 s", key, exc)
                    self.heap.put(key, time.time() + 1.0)

    async def _fire_cron(self, timer: CronTimer) -> None:
        now = utcnow()
        decision = planner.plan(timer, now, self.settings.misfire_grace, self.settings.run_all_limit)
        policy = timer.spec.overlap_policy
        active = list(timer.active_runs) if tracks_overlap(timer) else []
        # Decide every slot first, so each fire's RunQueued can carry where the schedule stands.
        to_fire: list[datetime] = []
        skipped: list[datetime] = []
        for scheduled_for in decision.fire:
            if (active or to_fire) and policy == "forbid":
                skipped.append(scheduled_for)
            else:
                to_fire.append(scheduled_for)
        updated = msgspec.structs.replace(
            timer,
            fired_count=timer.fired_count + len(to_fire),
            skipped_count=timer.skipped_count + len(skipped),
            missed_count=timer.missed_count + decision.missed,
            last_fire_at=planner.fire_time(timer, to_fire[-1]) if to_fire else timer.last_fire_at,
            due_at=decision.next_due or timer.due_at,
        )
        view = ScheduleView(
            next_run_at=decision.next_fire_at,
            fired_count=updated.fired_count,
            missed_count=updated.missed_count,
            skipped_count=updated.skipped_count,
        )
        for scheduled_for in skipped:
            await self.publisher.event(
                events.SlotSkipped(
                    event_id=new_event_id(),
                    occurred_at=now,
                    task_id=timer.task_id,
                    scheduled_for=planner.fire_time(timer, scheduled_for),
                    reason=f"previous run {(active or ['?'])[-1]} still running (overlap_policy forbid)",
                ),
                msg_id=f"skip:{timer.task_id}:{slot_for_fire(scheduled_for)}",
            )
        for scheduled_for in to_fire:
            fire_at = planner.fire_time(timer, scheduled_for)  # the slot keeps its cron time: same run id
            if active and policy == "replace":
                for run_id in active:
                    await self.publisher.event(
                        runs.RunCancelRequested(
                            event_id=new_event_id(),
                            occurred_at=now,
                            task_id=timer.task_id,
                            run_id=run_id,
                            reason=f"replaced by the fire of {fire_at.isoformat()} (overlap_policy replace)",
                        )
                    )
                active = []
            run_id = await self._start_run(
                timer.task_id, timer.spec, slot=slot_for_fire(scheduled_for), scheduled_for=fire_at, schedule=view
            )
            if tracks_overlap(timer):
                active.append(run_id)
        if decision.missed:
            assert decision.missed_first is not None and decision.missed_last is not None, "set with missed"
            await self.publisher.event(
                events.SlotsMissed(
                    event_id=new_event_id(),
                    occurred_at=now,
                    task_id=timer.task_id,
                    count=decision.missed,
                    first=decision.missed_first,
                    last=decision.missed_last,
                    policy=timer.spec.misfire_policy,
                    caught_up=len(to_fire),
                ),
                msg_id=f"miss:{timer.task_id}:{slot_for_fire(decision.missed_first)}",
            )
        updated = msgspec.structs.replace(updated, active_runs=active[-100:])
        if decision.next_due is None:
            await self._drop(timer.key)
            await self.publisher.schedule_updated(updated, "completed", next_run_at=None)
            return
        self._remember(updated)
        await self.publisher.save_soon(updated)
        if not to_fire:  # nothing carried the new view to the store
            await self.publisher.schedule_updated(updated, "active", next_run_at=decision.next_fire_at)


def tracks_overlap(timer: CronTimer) -> bool:
    """Only the forbid and replace policies need to know which runs are still going."""
    return timer.spec.overlap_policy != "allow"
