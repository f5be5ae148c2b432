"""What the gateway's handlers share, under one typed application key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from nats.aio.client import Client

from services.common.presence import ServiceRegistry
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


GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
