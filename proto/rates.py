"""Rules for the flow-control fields of a task spec: rates and key names (no I/O, no imports of specs)."""

from __future__ import annotations

import re
from typing import Annotated, Final

from msgspec import Meta

from proto import bounds
from proto.errors import FieldError

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PER_SECONDS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0}

FlowKey = Annotated[str, Meta(max_length=bounds.MAX_FLOW_KEY_CHARS)]
RateLimit = Annotated[str, Meta(max_length=32, description='"<count>/s", "<count>/m" or "<count>/h"')]


def parse_rate(text: str, field: str = "rate_limit") -> float:
    """Runs per second allowed by ``"10/s"``, ``"100/m"`` or ``"1000/h"``; FieldError otherwise."""
    found = _RATE.match(text)
    if found is None:
        raise FieldError(field, f"{field} must look like '10/s', '100/m' or '1000/h'")
    per_second = float(found.group(1)) / _PER_SECONDS[found.group(2)]
    if per_second <= 0 or per_second > bounds.MAX_RATE_PER_SECOND:
        raise FieldError(field, f"{field} must be above 0 and at most {bounds.MAX_RATE_PER_SECOND:g} per second")
    return per_second


FLOW_KEY_SCHEMA: Final = {
    "type": "string",
    "minLength": 1,
    "maxLength": bounds.MAX_FLOW_KEY_CHARS,
    "pattern": "^[^\\s\\x00-\\x1f\\x7f-\\x9f]+$",
}
"""JSON Schema of a flow key (in a URL path): what ``check_flow_key`` accepts is inside it."""


def check_flow_key(key: str, field: str) -> None:
    """A flow key is printable (str.isprintable), without whitespace, at most MAX_FLOW_KEY_CHARS long."""
    if not key or len(key) > bounds.MAX_FLOW_KEY_CHARS or not key.isprintable() or any(c.isspace() for c in key):
        raise FieldError(field, f"{field} must be 1 to {bounds.MAX_FLOW_KEY_CHARS} printable characters, no spaces")
