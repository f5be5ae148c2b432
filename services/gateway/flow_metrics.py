"""Prometheus lines per flow-control key, from the scheduler leader's ``LimitsReply``."""

from __future__ import annotations

from proto.flow import LimitsReply

MAX_KEYS_EXPORTED = 500
"""Keys beyond this many (by name) are left out: a label per tenant must not swamp Prometheus."""

_GAUGES = (
    ("taskmesh_flow_running", "gauge", "Runs of a key admitted and not finished.", "running"),
    ("taskmesh_flow_waiting", "gauge", "Runs of a key waiting for a permit or a token.", "waiting"),
    (
        "taskmesh_flow_admitted_total",
        "counter",
        "Runs admitted under a key since the leader started.",
        "admitted_total",
    ),
    (
        "taskmesh_flow_rate_waits_total",
        "counter",
        "Times a key's head run waited for a rate token.",
        "rate_waits_total",
    ),
)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def flow_lines(reply: LimitsReply | None) -> list[str]:
    """Per-key gauges and counters (nothing when no scheduler leader answered)."""
    if reply is None:
        return []
    limits = reply.limits[:MAX_KEYS_EXPORTED]
    lines: list[str] = []
    for name, kind, text, attribute in _GAUGES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{key="{_escape(item.key)}"}} {getattr(item, attribute)}' for item in limits]
    lines += [
        "# HELP taskmesh_flow_max_concurrency A key's limit on runs at once.",
        "# TYPE taskmesh_flow_max_concurrency gauge",
    ]
    lines += [
        f'taskmesh_flow_max_concurrency{{key="{_escape(item.key)}"}} {item.max_concurrency}'
        for item in limits
        if item.max_concurrency is not None
    ]
    return lines
