"""Publishing that outlives a JetStream election: one ``Nats-Msg-Id``, retried until acknowledged.

nats-py never retries a publish. While a stream elects a new leader (4-9 s after a node dies)
``js.publish`` raises no-responders or 503, and a request in flight on a dying connection times
out. Retrying with the same ``Nats-Msg-Id`` is safe inside the stream's duplicate window: the
server stores the message once and acknowledges the repeat as a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import timedelta

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
