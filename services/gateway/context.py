"""What the gateway's handlers share, under one typed application key."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web
from nats.aio.client import Client

from services.common.presence import ServiceRegistry
from services.gateway.admission import Admission
from services.gateway.metrics import HttpMetrics
from services.gateway.settings import GatewaySettings
from services.gateway.store_client import StoreClient


@dataclass
class Gateway:
    """Settings, the NATS connection and what is built on it."""

    settings: GatewaySettings
    nc: Client
    store: StoreClient
    registry: ServiceRegistry
    metrics: HttpMetrics
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on SIGTERM: long-lived responses (log follows) end so shutdown does not wait on them."""
    waiters: Admission = field(init=False)
    """Waits in progress (``/wait``, ``?wait=`` on submit), capped by ``max_waiters``."""
    followers: Admission = field(init=False)
    """Log follows in progress, capped by ``max_followers``."""

    def __post_init__(self) -> None:
        self.waiters = Admission("waits", self.settings.max_waiters)
        self.followers = Admission("follows", self.settings.max_followers)


GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
