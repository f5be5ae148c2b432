"""Identifiers: time-ordered task ids (UUIDv7 layout) and short instance ids."""

from __future__ import annotations

import os
import secrets
import time
import uuid

_last_ms = 0
_counter = 0


def new_task_id() -> str:
    """A UUIDv7: 48-bit millisecond timestamp, then randomness; sorts by creation time.

    Within one millisecond a counter in the high random bits keeps ids of one process ordered.
    """
    global _last_ms, _counter
    now_ms = time.time_ns() // 1_000_000
    if now_ms <= _last_ms:
        now_ms = _last_ms
        _counter += 1
    else:
        _last_ms = now_ms
        _counter = secrets.randbits(8)
    rand_a = _counter & 0xFFF
    rand_b = secrets.randbits(62)
    value = (now_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def new_event_id() -> str:
    """A random id for an event (also its Nats-Msg-Id when no natural one exists)."""
    return uuid.uuid4().hex


def new_instance_id() -> str:
    """12 hex characters naming one process of a service (safe as a NATS subject token)."""
    return f"{os.getpid() & 0xFFFF:04x}{secrets.token_hex(4)}"
