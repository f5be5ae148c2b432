"""The store's pull loops: apply a batch of events at once, write the changes, then acknowledge.

Applying is synchronous and immediate (a waiter learns of an outcome without waiting for any
write); writing back and acknowledging run behind it, one batch after another, while the next
batch is already being fetched and applied. Acknowledging only after the write means a crash at
any point replays the batch, and replaying is harmless because applying is idempotent.

Each message is applied on its own: one that raises is redelivered later with a delay (then
given up, see ``services.common.poison``) while the rest of its batch is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from proto import codec, runs, subjects
from proto.runs import LogChunk
from services.common.lifecycle import supervise
from services.common.poison import handling_failed, settle_each
from services.common.pulling import ContinuousPull
from services.store.persistence import Persistence
from services.store.state import Effects, StoreState

log = logging.getLogger(__name__)

BATCH = 512
MAX_UNWRITTEN_MESSAGES = 4 * BATCH
"""Messages applied but not yet written back; more waits (backpressure on the fetching). Counted
in messages, not batches: while a flush waits its turn (``FLUSH_INTERVAL_SECONDS``) many small
batches come, and fetching them must go on (a waiter learns of an outcome when it is applied)."""
IDLE_SECONDS = 5.0
"""How long a loop waits for messages before it looks at writes that failed and need carrying."""
EARLY_EVENT_DELAY_SECONDS = 2.0
EARLY_EVENT_DELIVERIES = 8
"""A run event can arrive before its task: a new leader's catch-up of TASKS ends while the
submissions a killed leader was handed wait out their ack wait (10 s), and a submission is applied
only after its publish is acknowledged. Such an event comes back every 2 s, up to this many
deliveries in all (past the ack wait), before it is taken as an event of a task that never was."""


@dataclass
class Applied:
    """What applying a batch found: messages that cannot be read, and messages whose handling raised."""

    unusable: set[int] = field(default_factory=set)
    failed: dict[int, Exception] = field(default_factory=dict)
    early: set[int] = field(default_factory=set)
    """Run events whose task this store does not know yet: offered again a little later."""
    logs: list[LogChunk] = field(default_factory=list)
    """Output carried by outcomes (``RunFinished.log``): filed before the batch is acknowledged."""
    tasks: set[str] = field(default_factory=set)
    """Tasks the batch's events are about: acknowledged once no flush holds any of them back."""


Apply = Callable[[list[Msg]], Applied]
Commit = Callable[[list[Msg], Applied], Awaitable[None]]


