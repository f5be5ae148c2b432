"""Secrets at execution time: open the values a run uses, put them in place, and hide them again.

The runner reads sealed values from the secrets bucket (read only) and opens them with its keys
just before it executes; every value it opened is replaced by ``***`` in the run's output, result
and error before they are published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from proto import codec, secrets
from proto.runs import Execution, RunError
from proto.tasks import TaskSpec, secret_references
from services.common.masking import MASK
from services.common.secret_keys import SecretKeyError, SecretKeys


class SecretUnavailable(Exception):
    """A secret the run uses cannot be had: deleted since submission, or sealed with another key."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


@dataclass
class Resolved:
    """The spec with its references replaced, a code task's environment, and the values to hide."""

    spec: TaskSpec
    environment: dict[str, str] = field(default_factory=dict)
    values: list[str] = field(default_factory=list)


class SecretResolver:
    """Opens the secrets a task uses."""

    def __init__(self, kv: KeyValue | None, keys: SecretKeys) -> None:
        self.kv = kv
        self.keys = keys

    async def _value(self, name: str) -> str:
        if self.kv is None:
            raise SecretUnavailable("secret_missing", f"secret {name!r}: this runner has no secrets bucket")
        try:
            entry = await self.kv.get(name)
        except KeyNotFoundError:
            entry = None
        if entry is None or not entry.value:
            raise SecretUnavailable("secret_missing", f"secret {name!r} does not exist (deleted after submission?)")
        try:
            return self.keys.open(name, codec.decode(secrets.SecretEntry, entry.value).sealed)
        except (SecretKeyError, msgspec.MsgspecError) as exc:
            raise SecretUnavailable("secret_unreadable", str(exc)) from None

    async def resolve(self, spec: TaskSpec) -> Resolved:
        """The spec ready to execute (SecretUnavailable when a secret cannot be had)."""
        names = secret_references(spec)
        if not names:
            return Resolved(spec)
        values = {name: await self._value(name) for name in names}
        resolved = msgspec.structs.replace(
            spec,
            api_url=secrets.substitute(spec.api_url, values.__getitem__) if spec.api_url else spec.api_url,
            headers={k: secrets.substitute(v, values.__getitem__) for k, v in spec.headers.items()},
            data=secrets.substitute_all(spec.data, values.__getitem__),
        )
        environment = {name: values[name] for name in spec.secrets}
        return Resolved(resolved, environment, sorted(set(values.values()), key=len, reverse=True))


def hide(text: str, values: list[str]) -> str:
    """``text`` with every value (longest first) replaced by ``***``."""
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def hide_all(value: Any, values: list[str], depth: int = 0) -> Any:
    """A JSON value with every secret value in its strings (keys too) replaced."""
    if isinstance(value, str):
        return hide(value, values)
    if depth > 128:
        return value
    if isinstance(value, dict):
        return {hide_all(k, values, depth + 1): hide_all(v, values, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [hide_all(item, values, depth + 1) for item in value]
    return value


def hidden_outcome(outcome: Execution, values: list[str]) -> Execution:
    """The outcome with the values hidden in its result and its error."""
    if not values:
        return outcome
    outcome.result = hide_all(outcome.result, values)
    if outcome.error is not None:
        error = outcome.error
        outcome.error = msgspec.structs.replace(
            error,
            message=hide(error.message, values),
            traceback=hide(error.traceback, values) if error.traceback else error.traceback,
        )
    return outcome


def unavailable(exc: SecretUnavailable) -> Execution:
    """The failed outcome of a run whose secret cannot be had."""
    return Execution(status="failed", error=RunError(type=exc.error_type, message=exc.message))  # type: ignore[arg-type]  # secret_missing / secret_unreadable, both ErrorTypes
