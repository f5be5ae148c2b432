"""A schedule as the scheduler reports it: its next fire and counters on the task, and its ledger of
skipped and missed slots (kept with its runs)."""

from __future__ import annotations

from datetime import datetime

from proto import events
from proto.api import LedgerEntry
from proto.records import TaskRecord
from services.store.write_back import PendingWrites


def apply_view(
    task: TaskRecord, next_run_at: datetime | None, fired: int, missed: int, skipped: int, *, paused: bool = False
) -> None:
    """Take the scheduler's view of the schedule: counters only ever grow; a paused one has no next fire;
    a view older than one already taken leaves the next fire alone, and so does a view taken while
    ``paused`` once the task is active again (a pause's view redelivered after the resume's)."""
    # Every due slot the scheduler handles is counted once (fired, missed or skipped), so the sum
    # orders its views without trusting clocks; a pause or resume counts nothing, so its view,
    # with the sum unchanged, still applies.
    older = fired + missed + skipped < task.fired_count + task.missed_count + task.skipped_count
    task.fired_count = max(task.fired_count, fired)
    task.missed_count = max(task.missed_count, missed)
    task.skipped_count = max(task.skipped_count, skipped)
    if task.status == "active" and not older and not paused:
        task.next_run_at = next_run_at


def skipped_entry(event: events.SlotSkipped) -> LedgerEntry:
    """The ledger's line for a fire skipped on purpose."""
    return LedgerEntry(scheduled_for=event.scheduled_for, state="skipped", reason=event.reason)


def missed_entry(event: events.SlotsMissed) -> LedgerEntry:
    """The ledger's line for fires missed while no scheduler ran."""
    return LedgerEntry(
        scheduled_for=event.first,
        state="missed",
        count=event.count,
        reason=f"{event.count} fire(s) from {event.first.isoformat()} to {event.last.isoformat()} "
        f"missed while no scheduler ran; policy {event.policy}, {event.caught_up} caught up",
    )


class Ledgers:
    """Each schedule's ledger in memory, newest last, at most ``limit`` entries."""

    def __init__(self, limit: int, pending: PendingWrites) -> None:
        self.limit = limit
        self.pending = pending
        self.entries: dict[str, list[LedgerEntry]] = {}

    def load(self, task_id: str, entries: list[LedgerEntry]) -> None:
        """Take a ledger read back from the runs bucket."""
        self.entries[task_id] = entries

    def add(self, task_id: str, entry: LedgerEntry) -> None:
        """Append an entry, unless the ledger has it (a redelivered event)."""
        ledger = self.entries.setdefault(task_id, [])
        if any(e.scheduled_for == entry.scheduled_for and e.state == entry.state for e in ledger):
            return
        ledger.append(entry)
        del ledger[: -self.limit]
        self.pending.ledgers.add(task_id)

    def forget(self, task_id: str) -> None:
        """Drop a task's ledger from memory (deleted, or finished and written)."""
        self.entries.pop(task_id, None)
