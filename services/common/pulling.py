"""A pull consumer whose requests stay open, so messages flow without a request per batch.

nats-py's ``fetch`` asks twice per call when little is waiting (a no-wait probe that comes back
"no messages", then a long poll) and spends a task and a uuid on every message it waits for. At a
moderate rate each event is a fetch of its own: the store made about 12 socket writes per task
that way. Here, as in nats.go's ``Consume``, requests stay open on the server and a new one goes
out only when what is asked for and not yet taken falls to half a batch, or when the server ends
a request. What is held here is bounded by one batch.

Requests can vanish without a word (a reconnect, the consumer's leader moving): the server sends
an idle heartbeat on each open request, and silence for a few heartbeats counts them as gone.
Messages held here when the pull closes are naked, so they are delivered again at once; those
still on their way come back after the ack wait (or when the next holder resets the consumer to
its ack floor).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

WAIT_SECONDS = 5.0
"""How long one :meth:`ContinuousPull.next_batch` waits for a message, by default, before it
returns empty so its caller can look around (its slots, a stop, writes to carry)."""
REQUEST_EXPIRES_SECONDS = 30.0
HEARTBEAT_SECONDS = 1.0
SILENT_HEARTBEATS = 3
"""Open requests with nothing heard for this many heartbeats are taken as gone and asked again."""
EXPIRY_GRACE_SECONDS = 1.0
"""A request is forgotten this long after it expired, in case the server's word on it was lost."""
STATUS = "Status"
PENDING_MESSAGES = "Nats-Pending-Messages"
HEARTBEAT = "100"
ACK_PREFIX = "$JS.ACK."
NAK_SECONDS = 1.0


class OpenRequest:
    """One pull request the server still owes messages on (it serves them oldest first)."""

    __slots__ = ("expires_at", "owed")

    def __init__(self, expires_at: float, owed: int) -> None:
        self.expires_at = expires_at
        self.owed = owed


