"""``python -m proto.schema [DIR]``: write the JSON Schema of every message to ``proto/schema/``."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from proto import api, control, events, flow, records, runs, schedules, secrets, tasks
from proto.errors import ErrorBody

MESSAGES: dict[str, Any] = {
    "TaskSpec": tasks.TaskSpec,
    "TaskEvent": events.TaskEvent,
    "ScheduleEvent": events.ScheduleEvent,
    "RunEvent": runs.RunEvent,
    "RunDue": runs.RunDue,
    "LogChunk": runs.LogChunk,
    "DeadLetter": runs.DeadLetter,
    "CancelRun": control.CancelRun,
    "Heartbeat": control.Heartbeat,
    "RunnerPing": control.RunnerPing,
    "RunnerPong": control.RunnerPong,
    "TaskRecord": records.TaskRecord,
    "RunRecord": records.RunRecord,
    "Timer": schedules.AnyTimer,
    "ErrorBody": ErrorBody,
    "SubmitAccepted": api.SubmitAccepted,
    "ListTasksRequest": api.ListTasksRequest,
    "TaskPage": api.TaskPage,
    "WaitTaskRequest": api.WaitTaskRequest,
    "WaitReply": api.WaitReply,
    "TaskRef": api.TaskRef,
    "CancelTaskRequest": api.CancelTaskRequest,
    "DeleteTaskRequest": api.DeleteTaskRequest,
    "DeleteReply": api.DeleteReply,
    "ListRunsRequest": api.ListRunsRequest,
    "RunPage": api.RunPage,
    "RunRef": api.RunRef,
    "RunVerdict": api.RunVerdict,
    "RunVerdictsRequest": api.RunVerdictsRequest,
    "RunVerdicts": api.RunVerdicts,
    "GetLogsRequest": api.GetLogsRequest,
    "LogsReply": api.LogsReply,
    "ScheduleList": api.ScheduleList,
    "LedgerRequest": api.LedgerRequest,
    "Ledger": api.Ledger,
    "TriggerReply": api.TriggerReply,
    "Stats": api.Stats,
    "DeadLetterList": api.DeadLetterList,
    "StoreHealth": api.StoreHealth,
    "Health": api.Health,
    "PutSecretRequest": secrets.PutSecretRequest,
    "SecretRef": secrets.SecretRef,
    "SecretInfo": secrets.SecretInfo,
    "SecretList": secrets.SecretList,
    "SecretDeleted": secrets.SecretDeleted,
    "SecretEntry": secrets.SecretEntry,
    "WaitingRun": flow.WaitingRun,
    "Permit": flow.Permit,
    "KeyLimit": flow.KeyLimit,
    "SetLimitRequest": flow.SetLimitRequest,
    "LimitsReply": flow.LimitsReply,
}
"""Every message on the wire and every request/reply body, by name."""


def schemas() -> dict[str, bytes]:
    """File name → JSON Schema document (2020-12) of each message."""
    out = {}
    for name, kind in MESSAGES.items():
        document = _clean_descriptions(msgspec.json.schema(kind))
        document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        document["title"] = name
        out[f"{name}.json"] = (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    return out


def _clean_descriptions(node: Any) -> Any:
    """Docstrings as ``inspect.cleandoc`` leaves them, whichever way msgspec's version indents them."""
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node


def main(argv: list[str]) -> None:
    target = Path(argv[0]) if argv else Path(__file__).with_name("schema")
    target.mkdir(parents=True, exist_ok=True)
    for name, content in schemas().items():
        (target / name).write_bytes(content)
    print(f"wrote {len(MESSAGES)} schemas to {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
