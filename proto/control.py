"""Control and presence messages on core NATS (not stored): cancel broadcasts and heartbeats."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from msgspec import Struct

PING_ALIVE: Final = b"alive"
"""A runner's answer to an empty ping on ``runner_ping(id)``: it is alive."""
PING_HOLDING: Final = b"holding"
"""Its answer to a ping whose body is a run id, while it holds that run (waiting, running, reporting)."""
PING_FREE: Final = b"free"
"""Its answer to a ping whose body is a run id it does not hold."""


class CancelRun(Struct, kw_only=True, omit_defaults=True):
    """Kill a run wherever it executes. ``run_id`` None means every run of the task."""

    task_id: str
    run_id: str | None = None
    reason: str = "cancelled by user"


class SlotUsage(Struct, kw_only=True):
    """How many runs a runner pool can hold and how many it holds now."""

    total: int
    busy: int


class SandboxStatus(Struct, kw_only=True, omit_defaults=True):
    """Whether a runner can start sandboxes, and if not, why (in the seed's words)."""

    usable: bool
    backend: str = "docker"
    detail: str = ""
    image: str | None = None
    pool_ready: int = 0


class Heartbeat(Struct, kw_only=True, omit_defaults=True):
    """A service instance saying it is alive; sent every few seconds."""

    service: str
    instance_id: str
    host: str
    version: str
    started_at: datetime
    sent_at: datetime
    leader: bool | None = None
    slots: dict[str, SlotUsage] = {}
    sandbox: SandboxStatus | None = None
    runs_finished: int = 0
    consumer_restarts: dict[str, int] = {}
    """Consumer loops that died and were restarted since the instance started, by consumer."""