class ContinuousPull:
    """Messages of one durable pull consumer, up to ``batch`` at a time, with requests kept open."""

    def __init__(
        self,
        nc: Client,
        stream: str,
        durable: str,
        batch: int,
        *,
        capacity: Callable[[], int] | None = None,
        expires: float = REQUEST_EXPIRES_SECONDS,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.nc = nc
        self.batch = batch
        self.capacity = capacity
        """How many more messages the caller can take on now (a runner's free slots); asked for
        and held messages together never exceed it, so nothing waits here for a slot."""
        self.expires = expires
        self.heartbeat = heartbeat
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._buffer: deque[Msg] = deque()
        self._open: deque[OpenRequest] = deque()
        self._subscription: Subscription | None = None
        self._arrived: asyncio.Future[None] | None = None
        self._stop: asyncio.Event | None = None
        self._stop_watch: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._last_heard = self._loop.time()

    async def start(self, stop: asyncio.Event | None = None) -> ContinuousPull:
        """Subscribe and ask; a set ``stop`` returns a waiting :meth:`next_batch` at once."""
        # Never more than a batch plus the requests' overlap is in flight: the client's own
        # limits (0: none) must not drop any of it as a slow consumer.
        self._subscription = await self.nc.subscribe(
            self._inbox, cb=self._on_message, pending_msgs_limit=0, pending_bytes_limit=0
        )
        if stop is not None:
            self._stop = stop
            self._stop_watch = asyncio.create_task(self._wake_on(stop))
        await self._ask()
        return self

    async def close(self) -> None:
        """Stop asking; what is held and not taken goes back to the server for redelivery now."""
        subscription, self._subscription = self._subscription, None
        self._wake()
        if self._stop_watch is not None:
            self._stop_watch.cancel()
        if subscription is not None:
            try:
                await subscription.unsubscribe()
            except Exception:  # the connection is closing
                pass
        while self._buffer:
            message = self._buffer.popleft()
            try:
                async with asyncio.timeout(NAK_SECONDS):
                    await message.nak()
            except Exception:  # redelivered after the ack wait instead
                pass

    @property
    def held(self) -> int:
        """Messages delivered here and not yet taken."""
        return len(self._buffer)

    @property
    def owed(self) -> int:
        """Messages asked for and not yet delivered."""
        return sum(request.owed for request in self._open)

    async def next_batch(self, timeout: float = WAIT_SECONDS, limit: int | None = None) -> list[Msg]:
        """Up to ``batch`` (and ``limit``) messages as soon as there is one; [] after ``timeout``,
        on stop, or once closed."""
        deadline = self._loop.time() + timeout
        await self._ask()  # what the last call returned is the caller's by now
        while not self._buffer:
            if self._subscription is None or (self._stop is not None and self._stop.is_set()):
                return []
            now = self._loop.time()
            if now >= deadline:
                return []
            if self._check_silence(now):
                await self._ask()
            self._arrived = self._loop.create_future()
            try:
                async with asyncio.timeout(min(deadline - now, self.heartbeat)):
                    await self._arrived
            except TimeoutError:
                pass
            finally:
                self._arrived = None
        most = self.batch if limit is None else max(0, min(limit, self.batch))
        # No asking here: the caller has not yet taken these on (a runner's slots), so the
        # capacity would still count them as free. The next call asks, before it waits.
        return [self._buffer.popleft() for _ in range(min(most, len(self._buffer)))]

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake()

    # --- the server's side ----------------------------------------------------------------------

    async def _on_message(self, message: Msg) -> None:
        self._last_heard = self._loop.time()
        headers = message.headers
        # A stored message always carries its ack subject; a status never does. Anyone may publish
        # an empty message with a Status header onto a stream: it is a message like any other.
        is_status = not message.data and not message.reply.startswith(ACK_PREFIX)
        status = headers.get(STATUS) if headers and is_status else None
        if status is None:
            if self._open:
                self._open[0].owed -= 1
                if self._open[0].owed <= 0:
                    self._open.popleft()
            self._buffer.append(message)
            self._wake()
            return
        if status == HEARTBEAT:
            return
        # Any other status ends the oldest request (expired, or refused: e.g. too many waiting).
        if self._open:
            ended = self._open[0]
            unserved = _int(headers.get(PENDING_MESSAGES)) if headers else None
            ended.owed -= ended.owed if unserved is None else unserved
            if ended.owed <= 0:
                self._open.popleft()
        if status not in ("404", "408"):
            log.debug("pull request on %s ended: %s %s", self._next_subject, status, headers)
        await self._ask()

    async def _ask(self) -> None:
        """Ask for what is missing to a full batch: when nothing is asked for, or when half a
        batch is missing (fewer, larger requests)."""
        if self._subscription is None:
            return
        now = self._loop.time()
        while self._open and self._open[0].expires_at + EXPIRY_GRACE_SECONDS < now:
            self._open.popleft()
        room = self.batch if self.capacity is None else min(self.batch, self.capacity())
        owed = self.owed
        missing = room - owed - len(self._buffer)
        if missing < 1 or (owed and missing < self.batch // 2):
            return
        request = {
            "batch": missing,
            "expires": int(self.expires * 1e9),
            "idle_heartbeat": int(self.heartbeat * 1e9),
        }
        self._open.append(OpenRequest(now + self.expires, missing))
        try:
            await self.nc.publish(self._next_subject, json.dumps(request).encode(), reply=self._inbox)
        except Exception as exc:  # disconnected: the silence check asks again
            log.debug("pull request on %s not sent: %s", self._next_subject, exc)

    def _check_silence(self, now: float) -> bool:
        """Forget the open requests when nothing was heard on them for a while; True if it did."""
        if self._open and now - self._last_heard > SILENT_HEARTBEATS * self.heartbeat:
            log.debug("pull requests on %s went silent; asking again", self._next_subject)
            self._open.clear()
            self._last_heard = now
            return True
        return False

    def _wake(self) -> None:
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
