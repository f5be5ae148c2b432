"""When a schedule fires, and what to do with fires that were missed. Pure: no I/O, no clock.

A slot is a cron time; it fires at that time plus the task's jitter offset (``schedules.jittered``).
Lateness and misfires are measured from the jittered time: jitter never makes a fire late.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from proto import schedules
from proto.cron import CronSchedule
from proto.schedules import CronTimer
from proto.tasks import TaskSpec

MISSED_COUNT_CAP = 100_000
_cache: dict[tuple[str, str], CronSchedule] = {}


def schedule_of(spec: TaskSpec) -> CronSchedule:
    """The parsed cron schedule of a spec (parsed once per expression and zone)."""
    key = (spec.cron_expression or "", spec.timezone)
    found = _cache.get(key)
    if found is None:
        if len(_cache) > 10_000:
            _cache.clear()
        found = _cache[key] = CronSchedule(*key)
    return found


def next_due(spec: TaskSpec, after: datetime) -> datetime | None:
    """The first fire strictly after ``after`` within ``start_at``..``end_at``; None when none is left."""
    return schedules.next_due(spec, after, schedule_of(spec))


def fire_time(timer: CronTimer, slot_at: datetime) -> datetime:
    """When the slot ``slot_at`` of ``timer``'s schedule fires (jitter applied)."""
    return schedules.jittered(timer.task_id, timer.spec, slot_at)


@dataclass
class FirePlan:
    """What to do now that a schedule's ``due_at`` has come."""

    fire: list[datetime] = field(default_factory=list)
    """Slots (cron times) to start a run for, oldest first."""
    missed: int = 0
    missed_first: datetime | None = None
    """Fire time (jitter applied) of the first missed slot."""
    missed_last: datetime | None = None
    next_due: datetime | None = None
    """The next slot; None: the schedule is complete (``end_at`` passed or ``max_runs`` reached)."""
    next_fire_at: datetime | None = None
    """When ``next_due`` fires (jitter applied)."""


def plan(timer: CronTimer, now: datetime, grace: timedelta, run_all_limit: int) -> FirePlan:
    """Fires for ``timer`` at ``now``; a fire later than ``grace`` was missed (no scheduler ran)
    and is handled by the misfire policy: ``run_once`` (default), ``skip`` or ``run_all``."""
    spec = timer.spec
    due = timer.due_at
    result = FirePlan()
    if now - fire_time(timer, due) <= grace:
        slots, last_slot = [due], due
    else:
        late = [due]
        for slot_at in schedule_of(spec).fires_between(due, now, MISSED_COUNT_CAP):
            if fire_time(timer, slot_at) > now:
                break  # its jittered time is still to come: it is the next due slot, not a missed one
            late.append(slot_at)
        if spec.end_at is not None:
            late = [t for t in late if t <= spec.end_at] or [due]
        last_slot = late[-1]
        if spec.misfire_policy == "skip":
            slots = []
        elif spec.misfire_policy == "run_all":
            slots = late[-run_all_limit:]
        else:
            slots = [last_slot]
        result.missed = len(late) - len(slots)
        if result.missed:
            result.missed_first, result.missed_last = fire_time(timer, late[0]), fire_time(timer, late[-1])
    if spec.max_runs is not None:
        slots = slots[: max(0, spec.max_runs - timer.fired_count)]
    result.fire = slots
    fired_after = timer.fired_count + len(slots)
    if spec.max_runs is not None and fired_after >= spec.max_runs:
        result.next_due = None
    else:
        result.next_due = next_due(spec, last_slot)
    if result.next_due is not None:
        result.next_fire_at = fire_time(timer, result.next_due)
    return result
