"""What is accepted on one Python decodes on another (issue 13): a store and its consumers may run
different interpreters, and msgspec's recursion limit differs between them (about 1000 levels on
3.11, tied to the Python stack; 1500 on 3.12, a C-level limit).

The body is accepted (or refused) under Python 3.12 in a subprocess, exactly as the store does;
an accepted event must then decode back there and here, under 3.11.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from proto import codec, events

ROOT = Path(__file__).resolve().parents[2]
PYTHON_312 = Path(os.environ.get("TASKMESH_PYTHON_312", "/root/.pyenv/versions/3.12.1/bin/python"))
DEPTHS = (32, 33, 500, 990, 1400, 1497)
"""Nesting depths of ``data``: at the bound, just past it, and around each Python's decoder limit."""

ACCEPT_AND_ROUND_TRIP = r"""
import base64, json, sys
from datetime import datetime, timezone
from proto import codec, events, tasks
from proto.errors import FieldError

base = b'{"name": "deep", "task_type": "immediate", "api_url": "http://127.0.0.1/", "data": '
for depth in json.loads(sys.argv[1]):
    body = base + b"[" * depth + b"1" + b"]" * depth + b"}"
    try:
        spec = codec.decode_spec(body)
        tasks.check_spec(spec, tasks.Limits())
    except FieldError as exc:
        print(json.dumps({"depth": depth, "refused": exc.field}))
        continue
    except RecursionError as exc:  # the store would answer 503 to this, and keep answering it
        print(json.dumps({"depth": depth, "crashed": repr(exc)}))
        continue
    event = events.TaskSubmitted(event_id="e", occurred_at=datetime.now(timezone.utc), task_id="t", spec=spec)
    try:
        data = codec.encode(event)
    except RecursionError as exc:  # accepted, then not even storable
        print(json.dumps({"depth": depth, "crashed": repr(exc)}))
        continue
    try:
        read_back = codec.task_event_decoder.decode(data) == event
    except RecursionError:
        read_back = False
    print(json.dumps({"depth": depth, "read_back": read_back, "event": base64.b64encode(data).decode()}))
"""


@pytest.fixture(scope="session")
def python_312(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway 3.12 venv with this project's msgspec, croniter and tzdata, made once per session."""
    uv = shutil.which("uv") or "/opt/taskmesh-env/bin/uv"
    if not PYTHON_312.exists() or not Path(uv).exists():
        message = f"Python 3.12 ({PYTHON_312}) and uv are needed to prove events decode on 3.12"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    venv = tmp_path_factory.mktemp("py312") / "venv"
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in ("msgspec", "croniter", "tzdata")]
    subprocess.run([uv, "venv", "-q", "--python", str(PYTHON_312), str(venv)], check=True, env=env, timeout=120)
    subprocess.run([uv, "pip", "install", "-q", *pins], check=True, env=env, timeout=300)
    return venv / "bin" / "python"


def test_an_event_accepted_on_python_312_decodes_back_on_312_and_311(python_312: Path) -> None:
    done = subprocess.run(
        [str(python_312), "-c", ACCEPT_AND_ROUND_TRIP, json.dumps(DEPTHS)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcomes = [json.loads(line) for line in done.stdout.splitlines()]
    assert [o["depth"] for o in outcomes] == list(DEPTHS), done.stderr

    for outcome in outcomes:
        assert "crashed" not in outcome, f"depth {outcome['depth']} on 3.12: {outcome.get('crashed')}, not a 400"
        if "refused" in outcome:
            assert outcome["refused"] == "data"
            continue
        assert outcome["read_back"], f"accepted on 3.12 at depth {outcome['depth']}, unreadable there"
        data = base64.b64decode(outcome["event"])
        try:
            assert isinstance(codec.task_event_decoder.decode(data), events.TaskSubmitted)
        except RecursionError:
            pytest.fail(f"accepted on 3.12 at depth {outcome['depth']}, unreadable on 3.11")
    assert {o["depth"] for o in outcomes if "refused" not in o} == {32}
