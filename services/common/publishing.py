"""Publishing that outlives a JetStream election: one ``Nats-Msg-Id``, retried until acknowledged.

nats-py never retries a publish. While a stream elects a new leader (4-9 s after a node dies)
``js.publish`` raises no-responders or 503, and a request in flight on a dying connection times
out. Retrying with the same ``Nats-Msg-Id`` is safe inside the stream's duplicate window: the
server stores the message once and acknowledges the repeat as a duplicate.

Also JetStream publishing in batches (``publish_async``, ``acknowledged``, ``abandon``): many
publishes handed over without yielding, so they leave in one socket write, and their
acknowledgements awaited with one deadline.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from nats import errors as nats_errors
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from proto import streams, subjects

log = logging.getLogger(__name__)

RETRYABLE: tuple[type[BaseException], ...] = (
    js_errors.NoStreamResponseError,  # no stream leader yet (nats-py's name for no-responders)
    nats_errors.NoRespondersError,
    js_errors.ServiceUnavailableError,  # 503: JetStream answers, the stream has no quorum
    TimeoutError,  # nats.errors.TimeoutError is one too: the reply was lost with a node
    nats_errors.ConnectionReconnectingError,
    nats_errors.StaleConnectionError,
    nats_errors.OutboundBufferLimitError,
)
"""Failures an election or a reconnect causes, which a repeat with the same id can fix."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often a publish is repeated."""

    within: timedelta = streams.PUBLISH_RETRY_WINDOW
    """Give up after this long in all; must stay inside the stream's duplicate window."""
    attempt_timeout: timedelta = timedelta(seconds=5)
    """One attempt's wait for its acknowledgement (never longer than what is left)."""
    first_backoff: timedelta = timedelta(milliseconds=100)
    max_backoff: timedelta = timedelta(seconds=1)


class PublishFailed(Exception):
    """Not acknowledged within the policy's window; ``attempts`` tells how often it was tried."""

    def __init__(self, subject: str, attempts: int, last: BaseException) -> None:
        super().__init__(
            f"publish to {subject} not acknowledged after {attempts} attempts: {type(last).__name__}: {last}"
        )
        self.attempts = attempts
        self.last = last


async def publish_durably(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    msg_id: str,
    *,
    headers: dict[str, str] | None = None,
    policy: RetryPolicy = RetryPolicy(),
) -> js_api.PubAck:
    """Publish with ``Nats-Msg-Id: msg_id``, repeating on election and reconnect failures.

    Raises PublishFailed when the window passes, and any other error (a permission violation,
    a message too large) at once: repeating those cannot help.
    """
    if not msg_id:
        raise ValueError("publish_durably needs a Nats-Msg-Id: without one a repeat could store the message twice")
    all_headers = {**(headers or {}), subjects.HEADER_MSG_ID: msg_id}
    deadline = time.monotonic() + policy.within.total_seconds()
    backoff = policy.first_backoff.total_seconds()
    attempts = 0
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        try:
            ack = await js.publish(
                subject,
                payload,
                headers=all_headers,
                timeout=max(0.05, min(policy.attempt_timeout.total_seconds(), remaining)),
            )
        except RETRYABLE as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishFailed(subject, attempts, exc) from exc
            if attempts == 1:
                log.warning(
                    "publish not acknowledged; repeating", extra={"subject": subject, "error": type(exc).__name__}
                )
            await asyncio.sleep(min(remaining, backoff * random.uniform(0.5, 1.0)))
            backoff = min(backoff * 2, policy.max_backoff.total_seconds())
            continue
        if attempts > 1:
            log.info(
                "publish acknowledged after repeats",
                extra={"subject": subject, "attempts": attempts, "duplicate": bool(ack.duplicate)},
            )
        return ack


async def publish_async(
    js: JetStreamContext, subject: str, payload: bytes, *, seconds: float, headers: dict[str, str] | None = None
) -> asyncio.Future[js_api.PubAck]:
    """Hand one message to nats-py's asynchronous publishing; returns the future of its acknowledgement.

    nats-py bounds its wait for room in its window of unacknowledged publishes (``wait_stall``) with
    ``asyncio.wait_for``, which runs the wait as a new task: every publish then yielded to the event
    loop, and nats-py's flusher wrote each to the socket on its own (the store's write-back: five
    writes a task). A timeout scope bounds the same wait without a task, so publishes made one after
    another go out in one write. Raises TimeoutError when there is no room within ``seconds``.
    """
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await js.publish_async(subject, payload, headers=headers)
    except js_errors.TooManyStalledMsgsError:  # nats-py reports any cancellation of its wait as this
        if not scope.expired():
            raise asyncio.CancelledError from None  # not our deadline: the caller is being cancelled
        raise TimeoutError(f"no room to publish to {subject} within {seconds:g} s") from None


async def acknowledged(futures: list[asyncio.Future[js_api.PubAck]], seconds: float) -> list[js_api.PubAck]:
    """The acknowledgements of ``futures``, waited for at most ``seconds`` in all (then TimeoutError).

    nats-py never resolves the future of a publish answered by a JetStream API error (nats.py #985):
    without the deadline one such publish would hold its caller for good. Whatever happens, none of
    the futures is left pending (they hold slots of nats-py's window) or with an unretrieved error.
    """
    if not futures:
        return []
    try:
        async with asyncio.timeout(seconds):
            return await asyncio.gather(*futures)
    finally:
        abandon(futures)


def abandon(futures: list[asyncio.Future[Any]]) -> None:
    """Cancel the futures still pending (freeing their slots) and retrieve the errors of the others."""
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()
