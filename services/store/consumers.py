"""The store's pull loops: apply a batch of events, write the changes, then acknowledge.

Acknowledging only after the write means a crash at any point replays the batch, and replaying
is harmless because applying is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from proto import codec, runs, subjects
from proto.runs import LogChunk
from services.common.lifecycle import sleep_or_stop
from services.common.natsio import fetch_until
from services.store.persistence import Persistence
from services.store.state import Effects, StoreState

log = logging.getLogger(__name__)

BATCH = 512
Handler = Callable[[list[Msg]], Awaitable[None]]


class EventConsumers:
    """Materialises TASKS, EVENTS and LOGS into the state and the buckets."""

    def __init__(self, js: JetStreamContext, state: StoreState, persistence: Persistence,
                 after_apply: Callable[[Effects], None], log_cap_bytes: int) -> None:
        self.js = js
        self.state = state
        self.persistence = persistence
        self.after_apply = after_apply
        self.log_cap_bytes = log_cap_bytes
        self._log_bytes: dict[tuple[str, str, int], int] = {}
        self.unknown_task_events = 0

    async def catch_up_tasks(self) -> int:
        """Apply the TASKS backlog before anything else (so run events find their tasks)."""
        subscription = await self.js.pull_subscribe_bind(durable=subjects.CONSUMER_STORE_TASKS,
                                                          stream=subjects.STREAM_TASKS)
        applied = 0
        try:
            while True:
                info = await subscription.consumer_info()
                if not info.num_pending and not info.num_ack_pending:
                    return applied
                try:
                    messages = await subscription.fetch(BATCH, timeout=1)
                except TimeoutError:
                    return applied
                await self._tasks(messages)
                applied += len(messages)
        finally:
            await subscription.unsubscribe()

    async def run(self, stop: asyncio.Event) -> None:
        """Run the three loops until ``stop``; each finishes its current batch."""
        await asyncio.gather(
            self._loop(subjects.STREAM_TASKS, subjects.CONSUMER_STORE_TASKS, self._tasks, stop),
            self._loop(subjects.STREAM_EVENTS, subjects.CONSUMER_STORE_EVENTS, self._events, stop),
            self._loop(subjects.STREAM_LOGS, subjects.CONSUMER_STORE_LOGS, self._logs, stop),
        )

    async def _loop(self, stream: str, durable: str, handle: Handler, stop: asyncio.Event) -> None:
        subscription = await self.js.pull_subscribe_bind(durable=durable, stream=stream)
        try:
            while not stop.is_set():
                try:
                    messages = await fetch_until(subscription, BATCH, 5.0, stop)
                except Exception as exc:  # NATS reconnecting: try again shortly
                    log.debug("fetch from %s failed: %s", durable, exc)
                    await sleep_or_stop(stop, 0.5)
                    continue
                try:
                    await handle(messages)
                except Exception:  # not acknowledged: redelivered after the ack wait
                    log.exception("batch from %s not applied; it will be redelivered", durable)
                    await sleep_or_stop(stop, 1.0)
        finally:
            try:
                await subscription.unsubscribe()
            except Exception:  # connection already closing
                pass

    async def _ack_all(self, messages: list[Msg]) -> None:
        for message in messages:
            await message.ack()

    async def _tasks(self, messages: list[Msg]) -> None:
        for message in messages:
            try:
                event = codec.task_event_decoder.decode(message.data)
            except msgspec.MsgspecError as exc:
                log.warning("undecodable task event on %s dropped: %s", message.subject, exc)
                await message.term()
                continue
            self.after_apply(self.state.apply_task_event(event, message.metadata.sequence.stream))
        await self.persistence.flush(self.state)
        await self._ack_all(messages)

    async def _events(self, messages: list[Msg]) -> None:
        for message in messages:
            try:
                event = codec.run_event_decoder.decode(message.data)
            except msgspec.MsgspecError as exc:
                log.warning("undecodable event on %s dropped: %s", message.subject, exc)
                await message.term()
                continue
            if isinstance(event, (runs.RunQueued, runs.RunStarted, runs.RunFinished, runs.RunCancelRequested)):
                effects = self.state.apply_run_event(event)
            else:
                effects = self.state.apply_schedule_event(event)  # type: ignore[arg-type]
            if effects.unknown_task:
                # Its task was never seen (or deleted before a restart): nothing to attach it to.
                self.unknown_task_events += 1
                log.debug("event for unknown task %s ignored", getattr(event, "task_id", "?"))
            self.after_apply(effects)
        await self.persistence.flush(self.state)
        await self._ack_all(messages)

    async def _logs(self, messages: list[Msg]) -> None:
        keep: list[LogChunk] = []
        for message in messages:
            try:
                chunk = codec.log_chunk_decoder.decode(message.data)
            except msgspec.MsgspecError:
                continue
            if chunk.task_id not in self.state.tasks:
                continue
            key = (chunk.task_id, chunk.run_id, chunk.attempt)
            used = self._log_bytes.get(key, 0)
            if used > self.log_cap_bytes + 64 * 1024:  # the runner caps; this only guards the bucket
                continue
            self._log_bytes[key] = used + len(chunk.data)
            keep.append(chunk)
        if len(self._log_bytes) > 50_000:
            self._log_bytes.clear()
        await self.persistence.put_log_chunks(keep)
        await self._ack_all(messages)

