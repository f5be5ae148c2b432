"""``/api/health`` (each dependency, overall ok | degraded | down) and ``/metrics``."""

from __future__ import annotations

from aiohttp import web

from proto import api, codec, subjects
from proto.flow import LimitsReply
from services import VERSION
from services.gateway.context import GATEWAY
from services.gateway.errors import ApiError
from services.gateway.flow_metrics import flow_lines
from services.gateway.store_client import StoreReplyError

CHECK_TIMEOUT_SECONDS = 1.5


async def health(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    checks: dict[str, api.DependencyHealth] = {}
    nc = gateway.nc
    if nc.is_connected:
        checks["nats"] = api.DependencyHealth(status="ok", detail=nc.connected_url.netloc if nc.connected_url else "")
        try:
            info = await nc.jetstream(timeout=CHECK_TIMEOUT_SECONDS).account_info()
            checks["jetstream"] = api.DependencyHealth(status="ok", detail=f"{info.streams} streams")
        except Exception as exc:  # JetStream disabled, or the server busy
            checks["jetstream"] = api.DependencyHealth(
                status="down", detail=f"JetStream not answering: {type(exc).__name__}"
            )
    else:
        checks["nats"] = api.DependencyHealth(status="down", detail="not connected to NATS")
        checks["jetstream"] = api.DependencyHealth(status="down", detail="not connected to NATS")
    registry = gateway.registry
    stores = registry.alive("store")
    try:
        store = await gateway.store.call(
            subjects.STORE_HEALTH, api.StatsRequest(), api.StoreHealth, timeout=CHECK_TIMEOUT_SECONDS
        )
        standby = sum(1 for s in stores if not s.leader)
        checks["store"] = api.DependencyHealth(
            status="ok", count=len(stores), detail=f"{store.tasks} tasks, {standby} standby"
        )
    except (ApiError, StoreReplyError) as exc:
        detail = str(exc) if not stores else f"{exc} ({len(stores)} standing by, none leads yet)"
        checks["store"] = api.DependencyHealth(status="down", count=len(stores), detail=detail)

    schedulers = registry.alive("scheduler")
    leaders = [s for s in schedulers if s.leader]
    if leaders:
        checks["scheduler"] = api.DependencyHealth(
            status="ok", count=len(schedulers), detail=f"leader {leaders[0].instance_id}, {len(schedulers) - 1} standby"
        )
    else:
        checks["scheduler"] = api.DependencyHealth(
            status="down" if not schedulers else "degraded",
            count=len(schedulers),
            detail="no scheduler running" if not schedulers else "no leader yet",
        )
    runners = registry.alive("runner")
    if runners:
        free = sum(slots.total - slots.busy for r in runners for slots in r.slots.values())
        checks["runners"] = api.DependencyHealth(status="ok", count=len(runners), detail=f"{free} free slots")
    else:
        checks["runners"] = api.DependencyHealth(
            status="down", count=0, detail="no runner is running: nothing executes"
        )
    usable = [r for r in runners if r.sandbox is not None and r.sandbox.usable]
    if usable:
        checks["sandbox"] = api.DependencyHealth(status="ok", count=len(usable), detail=usable[0].sandbox.image or "")  # type: ignore[union-attr]  # usable holds only runners that reported a sandbox
    else:
        reasons = {r.sandbox.detail for r in runners if r.sandbox is not None}
        checks["sandbox"] = api.DependencyHealth(
            status="degraded",
            count=0,
            detail="; ".join(sorted(reasons)) or "no runner reports a sandbox backend: code tasks cannot run",
        )

    essential = ("nats", "jetstream", "store")
    if any(checks[name].status == "down" for name in essential):
        overall = "down"
    elif any(check.status != "ok" for check in checks.values()):
        overall = "degraded"
    else:
        overall = "ok"
    body = api.Health(status=overall, version=VERSION, checks=checks, runners=runners)
    return web.Response(
        body=codec.encode(body), status=503 if overall == "down" else 200, content_type="application/json"
    )


async def metrics(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    try:
        stats = await gateway.store.call(
            subjects.GET_STATS, api.StatsRequest(), api.Stats, timeout=CHECK_TIMEOUT_SECONDS
        )
    except (ApiError, StoreReplyError):
        stats = None
    try:
        flow: LimitsReply | None = await gateway.store.call(
            subjects.FLOW_LIST_LIMITS, None, LimitsReply, timeout=CHECK_TIMEOUT_SECONDS
        )
    except (ApiError, StoreReplyError):  # no scheduler leader right now: no per-key lines
        flow = None
    text = gateway.metrics.render(stats, (gateway.waiters, gateway.followers))
    text = "\n".join([text.rstrip("\n"), *flow_lines(flow)]) + "\n"
    return web.Response(
        text=text, content_type="text/plain", headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8"
    )
