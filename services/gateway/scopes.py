"""Bearer tokens and their scopes: which token may do what, looked up in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
from aiohttp import web

from proto import bounds
from proto.errors import FieldError
from services.gateway.errors import ApiError

Scope = Literal["read", "submit:api", "submit:code", "admin"]
"""``read`` every GET; ``submit:api`` plain API tasks; ``submit:code`` code and sandboxed (isolated)
tasks, which run arbitrary code; ``admin`` changes to existing tasks and dead letters."""
SCOPES: frozenset[str] = frozenset(typing.get_args(Scope))
SUBMIT = "submit"
"""Route-table value of the submit endpoints: ``submit:code`` or ``submit:api``, decided by the body."""
SUBMIT_SCOPES = frozenset({"submit:api", "submit:code"})
GRANTED: web.RequestKey[frozenset[str]] = web.RequestKey("granted_scopes", frozenset)
"""The scopes of the request's token (all of them when the gateway has no tokens)."""


class TokenError(ValueError):
    """A token entry is malformed; the message never contains the token."""


def _digest(token: str) -> bytes:
    # equal-length digests: compare_digest then leaks neither content nor length
    return hashlib.sha256(token.encode()).digest()


def _scopes(names: list[str], where: str) -> frozenset[str]:
    unknown = [name for name in names if name not in SCOPES]
    if unknown:
        raise TokenError(f"{where}: unknown scope {unknown[0]!r} (scopes: {', '.join(sorted(SCOPES))})")
    return frozenset(names) if names else SCOPES


def parse_env_entry(entry: str, where: str) -> tuple[str, frozenset[str]]:
    """``token`` (every scope, as before scopes existed) or ``token:scope+scope``."""
    token, colon, rest = entry.strip().partition(":")
    if not token:
        raise TokenError(f"{where}: empty token")
    names = [name for name in rest.split("+") if name]
    if colon and not names:
        raise TokenError(f"{where}: no scope after ':'")
    return token, _scopes(names, where)


def parse_file(text: str, where: str) -> list[tuple[str, frozenset[str]]]:
    """One ``token scope scope…`` per line (spaces or commas between); a bare token has every scope."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        words = [word for word in re.split(r"[\s,]+", line.strip()) if word]
        if not words or words[0].startswith("#"):
            continue
        found.append((words[0], _scopes(words[1:], f"{where} line {number}")))
    return found


@dataclass(frozen=True)
class Tokens:
    """Every configured token (as a digest) with its scopes."""

    entries: tuple[tuple[bytes, frozenset[str]], ...] = ()

    @classmethod
    def configured(cls, env_entries: list[str], file: str | None) -> Tokens:
        """From ``TASKMESH_API_TOKENS`` entries and the ``TASKMESH_API_TOKENS_FILE`` file; TokenError if wrong."""
        pairs = [parse_env_entry(entry, f"TASKMESH_API_TOKENS entry {n}") for n, entry in enumerate(env_entries, 1)]
        if file:
            try:
                text = Path(file).read_text()
            except OSError as exc:
                raise TokenError(f"TASKMESH_API_TOKENS_FILE: cannot read {file}: {exc.strerror}") from None
            pairs += parse_file(text, f"TASKMESH_API_TOKENS_FILE {file}")
        digests = [_digest(token) for token, _ in pairs]
        if len(set(digests)) < len(digests):
            raise TokenError("a token is configured twice; give each token once with all its scopes")
        return cls(tuple(zip(digests, (scopes for _, scopes in pairs), strict=True)))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def scopes_of(self, given: str) -> frozenset[str] | None:
        """The token's scopes, or None; every configured token is compared, so timing tells nothing."""
        digest = _digest(given)
        found: frozenset[str] | None = None
        for expected, scopes in self.entries:
            if hmac.compare_digest(digest, expected):
                found = scopes
        return found


def require(request: web.Request, scope: str, what: str) -> None:
    """Raise ApiError(forbidden) unless the request's token has ``scope``."""
    granted = request.get(GRANTED, SCOPES)
    if scope in granted:
        return
    has = ", ".join(sorted(granted)) or "none"
    raise ApiError("forbidden", f"{what} needs scope {scope}; this token has: {has}")


def require_any_submit(request: web.Request, what: str) -> None:
    """Raise ApiError(forbidden) unless the token may submit some kind of task."""
    if not SUBMIT_SCOPES & request.get(GRANTED, SCOPES):
        require(request, "submit:api or submit:code", what)


class _Shape(msgspec.Struct):
    """What decides a submission's scope; any type is taken, so it decodes whatever the store would."""

    function_code: Any = None
    isolated: Any = False


_shape_decoder = msgspec.json.Decoder(_Shape)


def submit_scope(body: bytes, route: str) -> str | None:
    """``submit:code`` for a code or sandboxed task, ``submit:api`` for a plain API task, None for a
    body that is not a JSON object (the store refuses it with a 400 naming the problem)."""
    if route == "isolated":
        return "submit:code"
    try:
        bounds.check_json_depth(body)
        shape = _shape_decoder.decode(body)
    except (msgspec.MsgspecError, FieldError, RecursionError):
        return None
    if shape.function_code is not None or shape.isolated is not False:
        return "submit:code"  # anything but a plain API task may run arbitrary code
    return "submit:api"
