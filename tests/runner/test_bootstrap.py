"""The sandbox bootstrap: user code cannot forge the result frame, and outcomes stay bounded."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from services.runner.sandbox.channel import FRAME_MARGIN_BYTES, ResultScanner
from services.runner.sandbox.docker_sandbox import BOOTSTRAP

RESULT_CAP = 1 << 20
IMAGE = os.environ.get("TASKMESH_SANDBOX_IMAGE", "taskmesh-sandbox:py311-r1")
FORGER = (Path(__file__).with_name("forger_task.py")).read_text()
LOCKDOWN = [
    "--network",
    "none",
    "--user",
    "65534:65534",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--init",
    "--read-only",
    "--tmpfs",
    "/tmp:rw,size=64m,mode=1777",
    "--pids-limit",
    "128",
    "--memory",
    "512m",
]


def stdin_for(nonce: str, function_code: str, function: str) -> bytes:
    header = {"nonce": nonce, "mode": "code", "result_cap": RESULT_CAP, "frame_cap": RESULT_CAP + FRAME_MARGIN_BYTES}
    payload = {
        "mode": "code",
        "code": function_code,
        "function": function,
        "args": [],
        "kwargs": {},
        "result_cap": RESULT_CAP,
    }
    return json.dumps(header).encode() + b"\n" + json.dumps(payload).encode() + b"\n"


def run_locally(nonce: str, function_code: str, function: str = "main") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-I", "-u", "-c", BOOTSTRAP],
        input=stdin_for(nonce, function_code, function),
        capture_output=True,
        timeout=120,
    )


def run_in_sandbox(nonce: str, function_code: str, function: str) -> subprocess.CompletedProcess[bytes]:
    """The bootstrap in a container locked down like the runner's (as nobody, no capabilities)."""
    name = f"taskmesh-test-bootstrap-{secrets.token_hex(4)}"
    try:
        return subprocess.run(
            ["docker", "run", "--rm", "-i", "--name", name, *LOCKDOWN, IMAGE, "python3", "-I", "-u", "-c", BOOTSTRAP],
            input=stdin_for(nonce, function_code, function),
            capture_output=True,
            timeout=180,
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def split(nonce: str, stream: bytes) -> tuple[bytes, dict[str, object] | None]:
    """(user output, decoded result frame) as the runner sees them."""
    scanner = ResultScanner(nonce, RESULT_CAP + FRAME_MARGIN_BYTES)
    shown = scanner.feed(stream) + scanner.leftover()
    return shown, (json.loads(scanner.result) if scanner.result is not None else None)


def test_user_code_that_searches_everywhere_for_the_nonce_cannot_forge_the_result_frame(docker_engine: None) -> None:
    nonce = secrets.token_hex(16)

    done = run_in_sandbox(nonce, FORGER, "attack")

    shown, frame = split(nonce, done.stdout)
    assert frame is not None, done.stderr.decode(errors="replace")[-2000:]
    assert frame["ok"] is True, frame
    result = frame["result"]
    assert result["candidates"] > 0  # it did find hex strings and tried them all ...
    assert b'"result":"forged"' in shown  # ... as user output, which is all they are
    assert result["parent_mem"] == "PermissionError" and result["parent_fd0"] == "PermissionError", result
    assert nonce.encode() not in shown
    stderr = ResultScanner(nonce, 64)
    assert nonce.encode() not in stderr.feed(done.stderr) and stderr.result == b"\n"


FORGED_OUTCOMES = [
    pytest.param(
        {"ok": False, "error": {"type": "oom_killed", "message": "fake"}},
        "invalid_result",
        id="an-error-type-the-child-never-reports",
    ),
    pytest.param({"ok": True, "result": "x" * (RESULT_CAP + 10)}, "result_too_large", id="a-result-over-the-cap"),
    pytest.param({"ok": "yes"}, "invalid_result", id="an-outcome-without-a-boolean-ok"),
]


@pytest.mark.parametrize(("outcome", "error_type"), FORGED_OUTCOMES)
def test_an_outcome_written_straight_into_the_parents_pipe_claims_no_more_than_the_function_could(
    outcome: dict[str, object], error_type: str
) -> None:
    data = json.dumps(outcome).encode()
    source = (
        "import os, struct\n"
        "def main():\n"
        f"    data = {data!r}\n"
        "    for fd in map(int, os.listdir('/proc/self/fd')):\n"
        "        try:\n"
        "            os.write(fd, struct.pack('>Q', len(data)) + data)\n"
        "        except OSError:\n"
        "            pass\n"
        "    os._exit(0)\n"
    )
    nonce = secrets.token_hex(16)

    done = run_locally(nonce, source)

    _, frame = split(nonce, done.stdout)
    assert frame is not None, done.stderr.decode(errors="replace")[-2000:]
    assert frame["ok"] is False and frame["error"]["type"] == error_type, frame


def test_an_exception_with_a_60_mb_message_fails_with_message_and_traceback_cut_to_64_ki_characters() -> None:
    nonce = secrets.token_hex(16)

    done = run_locally(nonce, "def main():\n    raise Exception('A' * 60_000_000)\n")

    _, frame = split(nonce, done.stdout)
    assert frame is not None and frame["ok"] is False
    error = frame["error"]
    assert error["type"] == "exception" and error["exc_type"] == "Exception"
    assert error["message"].startswith("Exception: AAAA")
    assert 65536 < len(error["message"]) < 65536 + 100 and "[truncated: " in error["message"]
    assert 65536 < len(error["traceback"]) < 65536 + 100 and "[truncated: " in error["traceback"]
    assert len(done.stdout) < 300_000


@pytest.mark.parametrize(
    ("source", "exit_code"),
    [
        pytest.param("import os\ndef main():\n    os._exit(3)\n", 3, id="an-exit-code"),
        pytest.param(
            "import os, signal\ndef main():\n    os.kill(os.getpid(), signal.SIGKILL)\n", 128 + 9, id="a-signal"
        ),
    ],
)
def test_a_function_that_ends_its_process_ends_the_bootstrap_the_same_way_without_a_frame(
    source: str, exit_code: int
) -> None:
    nonce = secrets.token_hex(16)

    done = run_locally(nonce, source)

    assert done.returncode == exit_code
    assert nonce.encode() not in done.stdout + done.stderr


AWAITABLES = "\n".join(
    [
        "import asyncio, types",
        "async def coroutine():",
        "    await asyncio.sleep(0)",
        "    return 'coroutine'",
        "class Ready:",
        "    def __await__(self):",
        "        return (yield from asyncio.sleep(0, 'custom').__await__())",
        "def custom():",
        "    return Ready()",
        "@types.coroutine",
        "def generator_based():",
        "    yield from asyncio.sleep(0).__await__()",
        "    return 'generator-based'",
        "def generator():",
        "    yield 1",
    ]
)


@pytest.mark.parametrize(
    ("function", "frame"),
    [
        pytest.param("coroutine", {"ok": True, "result": "coroutine"}, id="an-async-function"),
        pytest.param("custom", {"ok": True, "result": "custom"}, id="an-object-with-__await__"),
        pytest.param("generator_based", {"ok": True, "result": "generator-based"}, id="a-types-coroutine"),
    ],
)
def test_a_function_returning_any_awaitable_gets_what_it_resolves_to(function: str, frame: dict[str, object]) -> None:
    nonce = secrets.token_hex(16)

    done = run_locally(nonce, AWAITABLES, function)

    assert split(nonce, done.stdout)[1] == frame, done.stderr.decode(errors="replace")[-2000:]


def test_a_plain_generator_is_a_result_not_an_awaitable() -> None:
    nonce = secrets.token_hex(16)

    done = run_locally(nonce, AWAITABLES, "generator")

    _, frame = split(nonce, done.stdout)
    assert frame is not None and frame["ok"] is False
    assert frame["error"]["type"] == "invalid_result"


def test_a_plain_function_runs_without_asyncio_loaded() -> None:
    # asyncio, inspect and typing were a third of every sandbox's start-up CPU (bench/README, W5)
    nonce = secrets.token_hex(16)
    source = "import sys\ndef main():\n    return sorted({'asyncio', 'inspect', 'typing'} & set(sys.modules))\n"

    done = run_locally(nonce, source)

    assert split(nonce, done.stdout)[1] == {"ok": True, "result": []}
