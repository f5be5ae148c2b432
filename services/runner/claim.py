"""A run's start as a compare-and-set on its ``started`` subject: one delivery runs it, not two.

JetStream can hand one run to two runners at once. A runner's progress reports can be lost in an
election until the ack wait passes, and a consumer's new leader may not know of a delivery its
dead predecessor made. Recording ``RunStarted`` first is not enough on its own: two deliveries
record two starts. So a start is stored only if the subject's last start is the one the runner
looked at (``Nats-Expected-Last-Subject-Sequence``), and a runner that finds another's start asks
that runner whether it still holds the run before it takes over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from proto import codec, subjects
from proto.runs import RunStarted
from services.common import publishing
from services.runner import pings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LastStart:
    """The start a run's ``started`` subject holds last."""

    seq: int
    data: bytes
    runner_id: str


class StartTaken(Exception):
    """Another start was stored after the one this runner looked at (or under the same id)."""


async def last_start(js: JetStreamContext, subject: str) -> LastStart | None:
    """The last start recorded on ``subject``, or None when there is none (a first start)."""
    try:
        message = await js.get_last_msg(subjects.STREAM_EVENTS, subject)
    except NotFoundError:
        return None
    data = message.data or b""
    try:
        runner_id = codec.decode(RunStarted, data).runner_id
    except msgspec.MsgspecError:
        runner_id = ""  # not a start: nobody holds it, but the sequence still fences the next one
    return LastStart(seq=message.seq or 0, data=data, runner_id=runner_id)


async def publish_start(js: JetStreamContext, subject: str, payload: bytes, msg_id: str, after_seq: int) -> None:
    """Store ``payload`` as the run's start if ``after_seq`` is still the subject's last (0: none).

    Raises StartTaken when another start got there first. A repeat of this very publish (its
    first acknowledgement lost) is answered as a duplicate or as a wrong sequence; both raise
    StartTaken too, and the caller tells its own start from another's by the bytes stored.
    """
    headers = {subjects.HEADER_MSG_ID: msg_id, subjects.HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE: str(after_seq)}
    try:
        ack = await publishing.publish(js, subject, payload, headers=headers, seconds=5)
    except APIError as exc:
        if exc.err_code == subjects.ERR_WRONG_LAST_SEQUENCE:
            raise StartTaken(str(exc)) from exc
        raise
    if ack.duplicate:
        raise StartTaken(f"a start with id {msg_id} is stored already")


async def holder_busy(nc: Client | None, holder: str, run_id: str) -> bool:
    """Whether runner ``holder`` still holds ``run_id``: waiting for it, running it or reporting it.

    Only ``holder``'s signed answer counts (``pings``); unsure counts as busy."""
    if nc is None or not holder:
        return False
    return await pings.ask(nc, holder, run_id) not in ("free", "gone")
