"""Flow control at the leader: runs of limited tasks reach WORK only with a permit of each key.

Durable in the schedules bucket, so a new leader resumes without double-admitting: a permit
(``permit.<run>``) is written before its RunDue is published and deleted when the attempt's
outcome is seen; a run that waits (``wait.<task>.<run>``) is written before the event that
caused it is acknowledged, and deleted after its RunDue is published. A waiting run that also
holds a permit (a leader died between the two) is published again at load: its message id
makes that land once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from proto import codec, flow, subjects
from proto.errors import ErrorBody, FieldError, error_body
from proto.flow import KeyLimit, LimitsReply, Permit, SetLimitRequest, WaitingRun
from proto.rates import check_flow_key, parse_rate
from services.scheduler.flow import FlowState
from services.scheduler.publisher import Publisher

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 60.0
"""How often idle per-task keys (a rate limit without a key) are forgotten."""
RETRY_ADMIT_SECONDS = 0.5
"""Pause before a waiting run whose admission failed (KV or publish) is tried again."""

_set_limit_decoder = msgspec.json.Decoder(SetLimitRequest)


class Admission:
    """Grants permits, holds waiting runs and publishes them as capacity frees."""

    def __init__(
        self,
        kv: KeyValue,
        publisher: Publisher,
        lock: Callable[[str], AbstractAsyncContextManager[object]],
        ended: Callable[[str], bool],
    ) -> None:
        self.kv = kv
        self.publisher = publisher
        self.lock = lock
        self.ended = ended
        self.state = FlowState()
        self._changed = asyncio.Event()
        self._republish: list[WaitingRun] = []
        self.nc: Client | None = None

    # --- loading ------------------------------------------------------------------------------

    def load(self, key: str, value: bytes) -> bool:
        """Take a flow entry read from the schedules bucket; False when ``key`` is not one."""
        if key.startswith(flow.PERMIT_PREFIX):
            self.state.restore_permit(codec.decode(Permit, value))
        elif key.startswith(flow.WAIT_PREFIX):
            self.state.restore_waiting(codec.decode(WaitingRun, value))
        elif key.startswith(flow.LIMIT_PREFIX):
            limit = codec.decode(KeyLimit, value)
            self.state.key(limit.key).operator = limit
        else:
            return False
        return True

    def loaded(self) -> None:
        """After the whole bucket is read: a waiting run that holds a permit is published again."""
        for run_id in [r for r in self.state.waiting if r in self.state.permits]:
            found = self.state.forget_waiting(run_id)
            if found is not None:
                self._republish.append(found)
        log.info(
            "flow control loaded",
            extra={
                "permits": len(self.state.permits),
                "waiting": len(self.state.waiting),
                "keys": len(self.state.keys),
            },
        )

    # --- runs ---------------------------------------------------------------------------------

    async def offer(self, run: WaitingRun) -> None:
        """Publish ``run`` if its keys have room, else keep it waiting (durably) with its reason."""
        if run.run_id in self.state.permits:  # admitted before a crash or a redelivery: publish again
            await self._publish(run)
            return
        if run.run_id in self.state.waiting:
            return
        reason = self.state.offer(run, time.monotonic())
        try:
            if reason is None:
                await self._admit(run)
            else:
                await self.kv.put(flow.wait_key(run.task_id, run.run_id), codec.encode(run))
                await self.publisher.waiting(run, reason)
                self._changed.set()  # the head of its key's queue may be able to go already
        except BaseException:  # nothing durable: forget it, the event that caused it comes back
            self.state.release(run.run_id, run.attempt)
            self.state.forget_waiting(run.run_id)
            raise

    async def finished(self, run_id: str, attempt: int) -> None:
        """An attempt's outcome was seen: free its permits (durably) and let the next runs go."""
        permit = self.state.release(run_id, attempt)
        if permit is None:
            return
        await self.kv.purge(flow.permit_key(run_id))
        self._changed.set()

    async def cancelled(self, task_id: str, *, deleted: bool = False) -> None:
        """A cancelled or deleted task's waiting runs go nowhere; a deleted one's permits are freed.

        (A cancelled task's admitted runs still end with an outcome, from the runner that kills
        them or finds them cancelled; a deleted task's are acknowledged without one.)
        """
        for run in self.state.drop_task(task_id):
            await self.kv.purge(flow.wait_key(run.task_id, run.run_id))
        if deleted:
            for permit in self.state.release_task(task_id):
                await self.kv.purge(flow.permit_key(permit.run_id))
            self._changed.set()

    async def _admit(self, run: WaitingRun, *, waited: bool = False) -> None:
        permit = self.state.permits[run.run_id]
        await self.kv.put(flow.permit_key(run.run_id), codec.encode(permit))
        await self._publish(run, waited=waited)

    async def _publish(self, run: WaitingRun, *, waited: bool = False) -> None:
        await self.publisher.fire(
            run.task_id,
            run.spec,
            slot=run.slot,
            scheduled_for=run.scheduled_for,
            run_id=run.run_id,
            attempt=run.attempt,
            retry=run.retry,
            # its waiting RunQueued carried the schedule's view; a later one may be newer by now
            schedule=None if waited else run.schedule,
        )

    async def _admit_waiting(self, run: WaitingRun) -> None:
        async with self.lock(run.task_id):
            try:
                if self.ended(run.task_id):
                    await self.finished(run.run_id, run.attempt)
                else:
                    await self._admit(run, waited=True)
                await self.kv.purge(flow.wait_key(run.task_id, run.run_id))
            except Exception:  # its wait record stays: it waits again, and is tried again
                log.exception("waiting run %s not admitted; it waits again", run.run_id)
                await asyncio.sleep(RETRY_ADMIT_SECONDS)  # NATS trouble: do not spin
                self.state.release(run.run_id, run.attempt)
                self.state.restore_waiting(run)
                self._changed.set()

    async def pump(self, until: asyncio.Event) -> None:
        """Publish waiting runs as permits and tokens free up, until ``until`` is set."""
        for run in self._republish:
            await self._admit_waiting(run)
        self._republish.clear()
        pruned_at = time.monotonic()
        while not until.is_set():
            now = time.monotonic()
            if now - pruned_at > PRUNE_EVERY_SECONDS:
                self.state.prune(now)
                pruned_at = now
            admitted, wake_in = self.state.admit_waiting(now)
            if admitted:
                await asyncio.gather(*(self._admit_waiting(run) for run in admitted))
                continue
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), 1.0 if wake_in is None else min(1.0, wake_in))
            except TimeoutError:
                pass

    # --- limits API ---------------------------------------------------------------------------

    async def serve(self, nc: Client, until: asyncio.Event) -> None:
        """Answer the limits requests while leading."""
        self.nc = nc
        listing = await nc.subscribe(subjects.FLOW_LIST_LIMITS, cb=self._on_list)
        setting = await nc.subscribe(subjects.FLOW_SET_LIMIT, cb=self._on_set)
        try:
            await until.wait()
        finally:
            for subscription in (listing, setting):
                try:
                    await subscription.unsubscribe()
                except Exception:  # connection closing
                    pass

    async def _on_list(self, message: Msg) -> None:
        await self._reply(message, LimitsReply(limits=self.state.views()))

    async def _on_set(self, message: Msg) -> None:
        try:
            request = _set_limit_decoder.decode(message.data or b"{}")
            check_flow_key(request.key, "key")
            if request.rate_limit is not None:
                parse_rate(request.rate_limit)
        except msgspec.ValidationError as exc:
            await self._reply(message, error_body("invalid_field", str(exc)))
            return
        except msgspec.DecodeError as exc:
            await self._reply(message, error_body("invalid_json", f"body is not JSON: {exc}"))
            return
        except FieldError as exc:
            await self._reply(message, exc.body())
            return
        state = self.state.key(request.key)
        limit = KeyLimit(key=request.key, max_concurrency=request.max_concurrency, rate_limit=request.rate_limit)
        try:
            if request.max_concurrency is None and request.rate_limit is None:
                await self.kv.purge(flow.limit_key(request.key))
                state.operator = None
            else:
                await self.kv.put(flow.limit_key(request.key), codec.encode(limit))
                state.operator = limit
        except Exception as exc:  # the caller sees why; the limit is unchanged
            await self._reply(message, error_body("unavailable", f"limit not saved: {type(exc).__name__}"))
            return
        self._changed.set()
        log.info("limit set", extra={"key": request.key, "max": request.max_concurrency, "rate": request.rate_limit})
        view = state.view()
        self.state.forget_if_idle(request.key)
        await self._reply(message, view)

    async def _reply(self, message: Msg, body: object) -> None:
        if not message.reply or self.nc is None:
            return
        headers = {subjects.HEADER_ERROR: str(body.error.code)} if isinstance(body, ErrorBody) else None
        try:
            await self.nc.publish(message.reply, codec.encode(body), headers=headers)
        except Exception as exc:  # the requester gave up, or NATS is down
            log.debug("limits reply not sent: %s", exc)
