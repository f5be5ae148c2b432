"""The error shape every client sees, over HTTP and over NATS."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

ErrorCode = Literal[
    "invalid_json",
    "invalid_field",
    "unsupported_media_type",
    "payload_too_large",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "conflict",
    "unavailable",
    "timeout",
    "http_error",
    "internal",
    "too_many_waiters",
    "forbidden",
    "insufficient_storage",
]
"""``invalid_*`` → 400, ``unsupported_media_type`` → 415, ``payload_too_large`` → 413,
``unauthorized`` → 401, ``forbidden`` (the token lacks a scope) → 403, ``not_found`` → 404, ``conflict`` → 409, ``too_many_waiters`` → 429,
``unavailable``/``timeout`` → 503, ``insufficient_storage`` (JetStream is full: no new tasks) → 507."""


class ErrorDetail(Struct, kw_only=True, omit_defaults=True):
    """What went wrong, for people (``message``) and programs (``code``, ``field``)."""

    code: ErrorCode
    message: str
    field: str | None = None


class ErrorBody(Struct, kw_only=True):
    """``{"error": {"code", "message", "field"}}`` — the body of every error reply."""

    error: ErrorDetail


class FieldError(ValueError):
    """A submitted field is wrong; ``field`` names it (top-level name, as the client sent it)."""

    def __init__(self, field: str | None, message: str, code: ErrorCode = "invalid_field") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code: ErrorCode = code

    def body(self) -> ErrorBody:
        return ErrorBody(error=ErrorDetail(code=self.code, message=self.message, field=self.field))


def error_body(code: ErrorCode, message: str, field: str | None = None) -> ErrorBody:
    """Shorthand for building an error reply."""
    return ErrorBody(error=ErrorDetail(code=code, message=message, field=field))
