"""Control and presence messages on core NATS (not stored): cancel broadcasts, heartbeats, pings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta, Struct

PING_ALIVE: Final = b"alive"
"""The answer of a store or scheduler to a ping on its lease subject: it is alive."""

PingAnswer = Literal["alive", "holding", "free"]
"""A runner's answer to a ping: ``alive`` to one that names no run; ``holding`` while it holds the
run named (waiting for it, running it or reporting it), ``free`` when it does not."""

PING_NONCE_BYTES: Final = 16
"""Random bytes in every runner ping, so that an answer cannot be replayed to another ping."""
MAX_PING_RUN_ID_CHARS: Final = 512
PONG_SIGNATURE_BYTES: Final = 64
"""An Ed25519 signature."""
PONG_DOMAIN: Final = "taskmesh.runner.pong.v1"
"""Bound into every signed answer, so that a runner's signature means this and nothing else."""


class RunnerPing(Struct, kw_only=True, omit_defaults=True):
    """A question to one runner on ``subjects.runner_ping(id)``: alive? holding ``run_id``?

    All runners share one NATS user, so any of them can receive this subject; only the runner
    addressed can answer it in a way the asker accepts (``RunnerPong``)."""

    nonce: Annotated[bytes, Meta(min_length=PING_NONCE_BYTES, max_length=PING_NONCE_BYTES)]
    run_id: Annotated[str, Meta(max_length=MAX_PING_RUN_ID_CHARS)] | None = None


class RunnerPong(Struct, kw_only=True):
    """A runner's answer, signed with the private key whose public half is its id."""

    answer: PingAnswer
    signature: Annotated[bytes, Meta(min_length=PONG_SIGNATURE_BYTES, max_length=PONG_SIGNATURE_BYTES)]


def pong_statement(subject: str, ping: RunnerPing, answer: str) -> bytes:
    """The bytes a runner signs to give ``answer`` to ``ping`` received on ``subject``.

    The subject names the runner and the nonce names the ping, so an answer counts for this ping
    of this runner only. A tuple in msgpack keeps the fields apart whatever bytes they hold."""
    return msgspec.msgpack.encode((PONG_DOMAIN, subject, ping.nonce, ping.run_id or "", answer))


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
