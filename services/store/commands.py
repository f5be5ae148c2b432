"""Commands from clients: validate, publish the lifecycle event (durable), apply it, answer.

An answer is sent only after JetStream acknowledged the event, so an accepted command is never
lost; it is applied to memory before the answer, so the client's next read sees it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from nats.js import JetStreamContext

from proto import bounds, codec, events, subjects
from proto.api import CancelTaskRequest, DeleteReply, DeleteTaskRequest, SubmitAccepted
from proto.errors import FieldError
from proto.records import TaskRecord
from proto.runs import run_id_for
from proto.tasks import FINAL_STATUSES, Limits, TaskSpec, check_spec, normalised
from services.common.clock import utcnow
from services.common.ids import new_event_id, new_task_id
from services.common.publishing import publish_durably
from services.store import transitions
from services.store.errors import Conflict, StorageFull, TaskNotFound
from services.store.state import Effects, StoreState

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 200


class Commands:
    """Everything that changes a task at a client's request."""

    def __init__(
        self,
        js: JetStreamContext,
        state: StoreState,
        limits: Limits,
        after_apply: Callable[[Effects], None],
        find_task: Callable[[str], Awaitable[TaskRecord]],
        check_secrets: Callable[[TaskSpec], Awaitable[None]] | None = None,
        fence: Callable[[], None] = lambda: None,
    ) -> None:
        self.js = js
        self.state = state
        self.limits = limits
        self.after_apply = after_apply
        self.find_task = find_task
        """Any retained task, also one that is only in KV (raises TaskNotFound)."""
        self.check_secrets = check_secrets
        """Raises FieldError when the task names a secret that does not exist."""
        self._in_flight: dict[str, asyncio.Future[str]] = {}
        self.fence = fence
        """Raises unless this store may publish (it leads)."""
        self.storage_full: str | None = None
        """Why new tasks are refused now (JetStream is full: ``storage.watch_storage``), or None."""

    async def _publish(self, event: events.TaskEvent, msg_id: str, payload: bytes | None = None) -> tuple[int, bool]:
        # repeated through an election with the same id (the task id when no key is given, drawn
        # before the first attempt): a repeat whose first try did land is a duplicate, not a 2nd task
        self.fence()
        ack = await publish_durably(
            self.js, subjects.task_event(event.task_id, event.subject_kind), payload or codec.encode(event), msg_id
        )
        return ack.seq, bool(ack.duplicate)

    def _apply(self, event: events.TaskEvent, seq: int) -> None:
        self.after_apply(self.state.apply_task_event(event, seq))

    def task(self, task_id: str) -> TaskRecord:
        """The task as it is in memory (just applied), or TaskNotFound."""
        task = self.state.get(task_id)
        if task is None:
            raise TaskNotFound(f"no task {task_id!r}", "id")
        return task

    # --- submit -------------------------------------------------------------------------------

    async def submit(self, body: bytes, headers: Mapping[str, str] | None) -> SubmitAccepted:
        """Accept a task submission or raise FieldError naming the bad field."""
        headers = headers or {}
        route = headers.get(subjects.HEADER_ROUTE, "")
        spec = normalised(codec.decode_spec(body), isolated=route == "isolated")
        if route == "scheduled" and spec.task_type != "scheduled":
            raise FieldError("task_type", "this endpoint takes scheduled tasks: task_type must be 'scheduled'")
        check_spec(spec, self.limits)
        if self.check_secrets is not None:
            await self.check_secrets(spec)
        submission_id = headers.get(subjects.HEADER_SUBMISSION_ID)
        if submission_id is not None:
            bounds.check_submission_id(submission_id, time.time())
        key = headers.get(subjects.HEADER_IDEMPOTENCY_KEY) or headers.get(subjects.HEADER_MSG_ID)
        if key is not None:
            if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
                raise FieldError(
                    "Idempotency-Key", f"idempotency key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters"
                )
            replay = await self._replay(key)
            if replay is not None:
                return replay
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._in_flight[key] = future
        try:
            if submission_id is not None:
                earlier = await self._earlier_submission(submission_id, spec)
                if earlier is not None:
                    if key is not None:
                        future.set_result(earlier.id)
                    return earlier
            if self.storage_full is not None:
                raise StorageFull(self.storage_full)
            # a submitter's own id makes its repeat a JetStream duplicate of the first publish
            task_id = submission_id or new_task_id()
            submitted = events.TaskSubmitted(
                event_id=task_id, occurred_at=utcnow(), task_id=task_id, spec=spec, idempotency_key=key
            )
            # applied as the consumers will read it, and refused (400) if they could not
            payload, accepted = codec.accepted_event(submitted)
            seq, duplicate = await self._publish(accepted, f"submit:{key}" if key else task_id, payload)
            if duplicate:
                # The key or submission id was used moments ago (a lost reply, a store restart): the first event stands.
                original = await self.js.get_msg(subjects.STREAM_TASKS, seq)
                event = codec.task_event_decoder.decode(original.data or b"")
                self._apply(event, seq)
                task = self.task(event.task_id)
            else:
                self._apply(accepted, seq)
                # What this submission made. The live record may be further on already: while the
                # ack was on its way, the consumers can apply the event and queue its first run.
                task = transitions.submitted_task(accepted, seq)
            if key is not None:
                future.set_result(task.id)
            return SubmitAccepted(id=task.id, status=task.status, task=task, replayed=duplicate)
        except BaseException as exc:
            if key is not None and not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            if key is not None:
                self._in_flight.pop(key, None)

    async def _earlier_submission(self, task_id: str, spec: TaskSpec) -> SubmitAccepted | None:
        """The task an earlier attempt of this submission made (its reply was lost), if there is one.

        Only the same body gets it back: a submission id is not a way to read another's task.
        """
        if not (self.state.is_retained(task_id) or task_id in self.state.tombstones):
            return None
        try:
            task = await self.find_task(task_id)
        except TaskNotFound:
            raise FieldError(
                subjects.HEADER_SUBMISSION_ID, "the task of this submission id was deleted; draw a new id"
            ) from None
        if task.spec != spec:
            raise FieldError(subjects.HEADER_SUBMISSION_ID, "this submission id belongs to another submission")
        return SubmitAccepted(id=task.id, status=task.status, task=task, replayed=True)

    async def _replay(self, key: str) -> SubmitAccepted | None:
        pending = self._in_flight.get(key)
        if pending is not None:
            await asyncio.shield(pending)
        task_id = self.state.task_for_key(key)
        if task_id is None:
            return None
        try:
            task = await self.find_task(task_id)
        except TaskNotFound:
            return None
        return SubmitAccepted(id=task.id, status=task.status, task=task, replayed=True)

    # --- cancel and delete --------------------------------------------------------------------

    async def cancel(self, request: CancelTaskRequest) -> TaskRecord:
        """Cancel the task; a final task is returned as it is (idempotent)."""
        task = await self.find_task(request.id)
        if task.status in FINAL_STATUSES:
            return task
        event = events.TaskCancelled(
            event_id=new_event_id(),
            occurred_at=utcnow(),
            task_id=task.id,
            reason=request.reason[:500] or "cancelled by user",
        )
        seq, _ = await self._publish(event, event.event_id)
        self._apply(event, seq)
        return self.task(request.id)

    async def delete(self, request: DeleteTaskRequest) -> DeleteReply:
        """Remove the task, its runs and logs; running runs are cancelled unless told otherwise."""
        task = await self.find_task(request.id)
        runs = len(self.state.runs[task.id]) if task.id in self.state.runs else task.run_count
        event = events.TaskDeleted(
            event_id=new_event_id(), occurred_at=utcnow(), task_id=task.id, cancel_running=request.cancel_running
        )
        seq, _ = await self._publish(event, event.event_id)
        self._apply(event, seq)
        return DeleteReply(id=task.id, deleted=True, runs_removed=runs)

    # --- schedules ----------------------------------------------------------------------------

    async def _schedule(self, task_id: str) -> TaskRecord:
        task = await self.find_task(task_id)
        if task.task_type != "scheduled":
            raise Conflict(f"task {task_id} is not a scheduled task")
        return task

    async def pause(self, task_id: str) -> TaskRecord:
        """Stop future fires (idempotent)."""
        task = await self._schedule(task_id)
        if task.status == "paused":
            return task
        if task.status != "active":
            raise Conflict(f"a {task.status} schedule cannot be paused")
        event = events.SchedulePaused(event_id=new_event_id(), occurred_at=utcnow(), task_id=task.id)
        seq, _ = await self._publish(event, event.event_id)
        self._apply(event, seq)
        return self.task(task_id)

    async def resume(self, task_id: str) -> TaskRecord:
        """Resume a paused schedule (idempotent)."""
        task = await self._schedule(task_id)
        if task.status == "active":
            return task
        if task.status != "paused":
            raise Conflict(f"a {task.status} schedule cannot be resumed")
        event = events.ScheduleResumed(event_id=new_event_id(), occurred_at=utcnow(), task_id=task.id)
        seq, _ = await self._publish(event, event.event_id)
        self._apply(event, seq)
        return self.task(task_id)

    async def trigger(self, task_id: str) -> tuple[TaskRecord, str]:
        """Fire the schedule once now; returns the task and the id the new run will have."""
        task = await self._schedule(task_id)
        if task.status == "cancelled":
            raise Conflict("a cancelled schedule cannot be triggered")
        event = events.ScheduleTriggered(event_id=new_event_id(), occurred_at=utcnow(), task_id=task.id)
        seq, _ = await self._publish(event, event.event_id)
        self._apply(event, seq)
        return self.task(task_id), run_id_for(task.id, f"trigger:{event.event_id}")
