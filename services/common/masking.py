"""Credentials a task carries inline, masked wherever a task is read back (the store keeps them: the runner needs them)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from proto import api
from proto.records import RunRecord, TaskRecord
from proto.runs import DeadLetter
from proto.tasks import TaskSpec

MASK = "***"
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
SENSITIVE_WORDS = ("token", "secret", "password", "api-key", "api_key", "apikey")
"""A header whose name contains one of these (any case) is a credential too (``X-Auth-Token``, ``X-Secret``)."""


def is_sensitive_header(name: str) -> bool:
    """Whether a header's value is a credential."""
    lowered = name.lower()
    return lowered in SENSITIVE_HEADERS or any(word in lowered for word in SENSITIVE_WORDS)


def masked_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers with every credential's value replaced by ``***``."""
    return {name: MASK if is_sensitive_header(name) else value for name, value in headers.items()}


def masked_url(url: str) -> str:
    """The URL with the password of ``user:password@`` replaced by ``***``."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:  # the store refuses such a URL at submission; never show one unmasked
        return MASK
    if not has_password:
        return url
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def masked_spec(spec: TaskSpec) -> TaskSpec:
    """The spec as readers see it (the same object when it carries no credential)."""
    headers = masked_headers(spec.headers)
    url = masked_url(spec.api_url) if spec.api_url else spec.api_url
    if headers == spec.headers and url == spec.api_url:
        return spec
    return msgspec.structs.replace(spec, headers=headers, api_url=url)


def masked_result(result: Any) -> Any:
    """An API task's result (``status_code`` + ``headers``) with ``Set-Cookie`` masked."""
    if isinstance(result, dict) and "status_code" in result and isinstance(result.get("headers"), dict):
        headers = result["headers"]
        if any(name.lower() == "set-cookie" for name in headers):
            return {
                **result,
                "headers": {name: MASK if name.lower() == "set-cookie" else value for name, value in headers.items()},
            }
    return result


def masked_task(task: TaskRecord) -> TaskRecord:
    """The task as readers see it."""
    spec, result = masked_spec(task.spec), masked_result(task.result)
    if spec is task.spec and result is task.result:
        return task
    return msgspec.structs.replace(task, spec=spec, result=result)


def masked_reply(reply: Any) -> Any:
    """Any store reply with the tasks, runs and due runs it carries masked."""
    match reply:
        case TaskRecord():
            return masked_task(reply)
        case api.TaskPage():
            return msgspec.structs.replace(reply, tasks=[masked_task(t) for t in reply.tasks])
        case api.SubmitAccepted() | api.WaitReply() | api.TriggerReply():
            return msgspec.structs.replace(reply, task=masked_task(reply.task))
        case RunRecord():
            return msgspec.structs.replace(reply, result=masked_result(reply.result))
        case api.RunPage():
            return msgspec.structs.replace(reply, runs=[masked_reply(r) for r in reply.runs])
        case api.DeadLetterList():
            return msgspec.structs.replace(reply, dead_letters=[_masked_dead_letter(d) for d in reply.dead_letters])
    return reply


def _masked_dead_letter(letter: DeadLetter) -> DeadLetter:
    if letter.due is None:
        return letter
    return msgspec.structs.replace(letter, due=msgspec.structs.replace(letter.due, spec=masked_spec(letter.due.spec)))
