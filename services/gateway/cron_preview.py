"""``GET /api/cron/preview``: the next fire times of a cron expression, to check it before saving."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from proto import codec, cron
from services.common.clock import utcnow
from services.gateway.errors import ApiError

MAX_EXPRESSION_CHARS = 200
MAX_COUNT = 20


class CronPreview(msgspec.Struct, kw_only=True):
    """The next ``count`` fire instants of ``expression`` in ``timezone``, in UTC and in local time."""

    expression: str
    timezone: str
    fires: list[datetime]
    """UTC instants, oldest first."""
    local: list[str]
    """The same instants as wall times of ``timezone`` (RFC 3339 with the zone's offset)."""


CountParam = Annotated[int, Meta(ge=1, le=MAX_COUNT)]


def _count(raw: str | None) -> int:
    if raw is None:
        return 5
    try:
        return msgspec.convert(int(raw), CountParam)
    except (ValueError, msgspec.ValidationError):
        raise ApiError("invalid_field", f"count must be an integer from 1 to {MAX_COUNT}", "count") from None


async def preview(request: web.Request) -> web.Response:
    """The next fire times, or a 400 naming ``expression``, ``timezone`` or ``count``."""
    unknown = set(request.query) - {"expression", "timezone", "count"}
    if unknown:
        name = sorted(unknown)[0]
        raise ApiError("invalid_field", f"unknown parameter {name!r}", name)
    expression = request.query.get("expression", "")
    zone_name = request.query.get("timezone", "UTC")
    count = _count(request.query.get("count"))
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ApiError("invalid_field", f"expression is longer than {MAX_EXPRESSION_CHARS} characters", "expression")
    try:
        zone = cron.load_zone(zone_name)
    except cron.CronError as exc:
        raise ApiError("invalid_field", str(exc), "timezone") from None
    try:
        schedule = cron.CronSchedule(expression, zone_name)
    except cron.CronError as exc:
        raise ApiError("invalid_field", str(exc), "expression") from None
    fires: list[datetime] = []
    cursor = utcnow()
    for _ in range(count):
        nxt = schedule.next_after(cursor)
        if nxt is None:
            break
        fires.append(nxt)
        cursor = nxt
    reply = CronPreview(
        expression=schedule.expression,
        timezone=zone_name,
        fires=fires,
        local=[fire.astimezone(zone).isoformat() for fire in fires],
    )
    return web.Response(body=codec.encode(reply), content_type="application/json")
