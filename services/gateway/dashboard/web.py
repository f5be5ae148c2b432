"""Routes of the dashboard's static files; they hold no data, so they are public like /api/health."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("static")
PREFIX = "/static/"
PAGES = {"/": "index.html", "/api/docs": "reference.html"}
IMMUTABLE = "public, max-age=31536000, immutable"
"""Vendored files carry their version in their name, so a browser may keep them for a year."""
REVALIDATE = "no-cache"
"""The dashboard's own files change with the gateway: the browser revalidates (ETag/Last-Modified)."""
SECURITY_HEADERS = {
    # no inline scripts, no third-party origin: a script injected through task data cannot run
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".md": "text/markdown",
    ".txt": "text/plain",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


def is_public(path: str) -> bool:
    """Whether ``path`` is a dashboard file (served without a token: it is the same for everyone)."""
    return path in PAGES or path.startswith(PREFIX)


async def page(request: web.Request) -> web.FileResponse:
    """The HTML shell of the app (``/``) or of the API reference (``/api/docs``)."""
    return _file(STATIC / PAGES[request.path], REVALIDATE)


async def static_file(request: web.Request) -> web.FileResponse:
    """A file under ``static/``; nothing outside it, whatever the path says."""
    relative = request.match_info["path"]
    path = (STATIC / relative).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file():
        raise web.HTTPNotFound()
    return _file(path, IMMUTABLE if relative.startswith("vendor/") else REVALIDATE)


def _file(path: Path, cache: str) -> web.FileResponse:
    content_type = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return web.FileResponse(
        path,
        headers={
            "Cache-Control": cache,
            "Content-Type": f"{content_type}; charset=utf-8" if content_type.startswith("text/") else content_type,
            **SECURITY_HEADERS,
        },
    )


def add_routes(app: web.Application) -> None:
    """Mount the app at ``/``, the API reference at ``/api/docs`` and the files at ``/static/``."""
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get(PREFIX + "{path:.+}", static_file)
