"""Encoders and decoders, built once: JSON on every subject."""

from __future__ import annotations

from typing import Any, TypeVar, overload

import msgspec

from proto import api, bounds, control, events, runs
from proto.errors import ErrorBody, ErrorDetail, FieldError
from proto.tasks import TaskSpec

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder] = {}


def encode(message: Any) -> bytes:
    """JSON bytes of any proto Struct (or plain JSON value)."""
    return _encoder.encode(message)


def decoder(kind: type[T] | Any) -> msgspec.json.Decoder:
    """The cached decoder for ``kind`` (a Struct type or a union alias)."""
    found = _decoders.get(kind)
    if found is None:
        found = _decoders[kind] = msgspec.json.Decoder(kind)
    return found


@overload
def decode(kind: type[T], data: bytes | None) -> T: ...
@overload
def decode(kind: Any, data: bytes | None) -> Any: ...
def decode(kind: Any, data: bytes | None) -> Any:
    """Decode ``data`` as ``kind``; raises msgspec.ValidationError / DecodeError (also for no data)."""
    return decoder(kind).decode(data or b"")


task_event_decoder = decoder(events.TaskEvent)
run_event_decoder = decoder(runs.RunEvent | events.ScheduleEvent)
run_due_decoder = decoder(runs.RunDue)
log_chunk_decoder = decoder(runs.LogChunk)
heartbeat_decoder = decoder(control.Heartbeat)
cancel_decoder = decoder(control.CancelRun)


def error_reply(data: bytes) -> ErrorBody:
    """The error body of a reply that carries the ``Taskmesh-Error`` header."""
    try:
        return decode(ErrorBody, data)
    except msgspec.MsgspecError:
        return ErrorBody(error=ErrorDetail(code="unavailable", message=f"unreadable error reply: {data[:200]!r}"))


def field_error_from(exc: msgspec.MsgspecError, *, body_name: str = "body") -> FieldError:
    """Translate msgspec's error into a FieldError naming the top-level field."""
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return FieldError(None, f"request {body_name} is not valid JSON: {text}", code="invalid_json")
    field = None
    if " - at `$." in text or " - at `key` in `$." in text:
        path = text.rsplit("`$.", 1)[1].rstrip("`")
        field = path.split(".")[0].split("[")[0]
    elif text.startswith("Object contains unknown field `"):
        field = text.split("`")[1]
        text = f"unknown field {field!r}"
    elif text.startswith("Object missing required field `"):
        field = text.split("`")[1]
        text = f"{field} is required"
    elif text.startswith("Expected `object`, got"):
        text = f"the request {body_name} must be a JSON object ({text})"
    message = text.split(" - at `")[0]
    if field and not message.startswith(field):
        message = f"{field}: {message}"
    return FieldError(field, message)


def decode_spec(data: bytes) -> TaskSpec:
    """Decode a task submission, translating errors into FieldError; too deep a value is refused
    before the (recursive) decoder sees it."""
    bounds.check_json_depth(data)
    try:
        return decode(TaskSpec, data)
    except msgspec.MsgspecError as exc:
        raise field_error_from(exc) from None
    except RecursionError:
        raise FieldError(None, "the request body is nested too deeply") from None


def accepted_event(event: events.TaskSubmitted) -> tuple[bytes, events.TaskSubmitted]:
    """The event as it will be published and as every consumer will read it back.

    What is accepted must be decodable: FieldError (the client's fault) when it does not read back.
    """
    try:
        data = encode(event)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise FieldError(None, f"the task cannot be stored: {type(exc).__name__}: {exc}") from None
    if len(data) > bounds.MAX_EVENT_BYTES:
        raise FieldError(
            None, f"the task is {len(data)} bytes as stored, more than {bounds.MAX_EVENT_BYTES}", "payload_too_large"
        )
    try:
        decoded = task_event_decoder.decode(data)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise FieldError(None, f"the task would not read back as sent: {type(exc).__name__}: {exc}") from None
    if not isinstance(decoded, events.TaskSubmitted):
        raise FieldError(None, f"the task would read back as {type(decoded).__name__}, not TaskSubmitted")
    return data, decoded


def decode_request(kind: type[T], data: bytes) -> T:
    """Decode an API request body (empty means ``{}``), translating errors into FieldError."""
    try:
        return decode(kind, data or b"{}")
    except msgspec.MsgspecError as exc:
        raise field_error_from(exc) from None
    except RecursionError:  # msgspec decodes (and skips unknown values) by recursion
        raise FieldError(None, "the request body is nested too deeply") from None


__all__ = ["accepted_event", "api", "decode", "decode_request", "decode_spec", "decoder", "encode", "error_reply"]
