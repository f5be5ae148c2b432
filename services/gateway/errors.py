"""HTTP errors: every one is JSON ``{"error": {"code", "message", "field"}}`` with the right status."""

from __future__ import annotations

from aiohttp import web

from proto import codec
from proto.errors import ErrorBody, ErrorCode, error_body

STATUS_OF: dict[str, int] = {
    "invalid_json": 400,
    "invalid_field": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "too_many_waiters": 429,
    "unavailable": 503,
    "timeout": 503,
    "insufficient_storage": 507,
}


def error_response(
    code: ErrorCode, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON error response."""
    return from_body(error_body(code, message, field), headers)


def from_body(body: ErrorBody, headers: dict[str, str] | None = None) -> web.Response:
    """The response for an error body received from the store."""
    return web.Response(
        status=STATUS_OF.get(body.error.code, 400),
        body=codec.encode(body),
        content_type="application/json",
        headers=headers,
    )


class ApiError(Exception):
    """Raised by views; the error middleware turns it into a JSON response."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field

    def response(self) -> web.Response:
        headers = {"Retry-After": "1"} if self.code in ("unavailable", "timeout", "too_many_waiters") else None
        return error_response(self.code, self.message, self.field, headers)
