"""A leader lease (the scheduler's, the store's): a KV key with a bucket TTL, created by one
holder and renewed by CAS; and the loop both services run on it (``stand_by_and_lead``).

A renewal can fail for a moment without the lease being lost: while the bucket's stream elects
a leader (4-9 s on a cluster) a CAS gets no-responders, a timeout or a 503 (error code 10163
after a leader change). The key expires only TTL after the last successful write, so the holder
keeps leading while that write is younger than TTL minus a margin, and retries meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from proto import control, streams
from services.common.lifecycle import sleep_or_stop
from services.common.publishing import RETRYABLE

log = logging.getLogger(__name__)

SAFETY_MARGIN = timedelta(seconds=2.5)
"""Stop leading this long before the key could expire: clocks, a slow loop, a late standby."""
ATTEMPT_TIMEOUT = timedelta(seconds=2)
"""One CAS attempt's wait (a reply lost with a dying node must not eat the whole TTL)."""
RETRY_PAUSE = timedelta(milliseconds=250)
RENEW_EVERY = streams.LEASE_TTL / 4
"""How often a leader renews: three renewals may fail (an election) before the margin is reached."""
STANDBY_POLL = timedelta(seconds=1)
"""How often a standby tries to take the lease: it leads within the TTL plus this after a crash."""
PING_TIMEOUT = timedelta(seconds=1)


class LeaseLost(Exception):
    """This process no longer holds the lease: it must not write what only the leader writes."""


class LeaderLease:
    """Who may fire. Only the holder of the key's current revision can renew it; when it stops
    renewing, the bucket's TTL removes the key and a standby's ``create`` succeeds."""

    def __init__(
        self, kv: KeyValue, key: str, holder: str, ttl: timedelta | None = None, connection: Client | None = None
    ) -> None:
        self.kv = kv
        self.key = key
        self.holder = holder
        self.revision: int | None = None
        self.ttl = ttl
        """The bucket's TTL, read from the server at the first acquisition unless given."""
        self.renewed_at = 0.0
        """time.monotonic() of the last write that the server acknowledged."""
        self.connection = connection
        """The holder's NATS connection: no writes while it is down (see ``connected``)."""
        self._renewed_on = self._connection_id()

    def _connection_id(self) -> int:
        return int(self.connection.stats["reconnects"]) if self.connection is not None else 0

    def connected(self) -> bool:
        """False while the holder's connection is down: it must not write then.

        While it is down its ping has no responders, so a standby may take the lease at once
        (``take_from_the_dead``), and writes buffered meanwhile would land after that. Once the
        connection is back the holder renews at once (``reconnected_since_renewal``): a lease taken
        meanwhile is then found gone within a round trip.
        """
        return self.connection is None or self.connection.is_connected

    def reconnected_since_renewal(self) -> bool:
        """True when the connection was re-established after the last successful renewal."""
        return self._connection_id() != self._renewed_on

    def _succeeded(self, started: float, connection_id: int) -> None:
        self.renewed_at = started
        self._renewed_on = connection_id

    async def try_acquire(self) -> bool:
        """Become the holder if nobody holds the lease."""
        if not await self._know_ttl():
            return False
        started, connection_id = time.monotonic(), self._connection_id()
        try:
            self.revision = await self.kv.create(self.key, self.holder.encode())
            self._succeeded(started, connection_id)
            return True
        except Exception:  # KeyWrongLastSequenceError (held), or NATS unreachable
            pass
        return await self._adopt_if_ours()

    async def _know_ttl(self) -> bool:
        if self.ttl is None:
            try:
                self.ttl = timedelta(seconds=(await self.kv.status()).ttl or 0)
            except Exception:  # NATS away: try again next time
                return False
        return True

    def valid_for(self) -> float:
        """Seconds this holder may still lead without another successful renewal (<= 0: none)."""
        return self._time_left() if self.connected() else 0.0

    def _time_left(self) -> float:
        """Seconds until the key could expire, less the margin, by the last successful write."""
        if self.revision is None or not self.ttl:
            return 0.0
        return self.renewed_at + (self.ttl - SAFETY_MARGIN).total_seconds() - time.monotonic()

    def check(self) -> None:
        """The fence before a leader's write: raises LeaseLost unless the lease is still valid."""
        if self.valid_for() <= 0:
            raise LeaseLost(f"the {self.key!r} lease is not held by {self.holder}")

    async def renew(self) -> bool:
        """Extend the lease; False means it is lost (another holder, or no success for too long)."""
        if self.revision is None:
            return False
        failures = 0
        while True:
            started, connection_id = time.monotonic(), self._connection_id()
            # an attempt never outlasts the lease: a reply after that would come too late to lead on
            wait = min(ATTEMPT_TIMEOUT.total_seconds(), self._time_left())
            if wait <= 0:
                log.warning("lease expired: no renewal for %.1f s", started - self.renewed_at)
                self.revision = None
                return False
            try:
                self.revision = await asyncio.wait_for(
                    self.kv.update(self.key, self.holder.encode(), last=self.revision), wait
                )
                self._succeeded(started, connection_id)
                if failures:
                    log.info("lease renewed after %d failed attempts", failures)
                return True
            except KeyWrongLastSequenceError:
                # Taken by another, or our own earlier attempt landed though its reply was lost.
                if await self._adopt_if_ours():
                    return True
                log.warning("lease taken by another holder")
                self.revision = None
                return False
            except RETRYABLE as exc:  # an election, a 503 (10163), a lost reply: transient
                failures += 1
                if failures == 1:
                    log.warning(
                        "lease renewal failed (%s); retrying while it is valid (%.1f s)",
                        type(exc).__name__,
                        self._time_left(),
                    )
            except Exception as exc:  # anything else: not ours to guess about
                log.warning("lease renewal failed: %s", type(exc).__name__)
                self.revision = None
                return False
            await asyncio.sleep(max(0.0, min(RETRY_PAUSE.total_seconds(), self._time_left())))

    async def holder_now(self) -> str | None:
        """Who holds the lease according to the server (None: nobody, or NATS away)."""
        try:
            entry = await self.kv.get(self.key)
        except Exception:  # not found (free), deleted, or NATS away
            return None
        return entry.value.decode(errors="replace") if entry.value else None

    async def take_from(self, dead_holder: str) -> bool:
        """Take the lease from a holder known to be dead, without waiting out the TTL.

        A compare-and-set on the revision that holds ``dead_holder``: if the holder renewed (it
        was not dead) or another took it first, the write fails and nothing changes.
        """
        if not await self._know_ttl():
            return False
        if not await self._write_over(dead_holder):
            self.revision = None
            return False
        log.info("lease taken over from a holder that is gone", extra={"key": self.key, "from": dead_holder})
        return True

    async def _adopt_if_ours(self) -> bool:
        """True when the key holds our name and we could write it again (our write stood:
        we stopped leading for another reason, or a reply of ours was lost)."""
        return await self._write_over(self.holder)

    async def _write_over(self, expected_holder: str) -> bool:
        """Write our name over the key's current revision if that revision names ``expected_holder``."""
        try:
            entry = await self.kv.get(self.key)
            if entry.value != expected_holder.encode() or entry.revision is None:
                return False
            started, connection_id = time.monotonic(), self._connection_id()
            self.revision = await asyncio.wait_for(
                self.kv.update(self.key, self.holder.encode(), last=entry.revision), ATTEMPT_TIMEOUT.total_seconds()
            )
        except Exception:  # gone, renewed, taken, or NATS away
            return False
        self._succeeded(started, connection_id)
        return True

    async def release(self) -> None:
        """Give the lease up now, so a standby need not wait for the TTL."""
        if self.revision is None:
            return
        try:
            await self.kv.delete(self.key, last=self.revision)
        except Exception as exc:  # already expired or taken
            log.debug("lease release: %s", exc)
        self.revision = None


