"""Runner liveness pings: is runner X alive, does it still hold run R?

Asked by a runner that finds another's start on a run (``claim.holder_busy``) and by one that
finds another's containers (``sandbox.reaper``). Only the runner addressed can answer: its answer
is signed with the key its id names (``identity``). Any other answer on its subject is ignored and
logged. So an impostor cannot answer ``free`` or ``alive`` for another runner. It can keep a gone
runner's pings from coming back "no responders" (the asker is then unsure, the safe side: it waits
and keeps the containers), and it can fake the server's "no responders" status, which is why that
counts only when no signed answer arrives before the deadline: a live runner that answers in time
is never taken for gone.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Literal

import msgspec
from nats.aio.client import NO_RESPONDERS_STATUS, Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import Header

from proto import codec, control, subjects
from services.runner.identity import RunnerIdentity, signed_by

log = logging.getLogger(__name__)

ASK_TIMEOUT_SECONDS = 1.0
"""How long a runner has to answer; silence counts as unsure (it may be busy, not gone)."""

Reply = control.PingAnswer | Literal["gone", "unsure"]
"""``gone``: nobody listens on the runner's subject (the server says so) and nothing signed by it
came; ``unsure``: no answer signed by the runner in time."""


async def answer_pings(nc: Client, identity: RunnerIdentity, holds: Callable[[str], bool]) -> Subscription:
    """Answer this runner's pings, each signed; a ping that does not decode gets no answer."""
    subject = subjects.runner_ping(identity.runner_id)

    async def pong(msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            ping = codec.decode(control.RunnerPing, msg.data)
        except msgspec.MsgspecError:
            return
        answer: control.PingAnswer
        if ping.run_id is None:
            answer = "alive"
        else:
            answer = "holding" if holds(ping.run_id) else "free"
        signature = identity.sign(control.pong_statement(subject, ping, answer))
        await nc.publish(msg.reply, codec.encode(control.RunnerPong(answer=answer, signature=signature)))

    return await nc.subscribe(subject, cb=pong)


async def ask(nc: Client, runner_id: str, run_id: str | None = None, timeout: float = ASK_TIMEOUT_SECONDS) -> Reply:
    """Ping ``runner_id`` (about ``run_id``, if given) and return its signed answer.

    Every reply until the deadline is looked at, so an impostor answering first does not hide the
    real answer. Never raises: a lost connection is ``unsure``."""
    subject = subjects.runner_ping(runner_id)
    ping = control.RunnerPing(nonce=secrets.token_bytes(control.PING_NONCE_BYTES), run_id=run_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    impostors = 0
    gone = False
    try:
        inbox = await nc.subscribe(nc.new_inbox())
    except Exception as exc:
        log.warning("runner %s not asked: %s", runner_id, exc)
        return "unsure"
    try:
        await nc.publish(subject, codec.encode(ping), reply=inbox.subject)
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await inbox.next_msg(timeout=left)
            except NatsTimeoutError:
                break
            if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS_STATUS:
                # The server says nobody listens, but an impostor who does listen can send the same
                # status: it counts only if no signed answer follows before the deadline.
                gone = True
                continue
            answer = _verified(subject, ping, runner_id, msg.data)
            if answer is not None:
                return answer
            impostors += 1
    except Exception as exc:  # disconnected, closed: unsure
        log.warning("ping of runner %s failed: %s", runner_id, exc)
        return "unsure"
    finally:
        try:
            await inbox.unsubscribe()
        except Exception:  # a closed connection has dropped it already
            pass
        if impostors:
            log.warning("ignored %d answer(s) to a ping of runner %s not signed by it", impostors, runner_id)
    return "gone" if gone else "unsure"


def _verified(subject: str, ping: control.RunnerPing, runner_id: str, data: bytes) -> control.PingAnswer | None:
    try:
        pong = codec.decode(control.RunnerPong, data)
    except msgspec.MsgspecError:
        return None
    if not signed_by(runner_id, control.pong_statement(subject, ping, pong.answer), pong.signature):
        return None
    return pong.answer
