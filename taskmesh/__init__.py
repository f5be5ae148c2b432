"""Taskmesh's Python client (``taskmesh.Client``, ``taskmesh.AsyncClient``) and the ``taskmesh`` command."""

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
