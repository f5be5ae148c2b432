"""Ids taken from a URL are checked before they reach a NATS subject or a store request."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from services.gateway.errors import ApiError

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What Taskmesh's own ids look like (UUIDs, run ids): one NATS subject token, never a wildcard,
separator or space. Anything else cannot name a task or run, so it is a 400, not a 404."""
ID_SCHEMA = {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}
"""The JSON Schema of an id, for the OpenAPI document."""
PATH_IDS = {"task_id": "id", "run_id": "run_id"}
"""Path parameters that carry ids, with the field name an error reports."""
QUERY_IDS = {"run_id": "run_id"}
"""Query parameters that carry ids."""


def check_id(value: str, field: str) -> None:
    """Raise a 400 naming ``field`` unless ``value`` is a well-formed id."""
    if not ID_PATTERN.fullmatch(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise ApiError(
            "invalid_field", f"{field} {shown!r} is not a valid id (1 to 64 letters, digits, '-' or '_')", field
        )


@web.middleware
async def ids_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every id in the path or query is well-formed before any handler runs."""
    for name, field in PATH_IDS.items():
        if name in request.match_info:
            check_id(request.match_info[name], field)
    for name, field in QUERY_IDS.items():
        for value in request.query.getall(name, []):
            check_id(value, field)
    return await handler(request)
