"""What the store writes back: encoded records and removals, and where a schedule's ledger lives."""

from __future__ import annotations

from dataclasses import dataclass, field

from proto import subjects
from services.store.catalog import Row


@dataclass
class Writes:
    """Encoded records to put, and what to remove, in the store's buckets."""

    tasks: list[tuple[str, bytes]] = field(default_factory=list)
    runs: list[tuple[str, bytes]] = field(default_factory=list)
    removed_tasks: set[str] = field(default_factory=set)
    removed_runs: list[str] = field(default_factory=list)
    catalog_rows: dict[str, Row] = field(default_factory=dict)
    """The catalog rows of ``tasks``, taken with their encoding: committed once KV has the records."""
    metrics: bytes | None = None
    """The run metrics as they were when the records were taken (None: unchanged since the last
    take); saved with ``catalog_rows``, so a saved count and a final row always agree."""
    leaving: list[tuple[str, bytes]] = field(default_factory=list)
    """Finished tasks among ``tasks`` (id, encoded record): they leave memory once these are written."""
    held_back: set[str] = field(default_factory=set)
    """Tasks changed but not taken (not at their end yet, changed too recently): a later take has them."""

    def __bool__(self) -> bool:
        return bool(self.tasks or self.runs or self.removed_tasks or self.removed_runs)


LEDGER_RUN_ID = "ledger"


def ledger_key(task_id: str) -> str:
    """Key of a schedule's ledger of skipped and missed slots, kept in the runs bucket."""
    return subjects.run_key(task_id, LEDGER_RUN_ID)
