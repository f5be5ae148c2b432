"""A message a consumer cannot handle: redelivered a few times with backoff, then given up.

Giving up copies it to DEADLETTER with the reason and publishes a ``RunFinished`` (failed,
``error.type = internal``) for the run it concerns, so the store shows the user why. Only that
one message is held back; the rest of its batch goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec
from nats import errors as nats_errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import errors as js_errors

from proto import codec, events, runs, streams, subjects
from services.common.clock import utcnow

log = logging.getLogger(__name__)

DEADLINE_SECONDS = streams.NATS_CALL_DEADLINE.total_seconds()


async def within_deadline(call: Awaitable[object], seconds: float = DEADLINE_SECONDS) -> None:
    """Await one NATS call, giving up after ``seconds`` (a reply that never comes must not hang us).

    A timeout scope, not ``asyncio.wait_for``: wait_for wraps the call in a new task, so every ack
    of a batch yielded to the loop and nats-py's flusher wrote each one to the socket on its own
    (5,120 acks: 5,130 writes and 43 µs of CPU each; with the scope 10 writes and 29 µs). An ack
    only buffers, so the whole batch now goes out in one write.
    """
    async with asyncio.timeout(seconds):
        await call


async def settle_each(
    messages: list[Msg], settle: Callable[[Msg], Awaitable[object]], seconds: float = DEADLINE_SECONDS
) -> int:
    """Settle each message (ack, nak, term) on its own, within one deadline for them all; returns
    how many were settled. A message whose settling raises, or that the deadline leaves, is not
    settled: JetStream delivers it again after the ack wait.

    One timeout scope per batch, not per message: an ack only buffers, and the scope's timer was
    most of an ack's cost (a store batch is up to 512 messages)."""
    settled = 0
    try:
        async with asyncio.timeout(seconds):
            for message in messages:
                try:
                    await settle(message)
                    settled += 1
                except Exception as exc:  # this message only
                    log.warning("message on %s not settled (%s); it will be redelivered", message.subject, exc)
    except TimeoutError:
        log.warning(
            "%d of %d messages not settled in time; they will be redelivered", len(messages) - settled, len(messages)
        )
    return settled


def retry_delay_seconds(delivered: int) -> float:
    """Delay before the next delivery of a message whose handling raised ``delivered`` times."""
    first = streams.HANDLING_RETRY_DELAY.total_seconds()
    return min(first * 2 ** max(0, delivered - 1), streams.HANDLING_RETRY_DELAY_MAX.total_seconds())


def deliveries(message: Msg) -> int:
    """How many times JetStream has delivered ``message`` (1 on the first delivery)."""
    try:
        return message.metadata.num_delivered or 1
    except Exception:  # not a JetStream message (tests, core NATS)
        return 1


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says NATS is away for now (the message is not at fault: never give it up)."""
    if isinstance(exc, js_errors.APIError):
        return isinstance(exc, js_errors.ServiceUnavailableError)
    return isinstance(exc, (TimeoutError, nats_errors.Error))


async def handling_failed(js: JetStreamContext, message: Msg, exc: BaseException, consumer: str) -> bool:
    """Nak ``message`` with a delay, or past the bound give it up; True when given up."""
    delivered = deliveries(message)
    if delivered < streams.HANDLING_DELIVERIES or is_transient(exc):
        delay = retry_delay_seconds(delivered)
        log.warning(
            "%s could not handle %s (%s: %s); delivery %d, again in %.1f s",
            consumer,
            message.subject,
            type(exc).__name__,
            exc,
            delivered,
            delay,
        )
        await within_deadline(message.nak(delay=delay))
        return False
    reason = (
        f"{consumer} could not handle this message ({type(exc).__name__}: {exc}); given up after {delivered} deliveries"
    )
    log.error("message given up", extra={"consumer": consumer, "subject": message.subject, "reason": reason})
    await give_up(js, message, reason, delivered)
    await within_deadline(message.term())
    return True


async def give_up(js: JetStreamContext, message: Msg, reason: str, delivered: int) -> None:
    """Copy ``message`` to DEADLETTER and fail the run it concerns (durably: PubAck awaited)."""
    target = _target_of(message)
    if target is None:
        log.error("given-up message names no task; not dead-lettered", extra={"subject": message.subject})
        return
    task_id, run_id, slot, attempt, due = target
    identity = _identity(message)
    letter = runs.DeadLetter(
        task_id=task_id,
        run_id=run_id,
        attempt=attempt,
        deliveries=delivered,
        reason=reason,
        at=utcnow(),
        due=due,
        subject=message.subject,
        payload=None if due else message.data.decode(errors="replace")[: 64 * 1024],
    )
    await js.publish(
        subjects.dead_letter(task_id),
        codec.encode(letter),
        timeout=DEADLINE_SECONDS,
        headers={subjects.HEADER_MSG_ID: f"dl:{identity}"},
    )
    if _is_internal_failure(message):
        return  # the failure report itself failed: another report would only fail the same way
    finished = runs.RunFinished(
        event_id=f"i:{identity}",
        occurred_at=utcnow(),
        task_id=task_id,
        run_id=run_id,
        attempt=attempt,
        runner_id="internal",
        status="failed",
        slot=slot,
        error=runs.RunError(type="internal", message=reason),
    )
    await js.publish(
        subjects.run_event(task_id, run_id, "finished"),
        codec.encode(finished),
        timeout=DEADLINE_SECONDS,
        headers={subjects.HEADER_MSG_ID: finished.event_id},
    )


Target = tuple[str, str, str, int, "runs.RunDue | None"]


def _target_of(message: Msg) -> Target | None:
    """(task, run, slot, attempt, due run) a given-up message concerns; None when it names no task."""
    for decoder in (codec.run_due_decoder, codec.run_event_decoder, codec.task_event_decoder):
        try:
            event = decoder.decode(message.data)
        except msgspec.MsgspecError:
            continue
        if isinstance(event, runs.RunDue):
            return event.task_id, event.run_id, event.slot, event.attempt + deliveries(message) - 1, event
        run_id = getattr(event, "run_id", None)
        if run_id is not None:
            return event.task_id, run_id, getattr(event, "slot", ""), getattr(event, "attempt", 1), None
        task_id = getattr(event, "task_id", None)
        if task_id is None:
            continue
        if isinstance(event, events.TaskSubmitted) and event.spec.task_type != "scheduled":
            slot = runs.ONCE_SLOT  # the task's only run: failing it fails the task
        else:
            slot = f"internal:{_identity(message)}"
        return task_id, runs.run_id_for(task_id, slot), slot, 1, None
    return None


def _identity(message: Msg) -> str:
    try:
        return f"{message.metadata.stream}:{message.metadata.sequence.stream}"
    except Exception:  # not a JetStream message
        return message.subject


def _is_internal_failure(message: Msg) -> bool:
    try:
        event = codec.run_event_decoder.decode(message.data)
    except msgspec.MsgspecError:
        return False
    return isinstance(event, runs.RunFinished) and event.error is not None and event.error.type == "internal"
