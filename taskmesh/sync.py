"""``taskmesh.Client``: submit functions and HTTP calls to a Taskmesh gateway, and follow what becomes of them."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Generic, ParamSpec, TypeVar, overload

from proto.api import Ledger, LedgerEntry, RunPage, TaskPage, TriggerReply
from proto.records import RunRecord, TaskRecord
from proto.runs import FINAL_RUN_STATUSES
from proto.tasks import FINAL_STATUSES, MisfirePolicy, OverlapPolicy, TaskKind, TaskStatus, TaskType
from taskmesh import functions
from taskmesh._http import DEFAULT_URL, Gateway, decode
from taskmesh.errors import ResultNotReady
from taskmesh.functions import Execution
from taskmesh.source import capture

P = ParamSpec("P")
R = TypeVar("R")


class Run(Generic[R]):
    """A submitted one-shot task: its status, result, logs; ``refresh()`` reads it again."""

    def __init__(self, gateway: Gateway, task: TaskRecord) -> None:
        self._gateway = gateway
        self.task = task

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.task.name!r} {self.status}>"

    @property
    def id(self) -> str:
        """The task's id."""
        return self.task.id

    @property
    def status(self) -> TaskStatus:
        """The status when last read (``refresh()`` reads it again)."""
        return self.task.status

    def refresh(self) -> Run[R]:
        """Read the task again; returns this run."""
        self.task = decode(TaskRecord, self._gateway.request("GET", f"/api/tasks/{self.id}"))
        return self

    def result(self, timeout: float | None = None) -> R:
        """Wait for the result; TaskFailed/TaskCancelled/TaskTimedOut if there is none, ResultNotReady on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.task.status not in FINAL_STATUSES:
            left = functions.WAIT_STEP_SECONDS if deadline is None else deadline - time.monotonic()
            if left < 0:
                raise ResultNotReady(f"task {self.id} is still {self.status} after {timeout} s")
            response = self._gateway.wait_response(self.id, min(left, functions.WAIT_STEP_SECONDS))
            self.task = decode(TaskRecord, response)
        result: R = functions.outcome(self.task)
        return result

    def logs(self) -> str:
        """The output of the latest run so far, stdout and stderr in the order written."""
        return self._gateway.request("GET", f"/api/tasks/{self.id}/logs", params={"format": "text"}).text

    def follow_logs(self) -> Iterator[str]:
        """Output of the latest run as it is written, each chunk once, until the run ends."""
        for event in self._gateway.follow_logs(self.id):
            if event.event == "log":
                yield str(event.data["data"])

    def cancel(self) -> Run[R]:
        """Cancel: a pending task never runs, a running one is killed; returns this run."""
        self.task = decode(TaskRecord, self._gateway.request("POST", f"/api/tasks/{self.id}/cancel"))
        return self

    def delete(self) -> None:
        """Delete the task with its runs and logs."""
        self._gateway.request("DELETE", f"/api/tasks/{self.id}")


class Schedule:
    """A scheduled (cron) task: pause, resume, trigger, its ledger of fires, delete."""

    def __init__(self, gateway: Gateway, task: TaskRecord) -> None:
        self._gateway = gateway
        self.task = task

    def __repr__(self) -> str:
        return f"<Schedule {self.id} {self.task.name!r} {self.status}>"

    @property
    def id(self) -> str:
        """The scheduled task's id."""
        return self.task.id

    @property
    def status(self) -> TaskStatus:
        """``active``, ``paused``, ``completed`` or ``cancelled``, when last read."""
        return self.task.status

    @property
    def next_run_at(self) -> datetime | None:
        """When it fires next, when last read."""
        return self.task.next_run_at

    def refresh(self) -> Schedule:
        """Read the schedule again; returns it."""
        self.task = decode(TaskRecord, self._gateway.request("GET", f"/api/scheduled-tasks/{self.id}"))
        return self

    def _control(self, action: str) -> Schedule:
        self.task = decode(TaskRecord, self._gateway.request("POST", f"/api/scheduled-tasks/{self.id}/{action}"))
        return self

    def pause(self) -> Schedule:
        """Stop firing until resumed."""
        return self._control("pause")

    def resume(self) -> Schedule:
        """Fire again."""
        return self._control("resume")

    def trigger(self) -> str:
        """Run once now, besides the schedule; returns the id of that run."""
        reply = decode(TriggerReply, self._gateway.request("POST", f"/api/scheduled-tasks/{self.id}/trigger"))
        self.task = reply.task
        return reply.run_id

    def run_result(self, run_id: str, timeout: float | None = None) -> Any:
        """Wait for a run of this schedule (``trigger()`` names one); its result, or TaskFailed & co."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            response = self._gateway.request("GET", f"/api/tasks/{self.id}/runs/{run_id}", accept=(404,))
            run = decode(RunRecord, response) if response.status_code == 200 else None
            if run is not None and run.status in FINAL_RUN_STATUSES:
                return functions.run_outcome(self.task, run)
            left = functions.SCHEDULE_WAIT_STEP_SECONDS if deadline is None else deadline - time.monotonic()
            if left < 0:
                raise ResultNotReady(f"run {run_id} of {self.id} has not ended after {timeout} s")
            self._gateway.wait_response(self.id, min(left, functions.SCHEDULE_WAIT_STEP_SECONDS))

    def ledger(self, limit: int = 100) -> list[LedgerEntry]:
        """Every fire slot, newest first, and what became of it (a run, skipped, missed)."""
        response = self._gateway.request("GET", f"/api/scheduled-tasks/{self.id}/ledger", params={"limit": limit})
        return decode(Ledger, response).entries

    def runs(self, limit: int = 50) -> list[RunRecord]:
        """Its runs, newest first."""
        response = self._gateway.request("GET", f"/api/tasks/{self.id}/runs", params={"limit": limit})
        return decode(RunPage, response).runs

    def delete(self, cancel_running: bool = False) -> None:
        """Stop future fires and delete it (a running run finishes unless ``cancel_running``)."""
        self._gateway.request("DELETE", f"/api/scheduled-tasks/{self.id}", params={"cancel_running": cancel_running})


class Function(Generic[P, R]):
    """A function that runs locally when called, and in a sandbox by ``submit``, ``map`` and ``schedule``."""

    def __init__(self, gateway: Gateway, function: Callable[P, R], execution: Execution) -> None:
        self.source = capture(function)
        functions.check_parameters(function)
        self.execution = execution
        self._gateway = gateway
        self._function = function
        functools.update_wrapper(self, function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._function(*args, **kwargs)

    def submit(
        self,
        *args: Any,
        delay_seconds: float | None = None,
        start_deadline_seconds: float | None = None,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> Run[R]:
        """Run it in a sandbox now (or after ``delay_seconds``); returns once the task is accepted."""
        spec = functions.code_spec(
            self.source,
            self.execution,
            args,
            kwargs,
            **functions.trigger_fields(delay_seconds),
            start_deadline_seconds=start_deadline_seconds,
        )
        return Run(self._gateway, decode(TaskRecord, self._gateway.submit_response(spec, idempotency_key)))

    def map(self, *iterables: Iterable[Any], timeout: float | None = None) -> list[R]:
        """Submit one task per item (``map(f, xs, ys)``-style), then the results in the order given."""
        runs = [self.submit(*args) for args in zip(*iterables, strict=False)]
        deadline = None if timeout is None else time.monotonic() + timeout
        return [run.result(None if deadline is None else max(0.0, deadline - time.monotonic())) for run in runs]

    def schedule(
        self,
        *args: Any,
        cron: str,
        timezone: str | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        max_runs: int | None = None,
        overlap_policy: OverlapPolicy | None = None,
        misfire_policy: MisfirePolicy | None = None,
        jitter_seconds: float | None = None,
        start_deadline_seconds: float | None = None,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> Schedule:
        """Run it on a cron schedule (5 or 6 fields, or ``@hourly``-style), in ``timezone`` (UTC by default)."""
        trigger = functions.schedule_fields(
            cron,
            timezone,
            start_at=start_at,
            end_at=end_at,
            max_runs=max_runs,
            overlap_policy=overlap_policy,
            misfire_policy=misfire_policy,
            jitter_seconds=jitter_seconds,
            start_deadline_seconds=start_deadline_seconds,
        )
        spec = functions.code_spec(self.source, self.execution, args, kwargs, **trigger)
        return Schedule(self._gateway, decode(TaskRecord, self._gateway.submit_response(spec, idempotency_key)))


class Client:
    """A Taskmesh gateway: ``TASKMESH_URL`` / ``TASKMESH_TOKEN`` unless given, default http://127.0.0.1:5001."""

    def __init__(self, url: str | None = None, token: str | None = None, *, submit_retry_seconds: float = 30.0) -> None:
        self.url = (url or os.environ.get("TASKMESH_URL") or DEFAULT_URL).rstrip("/")
        self.gateway = Gateway(self.url, token or os.environ.get("TASKMESH_TOKEN"), submit_retry_seconds)

    def __repr__(self) -> str:
        return f"<taskmesh.Client {self.url}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (safe twice)."""
        self.gateway.close()

    @overload
    def function(self, function: Callable[P, R], /) -> Function[P, R]: ...

    @overload
    def function(
        self,
        *,
        name: str | None = None,
        requirements: list[str] | None = None,
        timeout: float | None = None,
        memory_mb: int | None = None,
        cpus: float | None = None,
        network: bool | None = None,
        max_retries: int | None = None,
        retry_delay_seconds: float | None = None,
        retry_backoff: float | None = None,
        retry_delay_max_seconds: float | None = None,
        allow_hosts: list[str] | None = None,
        concurrency_key: str | list[str] | None = None,
        max_concurrency: int | None = None,
        rate_limit: str | None = None,
        priority: int | None = None,
        fairness_key: str | None = None,
    ) -> Callable[[Callable[P, R]], Function[P, R]]: ...

    def function(
        self,
        function: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        requirements: list[str] | None = None,
        timeout: float | None = None,
        memory_mb: int | None = None,
        cpus: float | None = None,
        network: bool | None = None,
        max_retries: int | None = None,
        retry_delay_seconds: float | None = None,
        retry_backoff: float | None = None,
        retry_delay_max_seconds: float | None = None,
        allow_hosts: list[str] | None = None,
        concurrency_key: str | list[str] | None = None,
        max_concurrency: int | None = None,
        rate_limit: str | None = None,
        priority: int | None = None,
        fairness_key: str | None = None,
    ) -> Any:
        """Decorate a module-level function so it can run in a sandbox (``@tm.function`` or ``@tm.function(...)``)."""
        execution = Execution(
            name=name,
            requirements=list(requirements or []),
            timeout=timeout,
            memory_mb=memory_mb,
            cpus=cpus,
            network=network,
            max_retries=max_retries,
            retry_delay_seconds=retry_delay_seconds,
            retry_backoff=retry_backoff,
            retry_delay_max_seconds=retry_delay_max_seconds,
            allow_hosts=list(allow_hosts or []),
            concurrency_key=list(concurrency_key) if isinstance(concurrency_key, list) else concurrency_key,
            max_concurrency=max_concurrency,
            rate_limit=rate_limit,
            priority=priority,
            fairness_key=fairness_key,
        )
        if function is not None:
            return Function(self.gateway, function, execution)
        return lambda decorated: Function(self.gateway, decorated, execution)

    def http(
        self,
        url: str,
        *,
        method: str = "GET",
        json: Any = None,
        headers: dict[str, str] | None = None,
        expected_status: list[int] | None = None,
        timeout: float | None = None,
        name: str | None = None,
        delay_seconds: float | None = None,
        isolated: bool | None = None,
        requirements: list[str] | None = None,
        max_retries: int | None = None,
        allow_hosts: list[str] | None = None,
        concurrency_key: str | list[str] | None = None,
        max_concurrency: int | None = None,
        rate_limit: str | None = None,
        priority: int | None = None,
        fairness_key: str | None = None,
        idempotency_key: str | None = None,
    ) -> Run[Any]:
        """An API task: one HTTP request made by a runner; its result is the response (status, headers, body)."""
        spec = functions.http_spec(
            url,
            name=name,
            method=method,
            data=json,
            headers=headers,
            expected_status=expected_status,
            timeout=timeout,
            isolated=isolated,
            requirements=requirements,
            max_retries=max_retries,
            allow_hosts=allow_hosts,
            concurrency_key=concurrency_key,
            max_concurrency=max_concurrency,
            rate_limit=rate_limit,
            priority=priority,
            fairness_key=fairness_key,
            **functions.trigger_fields(delay_seconds),
        )
        return Run(self.gateway, decode(TaskRecord, self.gateway.submit_response(spec, idempotency_key)))

    def tasks(
        self,
        *,
        status: TaskStatus | None = None,
        kind: TaskKind | None = None,
        task_type: TaskType | None = None,
        name: str | None = None,
        limit: int = 50,
    ) -> list[TaskRecord]:
        """Tasks, newest first, filtered as ``GET /api/tasks`` filters (``name`` is a prefix)."""
        params = {"status": status, "kind": kind, "task_type": task_type, "name": name, "limit": limit}
        return decode(TaskPage, self.gateway.request("GET", "/api/tasks", params=params)).tasks

    def get_run(self, task_id: str) -> Run[Any]:
        """A task submitted earlier, by id."""
        return Run(self.gateway, decode(TaskRecord, self.gateway.request("GET", f"/api/tasks/{task_id}")))

    def get_schedule(self, task_id: str) -> Schedule:
        """A scheduled task submitted earlier, by id."""
        return Schedule(
            self.gateway, decode(TaskRecord, self.gateway.request("GET", f"/api/scheduled-tasks/{task_id}"))
        )
