"""The store's pull loops: apply a batch of events at once, write the changes, then acknowledge.

Applying is synchronous and immediate (a waiter learns of an outcome without waiting for any
write); writing back and acknowledging run behind it, one batch after another, while the next
batch is already being fetched and applied. Acknowledging only after the write means a crash at
any point replays the batch, and replaying is harmless because applying is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
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
MAX_UNWRITTEN_BATCHES = 4
"""Batches applied but not yet written back; more waits (backpressure on the fetching)."""
Apply = Callable[[list[Msg]], list[Msg]]
"""Applies a batch to the state; returns the messages that cannot be applied at all (to terminate)."""
Commit = Callable[[list[Msg], list[Msg]], Awaitable[None]]


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
                await self._commit(messages, self._apply_tasks(messages))
                applied += len(messages)
        finally:
            await subscription.unsubscribe()

    async def run(self, stop: asyncio.Event) -> None:
        """Run the three loops until ``stop``; each finishes writing what it applied."""
        await asyncio.gather(
            self._loop(subjects.STREAM_TASKS, subjects.CONSUMER_STORE_TASKS, self._apply_tasks, self._commit, stop),
            self._loop(subjects.STREAM_EVENTS, subjects.CONSUMER_STORE_EVENTS, self._apply_events, self._commit,
                       stop),
            self._loop(subjects.STREAM_LOGS, subjects.CONSUMER_STORE_LOGS, _nothing_to_apply, self._commit_logs,
                       stop),
        )

    async def _loop(self, stream: str, durable: str, apply: Apply, commit: Commit, stop: asyncio.Event) -> None:
        subscription = await self.js.pull_subscribe_bind(durable=durable, stream=stream)
        unwritten: deque[asyncio.Task[None]] = deque()
        try:
            while not stop.is_set():
                try:
                    messages = await fetch_until(subscription, BATCH, 5.0, stop)
                except Exception as exc:  # NATS reconnecting: try again shortly
                    log.debug("fetch from %s failed: %s", durable, exc)
                    await sleep_or_stop(stop, 0.5)
                    continue
                if not messages:
                    continue
                unusable = apply(messages)
                unwritten.append(asyncio.create_task(self._committed(durable, commit, messages, unusable)))
                while unwritten and (unwritten[0].done() or len(unwritten) > MAX_UNWRITTEN_BATCHES):
                    await unwritten.popleft()
        finally:
            if unwritten:
                await asyncio.gather(*unwritten, return_exceptions=True)
            try:
                await subscription.unsubscribe()
            except Exception:  # connection already closing
                pass

    @staticmethod
    async def _committed(durable: str, commit: Commit, messages: list[Msg], unusable: list[Msg]) -> None:
        try:
            await commit(messages, unusable)
        except Exception as exc:  # not acknowledged: redelivered after the ack wait, applied again (no-op)
            log.warning("batch from %s not written back (%s); it will be redelivered", durable, exc)

    async def _commit(self, messages: list[Msg], unusable: list[Msg]) -> None:
        """Write what the batch changed, then acknowledge each message (terminate what could not be read)."""
        await self.persistence.flush(self.state)
        bad = set(map(id, unusable))
        for message in messages:
            await (message.term() if id(message) in bad else message.ack())

    def _apply_tasks(self, messages: list[Msg]) -> list[Msg]:
        unusable = []
        for message in messages:
            try:
                event = codec.task_event_decoder.decode(message.data)
            except msgspec.MsgspecError as exc:
                log.warning("undecodable task event on %s dropped: %s", message.subject, exc)
                unusable.append(message)
                continue
            self.after_apply(self.state.apply_task_event(event, message.metadata.sequence.stream))
        return unusable

    def _apply_events(self, messages: list[Msg]) -> list[Msg]:
        unusable = []
        for message in messages:
            try:
                event = codec.run_event_decoder.decode(message.data)
            except msgspec.MsgspecError as exc:
                log.warning("undecodable event on %s dropped: %s", message.subject, exc)
                unusable.append(message)
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
        return unusable

    async def _commit_logs(self, messages: list[Msg], _: list[Msg]) -> None:
        keep: list[LogChunk] = []
        for message in messages:
            try:
                chunk = codec.log_chunk_decoder.decode(message.data)
            except msgspec.MsgspecError:
                continue
            if not self.state.is_retained(chunk.task_id):  # deleted (or never known): nothing to file it under
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
        for message in messages:
            await message.ack()


def _nothing_to_apply(_: list[Msg]) -> list[Msg]:
    """Log chunks change no state; they are only written (in the commit step)."""
    return []
