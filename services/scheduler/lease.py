"""The leader lease: a KV key with a short bucket TTL, created by one holder and renewed by CAS."""

from __future__ import annotations

import logging

from nats.js.kv import KeyValue

log = logging.getLogger(__name__)


class LeaderLease:
    """Who may fire. Only the holder of the key's current revision can renew it; when it stops
    renewing, the bucket's TTL removes the key and a standby's ``create`` succeeds."""

    def __init__(self, kv: KeyValue, key: str, holder: str) -> None:
        self.kv = kv
        self.key = key
        self.holder = holder
        self.revision: int | None = None

    async def try_acquire(self) -> bool:
        """Become the holder if nobody holds the lease."""
        try:
            self.revision = await self.kv.create(self.key, self.holder.encode())
            return True
        except Exception:  # KeyWrongLastSequenceError (held), or NATS unreachable
            pass
        try:
            entry = await self.kv.get(self.key)
        except Exception:
            return False
        if entry.value == self.holder.encode():  # still ours (we stopped leading for another reason)
            self.revision = entry.revision
            return True
        return False

    async def renew(self) -> bool:
        """Extend the lease; False means it is lost (another holder, or NATS unreachable)."""
        if self.revision is None:
            return False
        try:
            self.revision = await self.kv.update(self.key, self.holder.encode(), last=self.revision)
            return True
        except Exception as exc:
            log.warning("lease renewal failed: %s", type(exc).__name__)
            self.revision = None
            return False

    async def release(self) -> None:
        """Give the lease up now, so a standby need not wait for the TTL."""
        if self.revision is None:
            return
        try:
            await self.kv.delete(self.key, last=self.revision)
        except Exception as exc:  # already expired or taken
            log.debug("lease release: %s", exc)
        self.revision = None

