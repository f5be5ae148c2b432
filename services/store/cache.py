"""A least-recently-used cache of finished task records, kept encoded and bounded by their size."""

from __future__ import annotations

from collections import OrderedDict

from proto import codec
from proto.records import TaskRecord

_decoder = codec.decoder(TaskRecord)


class RecordCache:
    """Task id → encoded record, evicting the least recently used past ``max_bytes``.

    Records are kept as their JSON: a decoded record takes about 2.5 times its encoded size, and
    decoding one on a hit costs microseconds.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, task_id: str) -> TaskRecord | None:
        """The cached record (now the most recently used), or None."""
        encoded = self._entries.get(task_id)
        if encoded is None:
            return None
        self._entries.move_to_end(task_id)
        return _decoder.decode(encoded)

    def put(self, task_id: str, encoded: bytes) -> None:
        """Cache a record given as its JSON, evicting older ones to stay in bounds."""
        self.pop(task_id)
        self._entries[task_id] = encoded
        self.bytes += len(encoded)
        while self.bytes > self.max_bytes and len(self._entries) > 1:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted)

    def pop(self, task_id: str) -> TaskRecord | None:
        """Remove and return the record, if cached."""
        encoded = self._entries.pop(task_id, None)
        if encoded is None:
            return None
        self.bytes -= len(encoded)
        return _decoder.decode(encoded)
