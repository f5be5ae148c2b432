"""HTTP handlers of ``/api/secrets``: the value is sealed here, so no message carries it in plaintext."""

from __future__ import annotations

from aiohttp import web

from proto import codec, secrets, subjects
from proto.errors import FieldError
from services.common.secret_keys import SecretKeyError
from services.gateway.context import GATEWAY
from services.gateway.errors import ApiError
from services.gateway.views import json_body, json_bytes, store


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    try:
        secrets.check_name(name)
    except FieldError as exc:
        raise ApiError("invalid_field", exc.message, "name") from None
    return name


def _value(body: bytes) -> str:
    try:
        value = codec.decode_request(secrets.SecretValueBody, body).value
        secrets.check_value(value)
    except FieldError as exc:
        raise ApiError(exc.code, exc.message, exc.field) from None
    return value


async def put_secret(request: web.Request) -> web.Response:
    name = _name(request)
    value = _value(await json_body(request))
    try:
        sealed = request.app[GATEWAY].settings.secret_keys().seal(name, value)
    except SecretKeyError as exc:
        raise ApiError("unavailable", f"secrets cannot be stored: {exc}") from None
    payload = codec.encode(secrets.PutSecretRequest(name=name, sealed=sealed))
    return json_bytes(await store(request).raw(subjects.PUT_SECRET, payload))


async def list_secrets(request: web.Request) -> web.Response:
    return json_bytes(await store(request).raw(subjects.LIST_SECRETS))


async def delete_secret(request: web.Request) -> web.Response:
    payload = codec.encode(secrets.SecretRef(name=_name(request)))
    return json_bytes(await store(request).raw(subjects.DELETE_SECRET, payload))
