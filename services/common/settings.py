"""Settings from ``TASKMESH_*`` environment variables into a typed Struct, once, in ``__main__``."""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from datetime import timedelta
from typing import Literal, TypeVar

import msgspec

from proto.tasks import Limits

PREFIX = "TASKMESH_"
T = TypeVar("T", bound=msgspec.Struct)


class SettingsError(ValueError):
    """An environment variable has a value its setting cannot take."""


class ServiceSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What every service needs: where NATS is, how to log, how long to drain on SIGTERM."""

    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: str | None = None
    nats_token: str | None = None
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"
    js_replicas: int = 1
    shutdown_grace: timedelta = timedelta(seconds=30)
    heartbeat_interval: timedelta = timedelta(seconds=2)


class LimitSettings(ServiceSettings, kw_only=True, forbid_unknown_fields=True):
    """Operator defaults and maxima for sandboxes and requests: the store checks submissions
    against them, the runner enforces them again."""

    code_timeout_seconds: float = 300.0
    """Wall-clock timeout of a code task that sets none."""
    api_timeout_seconds: float = 30.0
    """Timeout of an API task that sets none (the seed's default)."""
    max_timeout_seconds: float = 3600.0
    """Largest ``timeout`` a task may ask for."""
    sandbox_memory_mb: int = 512
    """Memory of a sandbox (swap adds nothing) unless the task asks for another amount."""
    max_memory_mb: int = 2048
    """Largest ``memory_mb`` a task may ask for."""
    sandbox_cpus: float = 0.5
    """CPUs of a sandbox unless the task asks for another amount."""
    max_cpus: float = 2.0
    """Largest ``cpus`` a task may ask for."""
    allow_sandbox_network: bool = True
    """Whether tasks may ask for ``network: true`` (isolated API tasks always get it)."""

    def limits(self) -> Limits:
        """The operator limits as the contract names them."""
        return Limits(
            code_timeout_seconds=self.code_timeout_seconds,
            api_timeout_seconds=self.api_timeout_seconds,
            max_timeout_seconds=self.max_timeout_seconds,
            memory_mb=self.sandbox_memory_mb,
            max_memory_mb=self.max_memory_mb,
            cpus=self.sandbox_cpus,
            max_cpus=self.max_cpus,
            allow_network=self.allow_sandbox_network,
        )


def _is_list(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return any(_is_list(arg) for arg in typing.get_args(annotation) if arg is not type(None))


def load_settings(kind: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``kind`` from ``TASKMESH_<FIELD>`` variables; lists are comma-separated."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(kind)
    values: dict[str, object] = {}
    for field in msgspec.structs.fields(kind):
        raw = environ.get(PREFIX + field.name.upper())
        if raw is None:
            continue
        if _is_list(hints[field.name]):
            values[field.name] = [item.strip() for item in raw.split(",") if item.strip()]
        elif raw == "" and type(None) in typing.get_args(hints[field.name]):
            values[field.name] = None
        else:
            values[field.name] = raw
    try:
        return msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if " - at `$." in text:
            name = text.rsplit(" - at `$.", 1)[1].rstrip("`").split(".")[0]
            raise SettingsError(f"{PREFIX}{name.upper()}: {text.split(' - at ')[0]}") from None
        raise SettingsError(text) from None


def env_name(field: str) -> str:
    """The environment variable of a setting."""
    return PREFIX + field.upper()
