"""What the sync and async clients share: execution options, the spec of a submission, JSON checks, outcomes.

Specs use the API's own field names (``proto.tasks.TaskSpec``); the client checks only what it
alone can (source capture, JSON arguments) and leaves every other rule to the server.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from proto.records import RunRecord, TaskRecord
from proto.runs import RunError
from taskmesh.errors import (
    ArgumentsNotJson,
    FunctionNotPortable,
    TaskCancelled,
    TaskFailed,
    TaskNotSucceeded,
    TaskTimedOut,
)
from taskmesh.source import CapturedSource

SUBMIT_OPTIONS = frozenset({"delay_seconds", "start_deadline_seconds", "idempotency_key"})
"""Keyword arguments ``submit`` keeps for itself: the function's own parameters may not use these names."""
SCHEDULE_OPTIONS = frozenset(
    {
        "cron",
        "timezone",
        "start_at",
        "end_at",
        "max_runs",
        "overlap_policy",
        "misfire_policy",
        "jitter_seconds",
        "start_deadline_seconds",
        "idempotency_key",
    }
)
"""Keyword arguments ``schedule`` keeps for itself."""
SCHEDULE_WAIT_STEP_SECONDS = 1.0
"""A schedule's ``/wait`` returns when any run ends: short steps, then the awaited run is read again."""
WAIT_STEP_SECONDS = 30.0
"""How long one ``/wait`` request may block while ``result()`` waits (the gateway allows up to 300)."""


@dataclass(frozen=True)
class Execution:
    """How a task runs: the spec fields given to ``@tm.function(...)`` (None: the server's default)."""

    name: str | None = None
    requirements: list[str] = field(default_factory=list)
    timeout: float | None = None
    memory_mb: int | None = None
    cpus: float | None = None
    network: bool | None = None
    max_retries: int | None = None
    retry_delay_seconds: float | None = None
    retry_backoff: float | None = None
    retry_delay_max_seconds: float | None = None
    allow_hosts: list[str] = field(default_factory=list)
    concurrency_key: str | list[str] | None = None
    max_concurrency: int | None = None
    rate_limit: str | None = None
    priority: int | None = None
    fairness_key: str | None = None

    def fields(self) -> dict[str, Any]:
        """The options as spec fields, leaving out those not given (None, or an empty list of a list option)."""
        return {
            key: value
            for key, value in asdict(self).items()
            if value is not None and not (value == [] and key in LIST_OPTIONS)
        }


LIST_OPTIONS = frozenset({"requirements", "allow_hosts"})
"""Options of ``Execution`` that default to an empty list: empty means not given (a given empty
``concurrency_key`` list is sent, for the server to refuse)."""


def check_parameters(function: Callable[..., Any]) -> None:
    """Refuse a function whose parameter names would be taken for submit/schedule options."""
    taken = set(inspect.signature(function).parameters) & (SUBMIT_OPTIONS | SCHEDULE_OPTIONS)
    if taken:
        name = sorted(taken)[0]
        raise FunctionNotPortable(
            f"cannot send {function.__name__} as a task: its parameter {name!r} has the name "
            f"of an option of submit()/schedule(); rename the parameter"
        )


def check_json(value: Any, where: str) -> None:
    """Raise ArgumentsNotJson naming the first part of ``value`` that JSON cannot carry as it is."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ArgumentsNotJson(f"{where} is {value!r}, which JSON cannot carry; pass None or a string")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_json(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ArgumentsNotJson(f"{where} has the key {key!r}: JSON object keys are strings")
            check_json(item, f"{where}[{key!r}]")
        return
    hint = "; pass value.isoformat()" if isinstance(value, datetime) else "; pass it as a dict, list or str"
    raise ArgumentsNotJson(f"{where} is not a JSON value (type {type(value).__name__}){hint}")


def code_spec(
    source: CapturedSource, execution: Execution, args: tuple[Any, ...], kwargs: dict[str, Any], **trigger: Any
) -> dict[str, Any]:
    """The body of a code task's submission; ``trigger`` holds task_type and its fields."""
    check_json(list(args), "args")
    check_json(kwargs, "kwargs")
    spec: dict[str, Any] = {
        "name": source.function_name,
        **execution.fields(),
        "function_code": source.function_code,
        "function_name": source.function_name,
    }
    if args:
        spec["args"] = list(args)
    if kwargs:
        spec["kwargs"] = kwargs
    return {**spec, **given(trigger)}


def trigger_fields(delay_seconds: float | None) -> dict[str, Any]:
    """``task_type`` (immediate or delayed) and its fields."""
    if delay_seconds is None:
        return {"task_type": "immediate"}
    return {"task_type": "delayed", "delay_seconds": delay_seconds}


def schedule_fields(cron: str, timezone: str | None, **options: Any) -> dict[str, Any]:
    """``task_type`` scheduled and its fields (times as RFC 3339)."""
    for key in ("start_at", "end_at"):
        if isinstance(options.get(key), datetime):
            options[key] = options[key].isoformat()
    return {"task_type": "scheduled", "cron_expression": cron, "timezone": timezone, **options}


def http_spec(url: str, **fields: Any) -> dict[str, Any]:
    """The body of an API task's submission."""
    spec = {"name": f"{str(fields.get('method') or 'GET').upper()} {url}"[:200], "api_url": url, **given(fields)}
    if "data" in spec:
        check_json(spec["data"], "json")
    return spec


def given(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that were given (not None)."""
    return {key: value for key, value in fields.items() if value is not None}


def outcome(task: TaskRecord) -> Any:
    """The result of a finished task, or the exception that says why there is none."""
    if task.status == "succeeded":
        return task.result
    run_id = task.last_run.run_id if task.last_run else None
    raise not_succeeded(task.name, task.id, task.status, task.error, run_id)


def run_outcome(schedule: TaskRecord, run: RunRecord) -> Any:
    """The result of a finished run of a schedule, or the exception that says why there is none."""
    if run.status == "succeeded":
        return run.result
    raise not_succeeded(schedule.name, schedule.id, run.status, run.error, run.run_id)


def not_succeeded(name: str, task_id: str, status: str, error: RunError | None, run_id: str | None) -> TaskNotSucceeded:
    """The exception for a task (or run) that ended without a result."""
    kind = {"cancelled": TaskCancelled, "timed_out": TaskTimedOut}.get(status, TaskFailed)
    return kind(name, task_id, status, error, run_id)
