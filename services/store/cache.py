"""A least-recently-used cache of finished task records, bounded by their encoded size."""

from __future__ import annotations

from collections import OrderedDict

from proto.records import TaskRecord


class RecordCache:
    """Task id → record, evicting the least recently used past ``max_bytes`` of encoded records."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[TaskRecord, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, task_id: str) -> TaskRecord | None:
        """The cached record (now the most recently used), or None."""
        entry = self._entries.get(task_id)
        if entry is None:
            return None
        self._entries.move_to_end(task_id)
        return entry[0]

    def put(self, task_id: str, record: TaskRecord, size: int) -> None:
        """Cache ``record`` (``size``: its encoded length), evicting older ones to stay in bounds."""
        self.pop(task_id)
        self._entries[task_id] = (record, size)
        self.bytes += size
        while self.bytes > self.max_bytes and len(self._entries) > 1:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted

    def pop(self, task_id: str) -> TaskRecord | None:
        """Remove and return the record, if cached."""
        entry = self._entries.pop(task_id, None)
        if entry is None:
            return None
        self.bytes -= entry[1]
        return entry[0]
