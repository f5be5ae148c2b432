"""The aiohttp application: middlewares (errors, auth, metrics), routes, and the process main."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from nats.aio.client import Client

from proto import codec
from proto.control import Heartbeat
from services import VERSION
from services.common import natsio
from services.common.clock import utcnow
from services.common.ids import new_instance_id
from services.common.presence import ServiceRegistry, announce_forever, hostname
from services.gateway.context import GATEWAY, Gateway
from services.gateway.dashboard import web as dashboard
from services.gateway.errors import ApiError, error_response, from_body
from services.gateway.ids import ids_middleware
from services.gateway.metrics import HttpMetrics
from services.gateway.openapi import build_spec
from services.gateway.routes import ENDPOINTS, Endpoint
from services.gateway.scopes import GRANTED, SUBMIT, Tokens, require, require_any_submit
from services.gateway.settings import GatewaySettings
from services.gateway.store_client import StoreClient, StoreReplyError

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON error body; nothing a client sends yields a 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except StoreReplyError as exc:
        return from_body(exc.body)
    except web.HTTPMethodNotAllowed as exc:
        allowed = allowed_methods(request.path) or set(exc.allowed_methods)
        return web.Response(
            status=405,
            body=codec.encode(
                {
                    "error": {
                        "code": "method_not_allowed",
                        "message": f"{request.method} is not allowed on {request.path}",
                    }
                }
            ),
            content_type="application/json",
            headers={"Allow": ", ".join(sorted(allowed))},
        )
    except web.HTTPRequestEntityTooLarge:
        return error_response("payload_too_large", "the body is too large")
    except web.HTTPNotFound:
        return error_response("not_found", f"no endpoint {request.method} {request.path}; see /api/docs")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.Response(
            status=exc.status,
            body=codec.encode({"error": {"code": "http_error", "message": exc.reason}}),
            content_type="application/json",
        )
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.Response(
            status=500,
            body=codec.encode({"error": {"code": "internal", "message": "internal error; it has been logged"}}),
            content_type="application/json",
        )


def allowed_methods(path: str) -> set[str]:
    """Methods of the endpoint a path names; a fixed path (/api/tasks/isolated) wins over a
    template that also matches it (/api/tasks/{task_id})."""
    fixed = {e.method for e in ENDPOINTS if e.path == path}
    if fixed:
        return fixed
    parts = path.strip("/").split("/")
    return {
        e.method
        for e in ENDPOINTS
        if len(e.path.strip("/").split("/")) == len(parts)
        and all(t.startswith("{") or t == p for t, p in zip(e.path.strip("/").split("/"), parts, strict=False))
    }


ENDPOINT_OF: dict[tuple[str, str], Endpoint] = {(e.method, e.path): e for e in ENDPOINTS}


def endpoint_of(request: web.Request) -> Endpoint | None:
    """The route-table entry the request matched (None: an unknown path, the docs, the OpenAPI document)."""
    route = request.match_info.route
    resource = route.resource
    return None if resource is None else ENDPOINT_OF.get((route.method, resource.canonical))


def auth_middleware(tokens: Tokens) -> Callable[..., Awaitable[web.StreamResponse]]:
    """When tokens are set: ``Authorization: Bearer <token>`` on every path but public ones (401), and
    the scope the route table names (403); a submission's scope is checked once its body is read."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = endpoint_of(request)
        if not tokens or (endpoint is not None and endpoint.public) or dashboard.is_public(request.path):
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        granted = tokens.scopes_of(given.strip()) if scheme.lower() == "bearer" else None
        if granted is None:
            return error_response(
                "unauthorized",
                "a valid 'Authorization: Bearer <token>' header is required",
                headers={"WWW-Authenticate": 'Bearer realm="taskmesh"'},
            )
        request[GRANTED] = granted
        if endpoint is not None:
            what = f"{endpoint.method} {endpoint.path}"
            if endpoint.scope == SUBMIT:
                require_any_submit(request, what)
            else:
                require(request, endpoint.scope, what)
        return await handler(request)

    return middleware


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = 499  # the client hung up (nginx's code): not a server error
        raise
    finally:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        request.app[GATEWAY].metrics.observe(request.method, route, status, time.perf_counter() - started)


def create_app(gateway: Gateway) -> web.Application:
    """The application, with the whole URL table registered."""
    settings = gateway.settings
    tokens = settings.tokens()
    app = web.Application(
        client_max_size=settings.max_body_bytes + 1024,
        middlewares=[metrics_middleware, errors_middleware, auth_middleware(tokens), ids_middleware],
    )
    app[GATEWAY] = gateway
    spec = build_spec(auth=bool(tokens))
    spec_body = codec.encode(spec)

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(body=spec_body, content_type="application/json")

    for endpoint in ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
    app.router.add_get("/api/openapi.json", openapi)
    dashboard.add_routes(app)
    return app


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a client's malformed HTTP with a traceback, as if it were our error: one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        problem = record.exc_info[1] if record.exc_info else None
        if isinstance(problem, HttpProcessingError):
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "malformed HTTP request rejected: %s", (str(problem).splitlines()[0],)
        return True


async def main(settings: GatewaySettings, stop: asyncio.Event) -> None:
    """Serve HTTP at once (503s until NATS answers); stop cleanly on SIGTERM."""
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    instance_id = new_instance_id()
    started_at = utcnow()
    gateway = Gateway(
        settings=settings,
        nc=Client(),
        store=StoreClient(Client(), settings.store_timeout_seconds),
        registry=ServiceRegistry(),
        metrics=HttpMetrics(),
    )
    # handler_cancellation: a client that hangs up frees its wait or follow place at once
    runner = web.AppRunner(create_app(gateway), access_log=None, shutdown_timeout=5, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True)
    await site.start()
    log.info(
        "gateway listening",
        extra={
            "address": f"http://{settings.http_host}:{settings.http_port}",
            "bearer_tokens": len(settings.tokens().entries),
        },
    )
    try:
        nc = await natsio.connect(settings, f"taskmesh-gateway-{instance_id}", stop, user="gateway")
    except ConnectionAbortedError:
        await runner.cleanup()
        return
    gateway.nc = nc
    gateway.store = StoreClient(nc, settings.store_timeout_seconds)
    await gateway.registry.follow(nc)

    def heartbeat() -> Heartbeat:
        return Heartbeat(
            service="gateway",
            instance_id=instance_id,
            host=hostname(),
            version=VERSION,
            started_at=started_at,
            sent_at=utcnow(),
        )

    beats = asyncio.create_task(announce_forever(nc, heartbeat, settings.heartbeat_interval, stop))
    await stop.wait()
    log.info("stopping: finishing requests in progress")
    gateway.stopping.set()
    await site.stop()
    await runner.cleanup()
    await beats
    try:
        await nc.drain()
    except Exception:  # already closed
        await nc.close()