async def answer_pings(nc: Client, subject: str) -> None:
    """Answer on this process's ping ``subject`` for as long as it lives (the connection's)."""

    async def pong(msg: Msg) -> None:
        if msg.reply:
            await nc.publish(msg.reply, control.PING_ALIVE)

    await nc.subscribe(subject, cb=pong)


async def take_from_the_dead(nc: Client, lease: LeaderLease, ping_subject: Callable[[str], str]) -> bool:
    """Take the lease at once when its holder's process is gone (a kill -9 and a restart: the
    successor need not wait out the TTL).

    Only "no responders" on the holder's ping subject counts as gone: a holder that is slow, or
    whose connection the server has not yet seen die, answers late or times out, and its lease
    then runs out by the TTL as usual.
    """
    holder = await lease.holder_now()
    if holder is None or holder == lease.holder:
        return False
    try:
        await nc.request(ping_subject(holder), b"", timeout=PING_TIMEOUT.total_seconds())
        return False
    except NoRespondersError:
        return await lease.take_from(holder)
    except Exception:  # a timeout, NATS away: not known to be gone
        return False


async def stand_by_and_lead(
    nc: Client,
    lease: LeaderLease,
    ping_subject: Callable[[str], str],
    lead: Callable[[asyncio.Event], Awaitable[None]],
    leading: asyncio.Event,
    changed: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """Stand by until the lease is ours, then ``lead(until)`` while it is held; again, until ``stop``.

    ``until`` is set when the lease is lost or ``stop`` is set: ``lead`` must then stop writing and
    return. ``leading`` is set while this process leads, and ``changed`` each time that flips (its
    heartbeats say so at once). The lease is released at the end, so a standby need not wait for
    the TTL.
    """
    await answer_pings(nc, ping_subject(lease.holder))
    while not stop.is_set():
        if not await lease.try_acquire() and not await take_from_the_dead(nc, lease, ping_subject):
            await sleep_or_stop(stop, STANDBY_POLL.total_seconds())
            continue
        leading.set()
        changed.set()
        log.info("leading", extra={"instance": lease.holder})
        until = asyncio.Event()
        keeper = asyncio.create_task(keep_lease(lease, until, stop), name="lease")
        try:
            await lead(until)
        except Exception:  # NATS trouble while loading: stand by, and lead again if the lease allows
            log.exception("leading failed")
            await sleep_or_stop(stop, 1.0)
        finally:
            until.set()
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            leading.clear()
            changed.set()
        if not stop.is_set():
            log.warning("standing by", extra={"lease_held": lease.valid_for() > 0})
    await lease.release()


async def keep_lease(lease: LeaderLease, until: asyncio.Event, stop: asyncio.Event) -> None:
    """Renew every RENEW_EVERY, and at once after a reconnect (a lease taken while the connection
    was down is found gone); set ``until`` when a renewal fails for good or ``stop`` is set."""
    try:
        while not until.is_set():
            waits = [asyncio.ensure_future(until.wait()), asyncio.ensure_future(stop.wait())]
            done, pending = await asyncio.wait(
                waits, timeout=RETRY_PAUSE.total_seconds(), return_when="FIRST_COMPLETED"
            )
            for waiting in pending:
                waiting.cancel()
            if done:
                break
            due = time.monotonic() - lease.renewed_at >= RENEW_EVERY.total_seconds()
            if (due or lease.reconnected_since_renewal()) and not await lease.renew():
                break
    finally:
        until.set()
