"""Every bound on a submitted task, in one place: what is accepted here cannot later break a consumer.

The numbers keep times inside ``datetime``'s range (no duration added to a fire time can overflow),
keep values shallow enough for every decoder (msgspec's C recursion stops near 1000 levels on
Python 3.11, 1500 on 3.12) and keep a task's events well inside a NATS message.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta

from proto.errors import FieldError

MAX_NAME_CHARS: Final = 200
"""Longest task name, function name or ``kwargs`` key."""
MAX_CODE_CHARS: Final = 256 * 1024
"""Longest ``function_code``."""
MAX_URL_CHARS: Final = 2048
"""Longest ``api_url``."""
MAX_METHOD_CHARS: Final = 16
"""Longest ``method`` (the names themselves are checked against the HTTP methods)."""
MAX_TIMEZONE_CHARS: Final = 64
"""Longest ``timezone`` (IANA names are at most 32 characters)."""
MAX_CRON_CHARS: Final = 200
"""Longest ``cron_expression``."""
MAX_REQUIREMENTS: Final = 50
"""Most ``requirements``."""
MAX_REQUIREMENT_CHARS: Final = 200
"""Longest requirement string."""
MAX_HEADERS: Final = 50
"""Most ``headers``."""
MAX_HEADER_NAME_CHARS: Final = 256
"""Longest header name."""
MAX_HEADER_VALUE_CHARS: Final = 8192
"""Longest header value."""
MAX_ARGS: Final = 256
"""Most positional ``args``."""
MAX_KWARGS: Final = 256
"""Most ``kwargs`` keys."""
MAX_EXPECTED_STATUS: Final = 64
"""Most ``expected_status`` codes."""
MAX_ALLOW_HOSTS: Final = 32
"""Most ``allow_hosts`` entries."""
MAX_HOST_CHARS: Final = 253
"""Longest ``allow_hosts`` entry (the longest DNS name)."""
MAX_NESTING_DEPTH: Final = 32
"""Deepest ``args``, ``kwargs`` or ``data`` (the list or object itself is level 1): far below the
depth at which any decoder on the path (gateway, store, scheduler, runner, sandbox) recurses out."""
MAX_VALUE_BYTES: Final = 1024 * 1024
"""Largest ``args`` + ``kwargs`` + ``data`` as JSON: a task's events, run messages and record
(``proto.streams.MAX_PAYLOAD_BYTES``) keep room for the code, the result and the envelope."""
VALUE_RULE: Final = (
    f"At most {MAX_NESTING_DEPTH} levels of lists and objects; args, kwargs and data "
    f"together at most {MAX_VALUE_BYTES} bytes of JSON."
)
"""The bounds JSON Schema cannot express, as the schema's description of those fields."""
MAX_EVENT_BYTES: Final = 2 * 1024 * 1024
"""Largest ``TaskSubmitted`` event: half a stream message, so the task record (spec + result) fits."""
MAX_CONCURRENCY_KEYS: Final = 4
"""Most ``concurrency_key`` values on one task (a run needs a permit of each)."""
MAX_FLOW_KEY_CHARS: Final = 128
"""Longest ``concurrency_key`` or ``fairness_key``."""
MAX_CONCURRENCY: Final = 100_000
"""Largest ``max_concurrency``."""
MAX_RATE_PER_SECOND: Final = 10_000.0
"""Fastest ``rate_limit`` (a faster one limits nothing a single leader could enforce)."""
MIN_PRIORITY: Final = 1
"""Lowest ``priority``."""
MAX_PRIORITY: Final = 5
"""Highest ``priority``."""
MAX_DURATION_SECONDS: Final = 366 * 24 * 3600.0
"""Longest delay, timeout or start deadline: a year."""
MAX_RETRY_DELAY_SECONDS: Final = 24 * 3600.0
"""Longest wait before a retry: a day (bounds ``retry_delay_seconds`` and ``retry_delay_max_seconds``)."""
MAX_JITTER_SECONDS: Final = 3600.0
"""Longest ``jitter_seconds``: an hour spreads the fires of the busiest hourly cron over all of it."""
MAX_RUNS: Final = 1_000_000_000
"""Largest ``max_runs``."""
MIN_MEMORY_MB: Final = 32
"""Smallest sandbox memory: the sandbox's python3 with json, traceback and asyncio loaded peaks at
18.5 MB RSS (measured in taskmesh-sandbox:py311-r1; under an 8 MB limit it is killed at start), so a
task below this would only ever end as ``oom_killed``; 32 leaves room for a small task's data."""
MIN_CPUS: Final = 0.01
"""Smallest CPU share: Docker takes NanoCpus=0 as *no limit*, and anything below 1e-9 rounds to it."""
LATEST_INSTANT: Final = datetime(3000, 1, 1, tzinfo=UTC)
"""Latest ``start_at`` / ``end_at``: far from ``datetime.max`` so no bounded duration added overflows."""
SUBMISSION_ID_MAX_AGE_SECONDS: Final = 90.0
"""Oldest ``Taskmesh-Submission-Id`` accepted (by the timestamp in its UUIDv7): a repeat must land
inside the TASKS stream's 120 s duplicate window, where JetStream recognises it."""
SUBMISSION_ID_MAX_SKEW_SECONDS: Final = 10.0
"""How far in the future a submission id's timestamp may be (clocks of gateway and store differ)."""


