"""Every error the client raises: one small tree under ``TaskmeshError``; no raw HTTP error leaks."""

from __future__ import annotations

from typing import Any


class TaskmeshError(Exception):
    """Base of every error of the Taskmesh client."""


class GatewayError(TaskmeshError):
    """The gateway did not give the answer asked for: it refused the request or could not be reached."""

    def body(self) -> dict[str, Any]:
        """The error as the API's JSON shape, for ``--json`` output."""
        return {"error": {"code": "unreachable", "message": str(self), "field": None}}


class GatewayUnreachable(GatewayError):
    """No HTTP answer at all: refused, timed out, a broken connection; or a URL no request can be sent to."""

    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient
        """Worth trying again (a submission is retried): False for a URL that can never work."""


class ApiError(GatewayError):
    """The gateway answered with an error: ``code`` for programs, ``field`` names the bad input if any."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{message} ({code}{f', field {field}' if field else ''})")
        self.status, self.code, self.message, self.field = status, code, message, field

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class TaskNotSucceeded(TaskmeshError):
    """The task ended without a result; ``error_type`` says why, ``traceback`` is the remote one if any."""

    def __init__(self, name: str, task_id: str, status: str, error: Any, run_id: str | None = None) -> None:
        self.task_id, self.run_id, self.status = task_id, run_id, status
        self.error_type: str = error.type if error else status
        self.message: str = error.message if error else f"the task ended {status}"
        self.exc_type: str | None = error.exc_type if error else None
        self.traceback: str | None = error.traceback if error else None
        text = f"task {name!r} ({task_id}) {status}: {self.message} [{self.error_type}]"
        if self.traceback:
            text += "\n\nRemote traceback:\n" + self.traceback.rstrip()
        super().__init__(text)


class TaskFailed(TaskNotSucceeded):
    """The task failed (an exception, a bad HTTP status, a dependency that would not install, …)."""


class TaskCancelled(TaskNotSucceeded):
    """The task was cancelled before it produced a result."""


class TaskTimedOut(TaskNotSucceeded):
    """The task ran past its ``timeout`` and was killed."""


class ResultNotReady(TaskmeshError, TimeoutError):
    """``result(timeout=...)`` passed before the task ended; the task itself goes on."""


class FunctionNotPortable(TaskmeshError, TypeError):
    """A decorated function cannot be sent as source: it uses a global, a closure variable, or is a lambda."""


class ArgumentsNotJson(TaskmeshError, TypeError):
    """Arguments must be JSON values (dict with str keys, list, str, int, float, bool, None)."""
