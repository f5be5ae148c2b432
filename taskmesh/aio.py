"""``taskmesh.AsyncClient``: the surface of ``taskmesh.Client`` for asyncio (``await`` and ``async for``)."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from typing import Any, Generic, ParamSpec, TypeVar, overload

from proto.api import Ledger, LedgerEntry, RunPage, TaskPage, TriggerReply
from proto.records import RunRecord, TaskRecord
from proto.runs import FINAL_RUN_STATUSES
from proto.tasks import FINAL_STATUSES, MisfirePolicy, OverlapPolicy, TaskKind, TaskStatus, TaskType
from taskmesh import functions
from taskmesh._http import DEFAULT_URL, AsyncGateway, decode
from taskmesh.errors import ResultNotReady
from taskmesh.functions import Execution
from taskmesh.source import capture

P = ParamSpec("P")
R = TypeVar("R")
MAP_CONCURRENCY = 16
"""Submissions (and waits) of one ``map`` in flight at once."""


class AsyncRun(Generic[R]):
    """A submitted one-shot task, for asyncio."""

    def __init__(self, gateway: AsyncGateway, task: TaskRecord) -> None:
        self._gateway = gateway
        self.task = task

    def __repr__(self) -> str:
        return f"<AsyncRun {self.id} {self.task.name!r} {self.status}>"

    @property
    def id(self) -> str:
        """The task's id."""
        return self.task.id

    @property
    def status(self) -> TaskStatus:
        """The status when last read (``await refresh()`` reads it again)."""
        return self.task.status

    async def refresh(self) -> AsyncRun[R]:
        """Read the task again; returns this run."""
        self.task = decode(TaskRecord, await self._gateway.request("GET", f"/api/tasks/{self.id}"))
        return self

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the result; TaskFailed/TaskCancelled/TaskTimedOut if there is none, ResultNotReady on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.task.status not in FINAL_STATUSES:
            left = functions.WAIT_STEP_SECONDS if deadline is None else deadline - time.monotonic()
            if left < 0:
                raise ResultNotReady(f"task {self.id} is still {self.status} after {timeout} s")
            response = await self._gateway.wait_response(self.id, min(left, functions.WAIT_STEP_SECONDS))
            self.task = decode(TaskRecord, response)
        result: R = functions.outcome(self.task)
        return result

    async def logs(self) -> str:
        """The output of the latest run so far, stdout and stderr in the order written."""
        response = await self._gateway.request("GET", f"/api/tasks/{self.id}/logs", params={"format": "text"})
        return response.text

    async def follow_logs(self) -> AsyncIterator[str]:
        """Output of the latest run as it is written, each chunk once, until the run ends."""
        async for event in self._gateway.follow_logs(self.id):
            if event.event == "log":
                yield str(event.data["data"])

    async def cancel(self) -> AsyncRun[R]:
        """Cancel: a pending task never runs, a running one is killed; returns this run."""
        self.task = decode(TaskRecord, await self._gateway.request("POST", f"/api/tasks/{self.id}/cancel"))
        return self

    async def delete(self) -> None:
        """Delete the task with its runs and logs."""
        await self._gateway.request("DELETE", f"/api/tasks/{self.id}")


