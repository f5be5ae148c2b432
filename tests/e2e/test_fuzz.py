"""Fuzzing beyond the gateway's first answer: what an accepted task does inside the consumers.

Specs are generated from TaskSpec's JSON Schema (the same bounds the OpenAPI document carries),
mixed with hostile values (deep nesting, huge and tiny numbers, the bounds' edges), and submitted
over HTTP and over NATS to a running stack. Every answer must be a 2xx or a 4xx naming a field;
every accepted task must reach a final status; afterwards no service logged a traceback, every
consumer has drained, and nothing was redelivered without end.

``TASKMESH_FUZZ_EXAMPLES`` sets the number of specs (CI: 300; ``make fuzz`` runs a long one) and
``TASKMESH_FUZZ_SEED`` replays a run (the seed is printed).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections import Counter
from typing import Any

import msgspec
import nats
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from proto import bounds, codec, subjects
from proto.tasks import TaskSpec
from tests.support import FINAL, Api, Stack, TargetServer

EXAMPLES = int(os.environ.get("TASKMESH_FUZZ_EXAMPLES", "300"))
SETTLE_SECONDS = 180.0
SCHEDULE_STATES = {"active", "paused"}
"""A schedule is settled when it is accepted and waiting for its next fire."""
MAX_REDELIVERED = 10
"""Redeliveries a whole run may cause (a runner's hand-back is legitimate; a loop is not)."""

FUNCTIONS = {
    "identity": "def identity(*args, **kwargs):\n    return {'args': args, 'kwargs': kwargs}\n",
    "boom": "def boom(*args, **kwargs):\n    raise ValueError('fuzzed failure ' * 1000)\n",
    "chatty": "def chatty(*args, **kwargs):\n    for i in range(2000):\n        print('line', i, 'x' * 100)\n    return len(args)\n",
    "napper": "def napper(*args, **kwargs):\n    import time\n    time.sleep(0.2)\n    return 'rested'\n",
    "deep": "def deep(*args, **kwargs):\n    value = []\n    for _ in range(5000):\n        value = [value]\n    return value\n",
    "huge": "def huge(*args, **kwargs):\n    return 'A' * 3_000_000\n",
}
CRONS = ["* * * * * *", "*/2 * * * * *", "0 0 * * *", "@hourly", "61 * * * *", "not a cron"]


def _nested(depth: int) -> str:
    """A placeholder for JSON nested ``depth`` levels deep; ``_encode`` writes it as text (no recursion)."""
    return f"__nested_{depth}__"


def _encode(spec: dict[str, Any]) -> bytes:
    """The spec as JSON, with each nesting placeholder replaced by the nested JSON it stands for."""
    text = codec.encode(spec)
    for depth in {int(m) for m in re.findall(rb'"__nested_(\d+)__"', text)}:
        text = text.replace(f'"__nested_{depth}__"'.encode(), b'{"k":[' * depth + b"1" + b"]}" * depth)
    return text


HOSTILE_JSON = st.one_of(
    st.integers(min_value=1, max_value=3000).map(_nested),
    st.sampled_from([1e308, -1e308, 2**63, -(2**63) - 1, 2**200, 0.0, -0.0, "\u0000", "🙂" * 1000]),
)
HOSTILE_NUMBERS = st.sampled_from([0, -1, 1e-10, 0.01, 1, 2**31, 2**63, 1e12, 1e308, -1e308, 3600, 3601, 86400])


def _from_property(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values for one property of the JSON Schema: inside its bounds, on their edges, and just past them."""
    if "anyOf" in schema:
        return st.one_of(*(_from_property(option) for option in schema["anyOf"]))
    if "enum" in schema:
        return st.sampled_from(schema["enum"] * 9 + ["", "not-one-of-them"])
    kind = schema.get("type")
    if kind in ("number", "integer"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        edges = [edge + delta for edge in (low, high) if edge is not None for delta in (-1, 0, 1)]
        inside = (
            st.integers(
                min_value=int(low) if low is not None else None, max_value=int(high) if high is not None else None
            )
            if kind == "integer"
            else st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
        )
        return st.one_of(inside, inside, st.sampled_from(edges or [0]))
    if kind == "string":
        size = schema.get("maxLength", 64)
        low, high = schema.get("minLength", 0), min(size, 64)
        printable = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=low, max_size=high)
        text = st.one_of(printable, printable, st.text(min_size=low, max_size=high))
        return st.one_of(text, text, text, st.just("x" * (size + 1))) if "maxLength" in schema else text
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(_from_property(schema.get("items", {})), max_size=5)
    if kind == "object":
        values = _from_property(schema.get("additionalProperties", {}))
        return st.dictionaries(st.text(max_size=10), values, max_size=5)
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=10,
    )


def _schema_fields() -> dict[str, st.SearchStrategy[Any]]:
    """A strategy per property of TaskSpec's JSON Schema."""
    properties = msgspec.json.schema(TaskSpec)["$defs"]["TaskSpec"]["properties"]
    return {name: _from_property(prop) for name, prop in properties.items()}


def _schema_strategy() -> st.SearchStrategy[dict[str, Any]]:
    """TaskSpecs as its JSON Schema describes them: required fields always, each optional one or not."""
    required = set(msgspec.json.schema(TaskSpec)["$defs"]["TaskSpec"].get("required", []))
    fields = _schema_fields()

    @st.composite
    def draw_spec(draw: st.DrawFn) -> dict[str, Any]:
        return {
            name: draw(values) for name, values in fields.items() if name in required or draw(st.integers(0, 3)) == 0
        }

    return draw_spec()


def _spec_strategy(target_url: str) -> st.SearchStrategy[dict[str, Any]]:
    """Specs in three shapes: a valid one, a valid one with one field from the schema, all from the schema.

    Each then gets up to two hostile values. Runnable parts are ours (the functions above, URLs of
    the local target): a fuzzed spec never reaches an address this machine does not own.
    """
    schema_specs = _schema_strategy()
    schema_fields = _schema_fields()

    @st.composite
    def specs(draw: st.DrawFn) -> dict[str, Any]:
        shape = draw(st.sampled_from(["valid", "one field from the schema", "all from the schema"]))
        spec: dict[str, Any] = {
            "name": "fuzz",
            "task_type": draw(st.sampled_from(["immediate", "delayed", "scheduled"])),
        }
        if shape == "all from the schema":
            spec = dict(draw(schema_specs))
        elif shape == "one field from the schema":
            field = draw(st.sampled_from(sorted(schema_fields)))
            spec[field] = draw(schema_fields[field])
        if draw(st.booleans()):
            name = draw(st.sampled_from(sorted(FUNCTIONS)))
            spec.update(function_code=FUNCTIONS[name], function_name=name)
            spec.pop("api_url", None)
        else:
            spec.pop("function_code", None)
            spec.pop("function_name", None)
            spec["api_url"] = target_url + draw(
                st.sampled_from(["/hello", "/echo", "/status/500", "/slow?seconds=0.3"])
            )
        spec["requirements"] = []  # no package index is reachable from here
        spec.pop("isolated", None)
        if spec.get("task_type") == "delayed" and not isinstance(spec.get("delay_seconds"), (int, float)):
            spec["delay_seconds"] = draw(st.floats(min_value=0, max_value=2))
        if spec.get("task_type") == "scheduled" or "cron_expression" in spec:
            spec["cron_expression"] = draw(st.sampled_from(CRONS))
            spec["max_runs"] = draw(st.sampled_from([1, 2, spec.get("max_runs", 1)]))
        if isinstance(spec.get("delay_seconds"), (int, float)):
            spec["delay_seconds"] = min(spec["delay_seconds"], 2)
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # a hostile value or two in some specs
            field = draw(
                st.sampled_from(
                    [
                        "data",
                        "args",
                        "kwargs",
                        "timeout",
                        "cpus",
                        "memory_mb",
                        "max_retries",
                        "retry_delay_seconds",
                        "retry_delay_max_seconds",
                        "start_deadline_seconds",
                        "delay_seconds",
                        "max_runs",
                        "expected_status",
                        "headers",
                    ]
                )
            )
            if field in ("data",):
                spec[field] = draw(HOSTILE_JSON)
            elif field == "args":
                spec[field] = [draw(HOSTILE_JSON)]
            elif field == "kwargs":
                spec[field] = {"v": draw(HOSTILE_JSON)}
            elif field == "expected_status":
                spec[field] = [draw(HOSTILE_NUMBERS)]
            elif field == "headers":
                spec[field] = {"X-Fuzz": "v" * draw(st.sampled_from([1, 10_000, 100_000]))}
            else:
                spec[field] = draw(HOSTILE_NUMBERS)
        # Accepted retries must end within the test: few, with short waits (the bounds tests try long ones).
        if isinstance(spec.get("max_retries"), int) and 0 < spec["max_retries"] <= 20:
            spec["max_retries"] = min(spec["max_retries"], 2)
            spec["retry_delay_seconds"] = 0.2
            spec["retry_delay_max_seconds"] = 0.5
        delay = spec.get("delay_seconds")
        if isinstance(delay, (int, float)) and 2 < delay <= bounds.MAX_DURATION_SECONDS:
            spec["delay_seconds"] = 2  # accepted, so it must end within the test (the bounds tests try long ones)
        return spec

    return specs()


def _generate(target_url: str, count: int, replay_seed: int) -> list[dict[str, Any]]:
    """``count`` specs drawn by hypothesis (its edge-seeking generation, no shrinking: this is a corpus)."""
    drawn: list[dict[str, Any]] = []

    @seed(replay_seed)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_spec_strategy(target_url))
    def collect(spec: dict[str, Any]) -> None:
        drawn.append(spec)

    collect()
    return drawn[:count]


async def _submit_http(api: Api, spec: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await api.client.post("/api/tasks", content=_encode(spec), headers={"Content-Type": "application/json"})
    return response.status_code, response.json()


async def _submit_nats(nc: Any, spec: dict[str, Any], index: int) -> tuple[int, dict[str, Any]]:
    reply = await nc.request(
        subjects.SUBMIT_TASK,
        _encode(spec),
        timeout=30,
        headers={subjects.HEADER_MSG_ID: f"fuzz-{index}-{time.time_ns()}"},
    )
    body = msgspec.json.decode(reply.data)
    return (400 if "error" in body else 201), body


def _check_answer(status: int, body: dict[str, Any], spec: dict[str, Any]) -> None:
    assert status < 500, f"{status} for {str(spec)[:500]}: {body}"
    if status >= 400:
        error = body.get("error")
        assert error and error.get("code") and error.get("message"), f"no error body for {str(spec)[:300]}: {body}"


async def _drained(nc: Any) -> dict[str, dict[str, int]]:
    """Every durable consumer of every stream, once none has anything pending (or as they are at the deadline)."""
    js = nc.jetstream()
    deadline = time.monotonic() + 60
    while True:
        state: dict[str, dict[str, int]] = {}
        for stream in await js.streams_info():
            for consumer in await js.consumers_info(stream.config.name):
                if not consumer.config.durable_name:  # a watcher's ephemeral, ordered consumer
                    continue
                state[f"{stream.config.name}/{consumer.name}"] = {
                    "pending": consumer.num_pending or 0,
                    "ack_pending": consumer.num_ack_pending or 0,
                    "redelivered": consumer.num_redelivered or 0,
                }
        busy = {name: s for name, s in state.items() if s["pending"] or s["ack_pending"]}
        if not busy or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.5)


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {"TASKMESH_MAX_TIMEOUT_SECONDS": "30"}


@pytest.mark.docker
async def test_generated_specs_over_http_and_nats_never_wedge_a_service(
    stack: Stack, api: Api, target: TargetServer, docker_engine: None
) -> None:
    seed = int(os.environ.get("TASKMESH_FUZZ_SEED", str(random.randrange(2**32))))
    print(f"fuzz seed {seed} ({EXAMPLES} examples): replay with TASKMESH_FUZZ_SEED={seed}")
    specs = _generate(target.url, EXAMPLES, seed)
    assert stack.nats is not None
    nc = await nats.connect(stack.nats.url)
    try:
        gate = asyncio.Semaphore(16)
        rejected: Counter[str] = Counter()

        async def submit(index: int, spec: dict[str, Any]) -> str | None:
            async with gate:
                if index % 2:
                    status, body = await _submit_nats(nc, spec, index)
                else:
                    status, body = await _submit_http(api, spec)
            _check_answer(status, body, spec)
            if status >= 400:
                rejected[body["error"].get("field") or body["error"]["code"]] += 1
            return body["id"] if status < 300 else None

        accepted = [
            task_id for task_id in await asyncio.gather(*(submit(i, s) for i, s in enumerate(specs))) if task_id
        ]
        print(f"{len(accepted)} of {len(specs)} specs accepted; rejected by field: {dict(rejected.most_common())}")
        assert accepted, "no generated spec was accepted: the generator no longer produces valid specs"

        async def settle(task_id: str) -> dict[str, Any]:
            deadline = time.monotonic() + SETTLE_SECONDS
            while True:
                task = await api.task(task_id)
                if task["status"] in FINAL or task["status"] in SCHEDULE_STATES:
                    return task
                assert time.monotonic() < deadline, f"task {task_id} not final after {SETTLE_SECONDS} s: {task}"
                await asyncio.sleep(0.5)

        finals = await asyncio.gather(*(settle(task_id) for task_id in accepted))
        internal = [t for t in finals if (t.get("error") or {}).get("type") == "internal"]
        assert not internal, f"accepted specs that a consumer could not process: {internal[:3]}"

        for task in finals:  # schedules that would go on firing: stop them before counting what is left
            if task["status"] in SCHEDULE_STATES:
                response = await api.client.delete(f"/api/scheduled-tasks/{task['id']}")
                assert response.status_code < 300, response.text

        consumers = await _drained(nc)
        busy = {name: s for name, s in consumers.items() if s["pending"] or s["ack_pending"]}
        assert not busy, f"consumers still have work after the run: {busy}"
        redelivered = sum(s["redelivered"] for s in consumers.values())
        assert redelivered <= MAX_REDELIVERED, f"redeliveries: {consumers}"
    finally:
        await nc.close()

    for key, service in stack.services.items():
        log = service.log()
        assert "Traceback" not in log, f"{key} logged a traceback:\n{log[log.index('Traceback') - 2000 :][:8000]}"
