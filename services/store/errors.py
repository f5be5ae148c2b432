"""Store errors, each mapped to one error code of the wire (``proto.errors``)."""

from __future__ import annotations

from proto.errors import ErrorBody, ErrorCode, error_body


class StoreError(Exception):
    """Base: carries the wire error code."""

    code: ErrorCode = "conflict"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> ErrorBody:
        return error_body(self.code, self.message, self.field)


class TaskNotFound(StoreError):
    """No task (or run) with that id."""

    code: ErrorCode = "not_found"


class Conflict(StoreError):
    """The request does not fit the task's current state."""

    code: ErrorCode = "conflict"


class StorageFull(StoreError):
    """JetStream holds as much as it may: new tasks are refused, what is accepted goes on."""

    code: ErrorCode = "insufficient_storage"


class NotReady(StoreError):
    """The store is still loading or JetStream did not take a write."""

    code: ErrorCode = "unavailable"
