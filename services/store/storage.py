"""Refuse new tasks before JetStream is full: a full disk must stop submissions (a clear 507),
not the writes of tasks already accepted (a stalled store, or lost records)."""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext

from services.common.lifecycle import sleep_or_stop
from services.store.commands import Commands

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 5.0
"""How often the store reads JetStream's usage (one account-info request)."""
SOFT_SHARE = 0.95
"""Of the account's own JetStream limit: room left for what accepted tasks still write."""


def full_reason(used: int, limit: int) -> str | None:
    """Why submissions stop at ``used`` bytes of ``limit`` (0: no limit), or None."""
    if limit <= 0 or used < limit:
        return None
    return (
        f"JetStream holds {used:,} bytes, at its limit of {limit:,}: no new tasks until retention or an "
        "operator frees space (tasks already accepted still run)"
    )


async def watch_storage(js: JetStreamContext, commands: Commands, limit_bytes: int, stop: asyncio.Event) -> None:
    """Set or clear ``commands.storage_full`` from JetStream's usage, every few seconds, until ``stop``."""
    while True:
        try:
            info = await js.account_info()
            account_limit = info.limits.max_storage or 0
            limit = limit_bytes or (int(account_limit * SOFT_SHARE) if account_limit > 0 else 0)
            reason = full_reason(info.storage, limit)
            if (reason is None) != (commands.storage_full is None):
                if reason:
                    log.warning("refusing new tasks: %s", reason)
                else:
                    log.info("accepting new tasks again", extra={"used_bytes": info.storage, "limit_bytes": limit})
            commands.storage_full = reason
        except Exception as exc:  # NATS away: keep the last verdict
            log.debug("JetStream usage not read: %s", exc)
        if await sleep_or_stop(stop, CHECK_EVERY_SECONDS):
            return
