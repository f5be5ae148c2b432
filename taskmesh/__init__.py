"""Taskmesh's Python client (``taskmesh.Client``, ``taskmesh.AsyncClient``) and the ``taskmesh`` command."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proto.api import LedgerEntry
    from proto.records import RunRecord
    from proto.records import TaskRecord as Task
    from taskmesh.aio import AsyncClient, AsyncFunction, AsyncRun, AsyncSchedule
    from taskmesh.errors import (
        ApiError,
        ArgumentsNotJson,
        FunctionNotPortable,
        GatewayError,
        GatewayUnreachable,
        ResultNotReady,
        TaskCancelled,
        TaskFailed,
        TaskmeshError,
        TaskNotSucceeded,
        TaskTimedOut,
    )
    from taskmesh.sync import Client, Function, Run, Schedule

_EXPORTS: dict[str, tuple[str, str]] = {
    "ApiError": ("taskmesh.errors", "ApiError"),
    "ArgumentsNotJson": ("taskmesh.errors", "ArgumentsNotJson"),
    "AsyncClient": ("taskmesh.aio", "AsyncClient"),
    "AsyncFunction": ("taskmesh.aio", "AsyncFunction"),
    "AsyncRun": ("taskmesh.aio", "AsyncRun"),
    "AsyncSchedule": ("taskmesh.aio", "AsyncSchedule"),
    "Client": ("taskmesh.sync", "Client"),
    "Function": ("taskmesh.sync", "Function"),
    "FunctionNotPortable": ("taskmesh.errors", "FunctionNotPortable"),
    "GatewayError": ("taskmesh.errors", "GatewayError"),
    "GatewayUnreachable": ("taskmesh.errors", "GatewayUnreachable"),
    "LedgerEntry": ("proto.api", "LedgerEntry"),
    "ResultNotReady": ("taskmesh.errors", "ResultNotReady"),
    "Run": ("taskmesh.sync", "Run"),
    "RunRecord": ("proto.records", "RunRecord"),
    "Schedule": ("taskmesh.sync", "Schedule"),
    "Task": ("proto.records", "TaskRecord"),
    "TaskCancelled": ("taskmesh.errors", "TaskCancelled"),
    "TaskFailed": ("taskmesh.errors", "TaskFailed"),
    "TaskNotSucceeded": ("taskmesh.errors", "TaskNotSucceeded"),
    "TaskTimedOut": ("taskmesh.errors", "TaskTimedOut"),
    "TaskmeshError": ("taskmesh.errors", "TaskmeshError"),
}
"""Public name → (module, attribute): imported on first use, so ``python -m taskmesh`` (the CLI) starts fast."""


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'taskmesh' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    return getattr(importlib.import_module(module), attribute)


__all__ = [
    "ApiError",
    "ArgumentsNotJson",
    "AsyncClient",
    "AsyncFunction",
    "AsyncRun",
    "AsyncSchedule",
    "Client",
    "Function",
    "FunctionNotPortable",
    "GatewayError",
    "GatewayUnreachable",
    "LedgerEntry",
    "ResultNotReady",
    "Run",
    "RunRecord",
    "Schedule",
    "Task",
    "TaskCancelled",
    "TaskFailed",
    "TaskNotSucceeded",
    "TaskTimedOut",
    "TaskmeshError",
]