def check_submission_id(value: str, now: float, field: str = "Taskmesh-Submission-Id") -> None:
    """Raise FieldError unless ``value`` is a canonical UUIDv7 drawn within the accepted age (``now``: Unix seconds)."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise FieldError(field, f"{field} must be a UUIDv7") from None
    if parsed.version != 7 or str(parsed) != value:
        raise FieldError(field, f"{field} must be a UUIDv7 in its canonical (lower-case, dashed) form")
    age = now - (parsed.int >> 80) / 1000
    if not -SUBMISSION_ID_MAX_SKEW_SECONDS <= age <= SUBMISSION_ID_MAX_AGE_SECONDS:
        raise FieldError(
            field,
            f"{field} must be drawn at most {SUBMISSION_ID_MAX_AGE_SECONDS:g} s before the submission "
            f"(this one is {age:.0f} s old); draw a new one, or use an Idempotency-Key",
        )


Duration = Annotated[float, Meta(ge=0, le=MAX_DURATION_SECONDS)]
PositiveDuration = Annotated[float, Meta(gt=0, le=MAX_DURATION_SECONDS)]
RetryDelay = Annotated[float, Meta(ge=0, le=MAX_RETRY_DELAY_SECONDS)]

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_AS_PARENTHESES = bytes.maketrans(b"[]{}", b"()()")
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:]', re.DOTALL)


def check_json_depth(data: bytes, limit: int = MAX_NESTING_DEPTH) -> None:
    """Raise FieldError when a field of the JSON object ``data`` nests deeper than ``limit``.

    Runs before any decoder sees ``data``: msgspec decodes (and even skips) by recursion, so a deep
    document would raise RecursionError inside it. No recursion here: strings are cut out, then
    innermost bracket pairs are removed one level per pass (``[}`` counts as a pair: the decoder
    reports that mismatch itself, at a depth within the limit).
    """
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", data)).translate(_AS_PARENTHESES)
    for _ in range(limit + 1):  # the document's own object is one more level
        if not brackets:
            return
        shorter = brackets.replace(b"()", b"")
        if len(shorter) == len(brackets):
            raise FieldError(None, "the request body is not valid JSON (its brackets do not match)", "invalid_json")
        brackets = shorter
    if brackets:
        field = _deep_field(data, limit + 1)
        raise FieldError(field, f"{field or 'the body'} is nested more than {limit} levels deep")


def _deep_field(data: bytes, limit: int) -> str | None:
    """The top-level key under which nesting first passes ``limit`` (only run on a rejected body)."""
    depth, candidate, key = 0, None, None
    for match in _TOKEN.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return key
        elif token in (b"]", b"}"):
            depth -= 1
        elif token == b":":
            if depth == 1:
                key = candidate
        elif depth == 1:
            candidate = _key(token)
    return key


def _key(token: bytes) -> str | None:
    try:
        return msgspec.json.decode(token, type=str)
    except msgspec.MsgspecError:
        return None


def nesting_depth(value: Any, limit: int = MAX_NESTING_DEPTH) -> int:
    """Levels of lists and objects in ``value`` (a scalar is 0); stops counting past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple, dict)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth) for child in children)
    return deepest
