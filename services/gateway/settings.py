"""Gateway settings (``TASKMESH_*``)."""

from __future__ import annotations

from services.common.settings import ServiceSettings


class GatewaySettings(ServiceSettings, kw_only=True, forbid_unknown_fields=True):
    """Where to listen, who may call, how big a body may be."""

    http_host: str = "127.0.0.1"
    http_port: int = 5001
    api_tokens: list[str] = []
    """Bearer tokens; when any is set, every endpoint but /api/health needs one."""
    max_body_bytes: int = 1024 * 1024
    store_timeout_seconds: float = 5.0
    max_wait_seconds: float = 300.0
    max_waiters: int = 1000
    """Waits (`/wait`, submit with `?wait=`) open at once; past it a 429 `too_many_waiters`."""
    max_followers: int = 200
    """Log follows (`/logs?follow=true`) open at once; past it a 429 `too_many_waiters`."""
