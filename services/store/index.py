"""Secondary indexes for list queries: task ids by creation and by status, newest first."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator

from proto.records import TaskRecord


class TaskIndex:
    """Sorted task ids (task ids sort by creation time), overall and per status.

    Inserts are nearly always appends (new ids are the largest), so the sorted lists stay cheap;
    a page walks down from its cursor, so concurrent inserts never shift a page.
    """

    def __init__(self) -> None:
        self.by_created: list[str] = []
        self.by_status: dict[str, list[str]] = {}
        self.kinds: Counter[str] = Counter()
        self.triggers: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.by_created)

    def add(self, task: TaskRecord) -> None:
        """Index a new task."""
        _insert(self.by_created, task.id)
        _insert(self.by_status.setdefault(task.status, []), task.id)
        self.kinds[task.kind] += 1
        self.triggers[task.task_type] += 1

    def move(self, task_id: str, old_status: str, new_status: str) -> None:
        """Re-file a task whose status changed."""
        if old_status == new_status:
            return
        _remove(self.by_status.get(old_status, []), task_id)
        _insert(self.by_status.setdefault(new_status, []), task_id)

    def remove(self, task: TaskRecord) -> None:
        """Forget a deleted task."""
        _remove(self.by_created, task.id)
        _remove(self.by_status.get(task.status, []), task.id)
        self.kinds[task.kind] -= 1
        self.triggers[task.task_type] -= 1

    def counts_by_status(self) -> dict[str, int]:
        """How many tasks are in each status (statuses with none left out)."""
        return {status: len(ids) for status, ids in sorted(self.by_status.items()) if ids}

    def walk(self, *, status: str | None, before: str | None) -> Iterator[str]:
        """Task ids newest first, optionally of one status, strictly older than cursor ``before``."""
        ids = self.by_status.get(status, []) if status is not None else self.by_created
        end = bisect.bisect_left(ids, before) if before is not None else len(ids)
        for position in range(end - 1, -1, -1):
            yield ids[position]

    def page(self, *, status: str | None, before: str | None, limit: int,
             keep: Callable[[str], bool]) -> tuple[list[str], str | None]:
        """Up to ``limit`` ids passing ``keep``; the cursor of the next page or None at the end."""
        found: list[str] = []
        for task_id in self.walk(status=status, before=before):
            if keep(task_id):
                found.append(task_id)
                if len(found) == limit + 1:
                    break
        if len(found) > limit:
            return found[:limit], found[limit - 1]
        return found, None


def _insert(ids: list[str], task_id: str) -> None:
    if not ids or ids[-1] < task_id:
        ids.append(task_id)
        return
    position = bisect.bisect_left(ids, task_id)
    if position == len(ids) or ids[position] != task_id:
        ids.insert(position, task_id)


def _remove(ids: list[str], task_id: str) -> None:
    position = bisect.bisect_left(ids, task_id)
    if position < len(ids) and ids[position] == task_id:
        del ids[position]
