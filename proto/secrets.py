"""Secrets: their names, bounds, the store's requests about them, and how tasks refer to them.

A value never travels in a message in plaintext: the gateway seals it (``SealedValue``) before it
asks the store to keep it, the store keeps only the sealed form, and the runner opens it when it
executes a run. Tasks name secrets: ``{{ secrets.NAME }}`` in an API task's ``api_url``, header
values and ``data``; ``"secrets": ["NAME"]`` for a code task (environment variables).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any, Final

from msgspec import Meta, Struct

from proto.errors import FieldError

MAX_NAME_CHARS: Final = 64
"""Longest secret name (an environment variable name for code tasks)."""
MAX_VALUE_BYTES: Final = 16 * 1024
"""Largest secret value, UTF-8 encoded."""
MAX_SECRETS_PER_TASK: Final = 32
"""Most distinct secrets one task may use."""
NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""A name is an identifier: a valid environment variable name and NATS KV key."""
NAME_RULE: Final = "letters, digits and _, not starting with a digit, at most 64 characters"

_NAME = re.compile(NAME_PATTERN)
_REFERENCE = re.compile(r"\{\{\s*secrets\.([^\s}]*)\s*\}\}")
"""``{{ secrets.NAME }}``; the name is checked separately so a bad one gets a clear error."""

SecretName = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN)]


class SealedValue(Struct, kw_only=True, frozen=True):
    """A value encrypted with AES-256-GCM under the key ``key_id``, bound to its secret's name."""

    key_id: str
    nonce: bytes
    ciphertext: bytes


class SecretEntry(Struct, kw_only=True):
    """What the secrets bucket keeps under a secret's name."""

    name: str
    sealed: SealedValue
    created_at: datetime
    updated_at: datetime


class SecretInfo(Struct, kw_only=True):
    """A secret as anyone may see it: its name and when it was set; never its value."""

    name: str
    created_at: datetime
    updated_at: datetime


class SecretList(Struct, kw_only=True):
    """Every secret, by name."""

    secrets: list[SecretInfo]


class PutSecretRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """Keep (or replace) a secret: the value arrives already sealed."""

    name: SecretName
    sealed: SealedValue


class SecretRef(Struct, kw_only=True, forbid_unknown_fields=True):
    """Names one secret (delete)."""

    name: SecretName


class ListSecretsRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """No parameters."""


class SecretDeleted(Struct, kw_only=True):
    """Reply to a delete."""

    name: str
    deleted: bool


class SecretValueBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """The JSON body of ``PUT /api/secrets/{name}``."""

    value: Annotated[str, Meta(min_length=1, description=f"At most {MAX_VALUE_BYTES} bytes of UTF-8.")]


def check_name(name: str, field: str = "name") -> None:
    """Raise FieldError unless ``name`` is a valid secret name."""
    if not name or len(name) > MAX_NAME_CHARS or not _NAME.match(name):
        raise FieldError(field, f"{name[:80]!r} is not a secret name ({NAME_RULE})")


def check_value(value: str) -> None:
    """Raise FieldError unless ``value`` is a non-empty value within the size bound."""
    if not value:
        raise FieldError("value", "value is empty")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise FieldError("value", f"value is larger than {MAX_VALUE_BYTES} bytes")


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    """Every string (keys too) in a JSON value, to a bounded depth (``data`` is shallow already)."""
    if isinstance(value, str):
        yield value
    elif depth > 64:
        return
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key, depth + 1)
            yield from _strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, depth + 1)


def names_in(text: str, field: str) -> list[str]:
    """The secret names referenced in ``text``; FieldError for a reference with a bad name."""
    names = _REFERENCE.findall(text)
    for name in names:
        check_name(name, field)
    return names


def references(api_url: str | None, headers: dict[str, str], data: Any, declared: list[str]) -> dict[str, str]:
    """Every secret a task uses, each with the first field that names it."""
    found: dict[str, str] = {}
    for name in declared:
        check_name(name, "secrets")
        found.setdefault(name, "secrets")
    sources: list[tuple[str, list[str]]] = [
        ("api_url", [api_url or ""]),
        ("headers", list(headers.values())),
        ("data", list(_strings(data))),
    ]
    for field, texts in sources:
        for text in texts:
            for name in names_in(text, field):
                found.setdefault(name, field)
    if len(found) > MAX_SECRETS_PER_TASK:
        raise FieldError("secrets", f"a task may use at most {MAX_SECRETS_PER_TASK} secrets")
    return found


def substitute(text: str, value_of: Callable[[str], str]) -> str:
    """``text`` with each ``{{ secrets.NAME }}`` replaced by ``value_of(NAME)``."""
    return _REFERENCE.sub(lambda match: value_of(match.group(1)), text)


def substitute_all(value: Any, value_of: Callable[[str], str]) -> Any:
    """A JSON value with every reference in its strings (keys too) replaced."""
    if isinstance(value, str):
        return substitute(value, value_of)
    if isinstance(value, dict):
        return {substitute_all(k, value_of): substitute_all(v, value_of) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_all(item, value_of) for item in value]
    return value


def placeholder(text: str) -> str:
    """``text`` with each reference replaced by a plain word, to check the rest of it (a URL)."""
    return substitute(text, lambda _: "secret")