class AsyncSchedule:
    """A scheduled (cron) task, for asyncio."""

    def __init__(self, gateway: AsyncGateway, task: TaskRecord) -> None:
        self._gateway = gateway
        self.task = task

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

    async def _control(self, action: str) -> AsyncSchedule:
        response = await self._gateway.request("POST", f"/api/scheduled-tasks/{self.id}/{action}")
        self.task = decode(TaskRecord, response)
        return self

    async def refresh(self) -> AsyncSchedule:
        """Read the schedule again; returns it."""
        self.task = decode(TaskRecord, await self._gateway.request("GET", f"/api/scheduled-tasks/{self.id}"))
        return self

    async def pause(self) -> AsyncSchedule:
        """Stop firing until resumed."""
        return await self._control("pause")

    async def resume(self) -> AsyncSchedule:
        """Fire again."""
        return await self._control("resume")

    async def trigger(self) -> str:
        """Run once now; returns the id of that run."""
        response = await self._gateway.request("POST", f"/api/scheduled-tasks/{self.id}/trigger")
        reply = decode(TriggerReply, response)
        self.task = reply.task
        return reply.run_id

    async def run_result(self, run_id: str, timeout: float | None = None) -> Any:
        """Wait for a run of this schedule (``trigger()`` names one); its result, or TaskFailed & co."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            response = await self._gateway.request("GET", f"/api/tasks/{self.id}/runs/{run_id}", accept=(404,))
            run = decode(RunRecord, response) if response.status_code == 200 else None
            if run is not None and run.status in FINAL_RUN_STATUSES:
                return functions.run_outcome(self.task, run)
            left = functions.SCHEDULE_WAIT_STEP_SECONDS if deadline is None else deadline - time.monotonic()
            if left < 0:
                raise ResultNotReady(f"run {run_id} of {self.id} has not ended after {timeout} s")
            await self._gateway.wait_response(self.id, min(left, functions.SCHEDULE_WAIT_STEP_SECONDS))

    async def ledger(self, limit: int = 100) -> list[LedgerEntry]:
        """Every fire slot, newest first, and what became of it."""
        response = await self._gateway.request("GET", f"/api/scheduled-tasks/{self.id}/ledger", params={"limit": limit})
        return decode(Ledger, response).entries

    async def runs(self, limit: int = 50) -> list[RunRecord]:
        """Its runs, newest first."""
        response = await self._gateway.request("GET", f"/api/tasks/{self.id}/runs", params={"limit": limit})
        return decode(RunPage, response).runs

    async def delete(self, cancel_running: bool = False) -> None:
        """Stop future fires and delete it."""
        await self._gateway.request(
            "DELETE", f"/api/scheduled-tasks/{self.id}", params={"cancel_running": cancel_running}
        )


class AsyncFunction(Generic[P, R]):
    """A function that runs locally when called, and in a sandbox by ``await submit(...)``."""

    def __init__(self, gateway: AsyncGateway, function: Callable[P, R], execution: Execution) -> None:
        self.source = capture(function)
        functions.check_parameters(function)
        self.execution = execution
        self._gateway = gateway
        self._function = function
        functools.update_wrapper(self, function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._function(*args, **kwargs)

    async def submit(
        self,
        *args: Any,
        delay_seconds: float | None = None,
        start_deadline_seconds: float | None = None,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> AsyncRun[R]:
        """Run it in a sandbox now (or after ``delay_seconds``); returns once the task is accepted."""
        spec = functions.code_spec(
            self.source,
            self.execution,
            args,
            kwargs,
            **functions.trigger_fields(delay_seconds),
            start_deadline_seconds=start_deadline_seconds,
        )
        return AsyncRun(self._gateway, decode(TaskRecord, await self._gateway.submit_response(spec, idempotency_key)))

    async def map(self, *iterables: Iterable[Any], timeout: float | None = None) -> list[R]:
        """Submit one task per item, then the results in the order given."""
        slots = asyncio.Semaphore(MAP_CONCURRENCY)
        deadline = None if timeout is None else time.monotonic() + timeout

        async def one(args: tuple[Any, ...]) -> R:
            async with slots:
                run = await self.submit(*args)
            return await run.result(None if deadline is None else max(0.0, deadline - time.monotonic()))

        return list(await asyncio.gather(*(one(args) for args in zip(*iterables, strict=False))))

    async def schedule(
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
    ) -> AsyncSchedule:
        """Run it on a cron schedule, in ``timezone`` (UTC by default)."""
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
        response = await self._gateway.submit_response(spec, idempotency_key)
        return AsyncSchedule(self._gateway, decode(TaskRecord, response))


class AsyncClient:
    """A Taskmesh gateway for asyncio; ``async with taskmesh.AsyncClient() as tm:`` closes it."""

    def __init__(self, url: str | None = None, token: str | None = None, *, submit_retry_seconds: float = 30.0) -> None:
        self.url = (url or os.environ.get("TASKMESH_URL") or DEFAULT_URL).rstrip("/")
        self.gateway = AsyncGateway(self.url, token or os.environ.get("TASKMESH_TOKEN"), submit_retry_seconds)

    def __repr__(self) -> str:
        return f"<taskmesh.AsyncClient {self.url}>"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections (safe twice)."""
        await self.gateway.close()

    @overload
    def function(self, function: Callable[P, R], /) -> AsyncFunction[P, R]: ...

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
    ) -> Callable[[Callable[P, R]], AsyncFunction[P, R]]: ...

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
            return AsyncFunction(self.gateway, function, execution)
        return lambda decorated: AsyncFunction(self.gateway, decorated, execution)

    async def http(
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
    ) -> AsyncRun[Any]:
        """An API task: one HTTP request made by a runner."""
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
        return AsyncRun(self.gateway, decode(TaskRecord, await self.gateway.submit_response(spec, idempotency_key)))

    async def tasks(
        self,
        *,
        status: TaskStatus | None = None,
        kind: TaskKind | None = None,
        task_type: TaskType | None = None,
        name: str | None = None,
        limit: int = 50,
    ) -> list[TaskRecord]:
        """Tasks, newest first, filtered as ``GET /api/tasks`` filters."""
        params = {"status": status, "kind": kind, "task_type": task_type, "name": name, "limit": limit}
        return decode(TaskPage, await self.gateway.request("GET", "/api/tasks", params=params)).tasks

    async def get_run(self, task_id: str) -> AsyncRun[Any]:
        """A task submitted earlier, by id."""
        return AsyncRun(self.gateway, decode(TaskRecord, await self.gateway.request("GET", f"/api/tasks/{task_id}")))

    async def get_schedule(self, task_id: str) -> AsyncSchedule:
        """A scheduled task submitted earlier, by id."""
        response = await self.gateway.request("GET", f"/api/scheduled-tasks/{task_id}")
        return AsyncSchedule(self.gateway, decode(TaskRecord, response))
