"""The store's request/reply face: one route per ``taskmesh.api.*`` subject."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from proto import api, codec, secrets, subjects
from proto.errors import ErrorBody, FieldError, error_body
from services.common.masking import masked_reply
from services.store.commands import Commands
from services.store.errors import StoreError
from services.store.queries import Queries
from services.store.secrets import Secrets

log = logging.getLogger(__name__)
MAX_WAIT_SECONDS = 300.0
WAITING_SUBJECTS = frozenset({subjects.WAIT_TASK, subjects.SUBMIT_TASK})
"""Requests that may wait for an outcome: they hold a slot only while they work, not while they wait."""

Route = Callable[[Msg], Awaitable[Any]]


class ApiHandlers:
    """Decodes each request, runs its route, and replies with the result or an error body."""

    def __init__(
        self,
        nc: Client,
        commands: Commands,
        queries: Queries,
        max_concurrent: int,
        max_waiters: int = 10_000,
        secret_store: Secrets | None = None,
    ) -> None:
        self.nc = nc
        self.commands = commands
        self.queries = queries
        self._slots = asyncio.Semaphore(max_concurrent)
        self.max_waiters = max_waiters
        self.waiting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscription: Any = None
        self.routes: dict[str, Route] = {
            subjects.SUBMIT_TASK: self._submit,
            subjects.GET_TASK: lambda m: self._async(m, api.TaskRef, lambda r: queries.task(r.id)),
            subjects.LIST_TASKS: lambda m: self._async(m, api.ListTasksRequest, queries.list_tasks),
            subjects.WAIT_TASK: self._wait,
            subjects.CANCEL_TASK: lambda m: self._async(m, api.CancelTaskRequest, commands.cancel),
            subjects.DELETE_TASK: lambda m: self._async(m, api.DeleteTaskRequest, commands.delete),
            subjects.LIST_RUNS: lambda m: self._async(m, api.ListRunsRequest, queries.list_runs),
            subjects.GET_RUN: lambda m: self._async(m, api.RunRef, queries.run),
            subjects.RUN_VERDICT: lambda m: self._async(m, api.RunRef, queries.run_verdict),
            subjects.RUN_VERDICTS: lambda m: self._async(m, api.RunVerdictsRequest, queries.run_verdicts),
            subjects.GET_LOGS: lambda m: self._async(m, api.GetLogsRequest, queries.logs),
            subjects.LIST_SCHEDULES: lambda m: self._async(m, api.StatsRequest, lambda _: queries.schedules()),
            subjects.PAUSE_SCHEDULE: lambda m: self._async(m, api.TaskRef, lambda r: commands.pause(r.id)),
            subjects.RESUME_SCHEDULE: lambda m: self._async(m, api.TaskRef, lambda r: commands.resume(r.id)),
            subjects.TRIGGER_SCHEDULE: self._trigger,
            subjects.GET_LEDGER: lambda m: self._async(m, api.LedgerRequest, queries.ledger),
            subjects.GET_STATS: lambda m: self._async(m, api.StatsRequest, lambda _: queries.stats()),
            subjects.LIST_DEAD_LETTERS: lambda m: self._async(m, api.StatsRequest, lambda _: queries.dead_letters()),
            subjects.STORE_HEALTH: lambda m: self._sync(
                m,
                api.StatsRequest,
                lambda _: api.StoreHealth(
                    ready=True, tasks=len(queries.state.catalog), services=queries.registry.alive()
                ),
            ),
        }
        if secret_store is not None:
            self.routes[subjects.PUT_SECRET] = lambda m: self._async(m, secrets.PutSecretRequest, secret_store.put)
            self.routes[subjects.LIST_SECRETS] = lambda m: self._async(
                m, secrets.ListSecretsRequest, lambda _: secret_store.list()
            )
            self.routes[subjects.DELETE_SECRET] = lambda m: self._async(m, secrets.SecretRef, secret_store.delete)

    async def start(self) -> None:
        """Begin answering (only once the state is loaded: until then clients see no responders)."""
        self._subscription = await self.nc.subscribe(subjects.API_ALL, queue="store", cb=self._on_message)

    async def stop(self, grace: float) -> None:
        """Stop taking requests and let the ones in progress finish within ``grace`` seconds."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace)
            for task in late:
                task.cancel()

    async def _on_message(self, msg: Msg) -> None:
        # nats-py runs a subscription's callbacks one at a time; requests must not queue behind a wait.
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        # A wait holds no request slot (it may last minutes); its routes take one for their own work.
        slot = contextlib.nullcontext() if msg.subject in WAITING_SUBJECTS else self._slots
        async with slot:
            route = self.routes.get(msg.subject)
            try:
                if route is None:
                    reply: Any = error_body("not_found", f"no such request subject {msg.subject!r}")
                else:
                    reply = await route(msg)
            except FieldError as exc:
                reply = exc.body()
            except StoreError as exc:
                reply = exc.body()
            except Exception as exc:  # JetStream unavailable, timeouts: the client may retry
                log.warning("request %s failed: %s: %s", msg.subject, type(exc).__name__, exc)
                reply = error_body("unavailable", f"store could not complete the request: {type(exc).__name__}")
            if msg.reply:
                data = codec.encode(masked_reply(reply))  # credentials never leave in a reply
                if len(data) > self.nc.max_payload:
                    reply = error_body(
                        "payload_too_large",
                        (
                            f"the answer is {len(data)} bytes, more than NATS carries ({self.nc.max_payload}); "
                            "ask for less (a smaller limit or page)"
                        ),
                    )
                    data = codec.encode(reply)
                headers = {subjects.HEADER_ERROR: str(reply.error.code)} if isinstance(reply, ErrorBody) else None
                try:
                    await self.nc.publish(msg.reply, data, headers=headers)
                except Exception as exc:  # the requester is gone or NATS is down
                    log.debug("reply to %s not sent: %s", msg.subject, exc)

    @staticmethod
    def _sync(msg: Msg, kind: type, handler: Callable[[Any], Any]) -> Awaitable[Any]:
        async def run() -> Any:
            return handler(codec.decode_request(kind, msg.data))

        return run()

    @staticmethod
    async def _async(msg: Msg, kind: type, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        return await handler(codec.decode_request(kind, msg.data))

    async def _submit(self, msg: Msg) -> Any:
        async with self._slots:
            wait = _wait_seconds(msg.headers)
            accepted = await self.commands.submit(msg.data, msg.headers)
        if wait is None:
            return accepted
        with self._waiter():
            waited = await self.queries.wait(api.WaitTaskRequest(id=accepted.id, timeout_seconds=wait))
        return api.SubmitAccepted(
            id=accepted.id, status=waited.task.status, task=waited.task, replayed=accepted.replayed, done=waited.done
        )

    async def _wait(self, msg: Msg) -> Any:
        request = codec.decode_request(api.WaitTaskRequest, msg.data)
        with self._waiter():
            return await self.queries.wait(request)

    @contextlib.contextmanager
    def _waiter(self) -> Iterator[None]:
        """A place among ``max_waiters`` concurrent waits; a ``too_many_waiters`` error when none is free."""
        if self.waiting >= self.max_waiters:
            raise FieldError(
                None,
                f"{self.waiting} waits are already open on the store (the limit is "
                f"{self.max_waiters}); try again shortly",
                code="too_many_waiters",
            )
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1

    async def _trigger(self, msg: Msg) -> Any:
        request = codec.decode_request(api.TaskRef, msg.data)
        task, run_id = await self.commands.trigger(request.id)
        return api.TriggerReply(task=task, run_id=run_id)


def _wait_seconds(headers: dict[str, str] | None) -> float | None:
    raw = (headers or {}).get(subjects.HEADER_WAIT)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise FieldError("wait", f"{subjects.HEADER_WAIT} must be a number of seconds") from None
    if not 0 <= seconds <= MAX_WAIT_SECONDS:
        raise FieldError("wait", f"{subjects.HEADER_WAIT} must be between 0 and {MAX_WAIT_SECONDS:g} seconds")
    return seconds
