"""Events: facts that happened, published on JetStream and applied idempotently by consumers.

Every event carries ``event_id`` (also its ``Nats-Msg-Id``) and ``occurred_at``; its ``type`` tag
names it on the wire. Consumers ignore fields they do not know (schema evolution: new fields
always get a default, types never change).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from msgspec import Struct

from proto.tasks import TaskSpec


class Event(Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event."""

    event_id: str
    occurred_at: datetime


# --- Task lifecycle (TASKS stream, published by the store) ------------------------------------


class TaskSubmitted(Event, frozen=True, tag="task_submitted"):
    """A task was accepted; ``occurred_at`` is the acceptance time delays count from."""

    subject_kind: ClassVar[str] = "submitted"

    task_id: str
    spec: TaskSpec
    idempotency_key: str | None = None


class TaskCancelled(Event, frozen=True, tag="task_cancelled"):
    """The user cancelled the task: nothing more may start; running runs are killed."""

    subject_kind: ClassVar[str] = "cancelled"

    task_id: str
    reason: str = "cancelled by user"


class TaskDeleted(Event, frozen=True, tag="task_deleted"):
    """The user deleted the task; its timers go, and its records are removed."""

    subject_kind: ClassVar[str] = "deleted"

    task_id: str
    cancel_running: bool = True


class SchedulePaused(Event, frozen=True, tag="schedule_paused"):
    """No further fires until resumed."""

    subject_kind: ClassVar[str] = "paused"

    task_id: str


class ScheduleResumed(Event, frozen=True, tag="schedule_resumed"):
    """Fires resume from the next fire time after ``occurred_at``."""

    subject_kind: ClassVar[str] = "resumed"

    task_id: str


class ScheduleTriggered(Event, frozen=True, tag="schedule_triggered"):
    """Run the scheduled task once now, besides its schedule."""

    subject_kind: ClassVar[str] = "triggered"

    task_id: str


TaskEvent = TaskSubmitted | TaskCancelled | TaskDeleted | SchedulePaused | ScheduleResumed | ScheduleTriggered


# --- Schedule bookkeeping (EVENTS stream, published by the scheduler) -------------------------

ScheduleState = Literal["active", "paused", "completed", "cancelled"]


class ScheduleUpdated(Event, frozen=True, tag="schedule_updated"):
    """The scheduler's view of a schedule after a change or a fire."""

    subject_kind: ClassVar[str] = "updated"

    task_id: str
    state: ScheduleState
    next_run_at: datetime | None = None
    fired_count: int = 0
    missed_count: int = 0
    skipped_count: int = 0
    last_fire_at: datetime | None = None


class SlotSkipped(Event, frozen=True, tag="slot_skipped"):
    """A fire time passed without a run, on purpose (overlap policy ``forbid``)."""

    subject_kind: ClassVar[str] = "skipped"

    task_id: str
    scheduled_for: datetime
    reason: str


class SlotsMissed(Event, frozen=True, tag="slots_missed"):
    """Fire times passed while no scheduler ran; what the misfire policy did about them."""

    subject_kind: ClassVar[str] = "missed"

    task_id: str
    count: int
    first: datetime
    last: datetime
    policy: str
    caught_up: int = 0


ScheduleEvent = ScheduleUpdated | SlotSkipped | SlotsMissed