class EventConsumers:
    """Materialises TASKS, EVENTS and LOGS into the state and the buckets."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        state: StoreState,
        persistence: Persistence,
        after_apply: Callable[[Effects], None],
        log_cap_bytes: int,
        restarts: Counter[str] | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.state = state
        self.persistence = persistence
        self.after_apply = after_apply
        self.log_cap_bytes = log_cap_bytes
        self._log_bytes: dict[tuple[str, str, int], int] = {}
        self.unknown_task_events = 0
        self.restarts: Counter[str] = Counter() if restarts is None else restarts
        """Consumer loops restarted after an error, by durable (kept across leaderships: heartbeats)."""

    async def catch_up_tasks(self) -> int:
        """Apply the TASKS backlog before anything else (so run events find their tasks)."""
        subscription = await self.js.pull_subscribe_bind(
            durable=subjects.CONSUMER_STORE_TASKS, stream=subjects.STREAM_TASKS
        )
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
                try:
                    await self._commit(messages, self._apply_tasks(messages))
                except Exception as exc:  # not acknowledged: the loops take them again after the ack wait
                    log.warning("task backlog not written back (%s); going on", exc)
                    return applied
                applied += len(messages)
        finally:
            await subscription.unsubscribe()

    async def run(self, stop: asyncio.Event) -> None:
        """Run the three loops until ``stop``; each finishes writing what it applied."""
        loops = (
            (subjects.STREAM_TASKS, subjects.CONSUMER_STORE_TASKS, self._apply_tasks, self._commit),
            (subjects.STREAM_EVENTS, subjects.CONSUMER_STORE_EVENTS, self._apply_events, self._commit),
            (subjects.STREAM_LOGS, subjects.CONSUMER_STORE_LOGS, _nothing_to_apply, self._commit_logs),
        )
        await asyncio.gather(
            *(
                supervise(durable, partial(self._loop, stream, durable, apply, commit, stop), stop, self.restarts)
                for stream, durable, apply, commit in loops
            )
        )

    async def _loop(self, stream: str, durable: str, apply: Apply, commit: Commit, stop: asyncio.Event) -> None:
        unwritten: deque[tuple[asyncio.Task[None], int]] = deque()
        held = 0  # messages in ``unwritten``
        pull = await ContinuousPull(self.nc, stream, durable, BATCH).start(stop)
        try:
            while not stop.is_set():
                messages = await pull.next_batch(IDLE_SECONDS)
                if not messages:
                    if self.persistence.failed_writes:  # nothing new to carry them: write them again now
                        unwritten.append((asyncio.create_task(self._committed(durable, commit, [], Applied())), 0))
                    continue
                applied = apply(messages)
                unwritten.append(
                    (asyncio.create_task(self._committed(durable, commit, messages, applied)), len(messages))
                )
                held += len(messages)
                while unwritten and (unwritten[0][0].done() or held > MAX_UNWRITTEN_MESSAGES):
                    committing, count = unwritten.popleft()
                    held -= count
                    await committing
        finally:
            await pull.close()
            if unwritten:
                await asyncio.gather(*(committing for committing, _ in unwritten), return_exceptions=True)

    @staticmethod
    async def _committed(durable: str, commit: Commit, messages: list[Msg], applied: Applied) -> None:
        try:
            await commit(messages, applied)
        except Exception as exc:  # not acknowledged: redelivered after the ack wait, applied again (no-op)
            log.warning("batch from %s not written back (%s); it will be redelivered", durable, exc)

    async def _commit(self, messages: list[Msg], applied: Applied) -> None:
        """Write what the batch changed, then settle each message on its own: acknowledge it,
        terminate it (unreadable), or redeliver it later / give it up (its handling raised)."""
        if applied.logs:
            await self.persistence.put_log_chunks(applied.logs)
        await self.persistence.flush(self.state)
        while self.state.holds_any(applied.tasks):  # not written yet (a task not at its end): a later flush writes it
            await self.persistence.flush(self.state)

        async def settle(message: Msg) -> None:
            failure = applied.failed.get(id(message))
            if failure is not None:
                await handling_failed(self.js, message, failure, "store")
            elif id(message) in applied.early:
                await message.nak(delay=EARLY_EVENT_DELAY_SECONDS)
            elif id(message) in applied.unusable:
                await message.term()
            else:
                await message.ack()

        # the failed last: giving one up publishes and waits, and must not hold the others' acks
        await settle_each(sorted(messages, key=lambda message: id(message) in applied.failed), settle)

    def _apply_tasks(self, messages: list[Msg]) -> Applied:
        applied = Applied()
        for message in messages:
            try:
                event = codec.task_event_decoder.decode(message.data)
            except msgspec.MsgspecError as exc:
                log.warning("undecodable task event on %s dropped: %s", message.subject, exc)
                applied.unusable.add(id(message))
                continue
            applied.tasks.add(event.task_id)
            try:
                self.after_apply(self.state.apply_task_event(event, message.metadata.sequence.stream))
            except Exception as exc:  # a bug met by this one event: the others still apply
                log.exception("task event on %s not applied", message.subject)
                applied.failed[id(message)] = exc
        return applied

    def _apply_events(self, messages: list[Msg]) -> Applied:
        applied = Applied()
        for message in messages:
            try:
                event = codec.run_event_decoder.decode(message.data)
            except msgspec.MsgspecError as exc:
                log.warning("undecodable event on %s dropped: %s", message.subject, exc)
                applied.unusable.add(id(message))
                continue
            applied.tasks.add(event.task_id)
            try:
                known = self._apply_event(event, partial(_may_wait, message))
                if not known:
                    applied.early.add(id(message))
                elif isinstance(event, runs.RunFinished) and event.log:
                    applied.logs.extend(chunk for chunk in event.log if _of(event, chunk) and self._keep(chunk))
            except Exception as exc:  # a bug met by this one event: the others still apply
                log.exception("event on %s not applied", message.subject)
                applied.failed[id(message)] = exc
        return applied

    def _apply_event(self, event: runs.RunEvent | object, may_wait: Callable[[], bool]) -> bool:
        """Apply one event; False when its task is unknown and the event should come back later
        (``may_wait``: asked only then, as it parses the message's metadata)."""
        if isinstance(event, (runs.RunQueued, runs.RunStarted, runs.RunFinished, runs.RunCancelRequested)):
            effects = self.state.apply_run_event(event)
        else:
            effects = self.state.apply_schedule_event(event)  # type: ignore[arg-type]  # run events are handled above; what is left is a schedule event
        if effects.unknown_task:
            if may_wait():
                return False
            # Its task was never seen (or deleted before a restart): nothing to attach it to.
            self.unknown_task_events += 1
            log.debug("event for unknown task %s ignored", getattr(event, "task_id", "?"))
        self.after_apply(effects)
        return True

    def _keep(self, chunk: LogChunk) -> bool:
        """Whether to file ``chunk``: its task is retained and its attempt's output within bounds."""
        if not self.state.is_retained(chunk.task_id):  # deleted (or never known): nothing to file it under
            return False
        key = (chunk.task_id, chunk.run_id, chunk.attempt)
        used = self._log_bytes.get(key, 0)
        if used > self.log_cap_bytes + 64 * 1024:  # the runner caps; this only guards the bucket
            return False
        if len(self._log_bytes) >= 50_000:
            self._log_bytes.clear()
        self._log_bytes[key] = used + len(chunk.data)
        return True

    async def _commit_logs(self, messages: list[Msg], _: Applied) -> None:
        keep: list[LogChunk] = []
        for message in messages:
            try:
                chunk = codec.log_chunk_decoder.decode(message.data)
            except msgspec.MsgspecError:
                continue
            if self._keep(chunk):
                keep.append(chunk)
        await self.persistence.put_log_chunks(keep)
        await settle_each(messages, Msg.ack)  # one not acknowledged is filed again: harmless


def _may_wait(message: Msg) -> bool:
    """Whether an event of a task not known yet may come back once more."""
    return message.metadata.num_delivered < EARLY_EVENT_DELIVERIES


def _of(finished: runs.RunFinished, chunk: LogChunk) -> bool:
    """Whether ``chunk`` is output of the attempt ``finished`` ends (an outcome files no other)."""
    return (chunk.task_id, chunk.run_id, chunk.attempt) == (finished.task_id, finished.run_id, finished.attempt)


def _nothing_to_apply(_: list[Msg]) -> Applied:
    """Log chunks change no state; they are only written (in the commit step)."""
    return Applied()
