"""Hostile code: each attempt ends in a clear status, the runner stays healthy, no container stays.

Network probes aim only at this machine (loopback, the Docker bridge) — never at outside hosts.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Api, Stack

POOL_SIZE = 1
FORGER = (Path(__file__).parent.parent / "runner" / "forger_task.py").read_text()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("abuse"), env_extra={"TASKMESH_POOL_SIZE": str(POOL_SIZE)})
    try:
        running.start()
        yield running
    finally:
        running.stop()


def code(name: str, source: str, function: str = "attack", **extra: object) -> dict[str, object]:
    return {"name": name, "task_type": "immediate", "function_code": source, "function_name": function, **extra}


async def attack(api: Api, stack: Stack, body: dict[str, object]) -> dict[str, object]:
    created = await api.submit(body)
    task = await api.wait_final(created["id"], timeout=90)
    # the runner is still healthy: a plain task right after succeeds
    after = await api.submit(code("after", "def f():\n    return 'alive'", "f"))
    assert (await api.wait_final(after["id"], timeout=60))["result"] == "alive"
    # and the attacker's container is gone: only the warm pool's one waiting container remains
    deadline = time.monotonic() + 20
    while True:
        containers = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=org.taskmesh.instance={stack.instance}"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()
        if len(containers) <= POOL_SIZE:
            return task
        assert time.monotonic() < deadline, f"containers left behind: {containers}"
        await asyncio.sleep(0.2)


async def test_a_fork_bomb_hits_the_pids_limit(api: Api, stack: Stack) -> None:
    source = "import os\ndef attack():\n    while True:\n        os.fork()"
    task = await attack(api, stack, code("fork bomb", source, timeout=20))
    assert task["status"] in ("failed", "timed_out")
    if task["status"] == "failed":
        assert task["error"]["exc_type"] == "BlockingIOError" or task["error"]["type"] in ("exit_code", "signal")


async def test_a_memory_bomb_is_killed_for_memory(api: Api, stack: Stack) -> None:
    source = "def attack():\n    data = []\n    while True:\n        data.append(b'x' * 50_000_000)"
    task = await attack(api, stack, code("memory bomb", source))
    assert task["error"]["type"] in ("oom_killed", "exception")  # MemoryError when the allocation itself fails
    if task["error"]["type"] == "exception":
        assert task["error"]["exc_type"] == "MemoryError"


async def test_a_cpu_spin_is_stopped_at_its_timeout(api: Api, stack: Stack) -> None:
    task = await attack(api, stack, code("spin", "def attack():\n    while True:\n        pass", timeout=2))
    assert task["status"] == "timed_out"


async def test_filling_tmp_stops_at_its_size(api: Api, stack: Stack) -> None:
    source = (
        "def attack():\n    with open('/tmp/fill', 'wb') as f:\n"
        "        for _ in range(1024):\n            f.write(b'x' * 1024 * 1024)\n    return 'wrote 1 GB'"
    )
    task = await attack(api, stack, code("fill tmp", source))
    assert task["status"] == "failed"
    assert "No space left on device" in task["error"]["message"]


async def test_printing_100_mb_is_capped_in_the_log(api: Api, stack: Stack) -> None:
    source = (
        "import sys\ndef attack():\n    line = 'x' * 1_000_000 + '\\n'\n"
        "    for _ in range(100):\n        sys.stdout.write(line)\n    return 'printed'"
    )
    task = await attack(api, stack, code("print 100 MB", source, timeout=120))
    assert task["status"] == "succeeded"
    run = (await api.runs(task["id"]))[0]
    assert run["output_truncated"] is True
    assert run["log_bytes"] >= 100_000_000
    text = await api.log_text(task["id"])
    assert len(text) < 1_200_000
    assert "output truncated at 1048576 bytes" in text


async def test_the_network_is_off(api: Api, stack: Stack) -> None:
    source = (
        "import socket\n"
        "def attack(port):\n"
        "    results = {}\n"
        "    for host in ('127.0.0.1', '172.17.0.1'):\n"
        "        try:\n"
        "            socket.create_connection((host, port), timeout=2).close()\n"
        "            results[host] = 'connected'\n"
        "        except OSError as exc:\n"
        "            results[host] = type(exc).__name__\n"
        "    return results\n"
    )
    task = await attack(api, stack, code("network", source, args=[stack.http_port]))
    assert task["status"] == "succeeded"
    assert "connected" not in task["result"].values(), task["result"]


async def test_there_is_no_docker_socket(api: Api, stack: Stack) -> None:
    source = "def attack():\n    open('/var/run/docker.sock', 'rb')"
    task = await attack(api, stack, code("docker socket", source))
    assert task["error"]["exc_type"] == "FileNotFoundError"


async def test_becoming_root_is_not_possible(api: Api, stack: Stack) -> None:
    source = "import os\ndef attack():\n    os.setuid(0)"
    task = await attack(api, stack, code("root", source))
    assert task["error"]["exc_type"] == "PermissionError"


async def test_the_root_filesystem_is_read_only(api: Api, stack: Stack) -> None:
    source = "def attack():\n    open('/usr/lib/planted', 'w').write('x')"
    task = await attack(api, stack, code("write root", source))
    assert task["status"] == "failed"
    assert "Read-only file system" in task["error"]["message"]


async def test_the_sandbox_runs_as_nobody_without_capabilities(api: Api, stack: Stack) -> None:
    source = (
        "import os\ndef attack():\n    status = open('/proc/self/status').read().splitlines()\n"
        "    fields = dict(line.split(':', 1) for line in status if ':' in line)\n"
        "    return {'uid': os.getuid(), 'cap_eff': fields['CapEff'].strip(), 'no_new_privs': fields['NoNewPrivs'].strip(),"
        " 'seccomp': fields['Seccomp'].strip()}"
    )
    task = await attack(api, stack, code("who am i", source))
    assert task["result"] == {"uid": 65534, "cap_eff": "0000000000000000", "no_new_privs": "1", "seccomp": "2"}


async def test_an_exception_with_a_60_mb_message_fails_clearly_while_a_task_submitted_with_it_completes(
    api: Api, stack: Stack
) -> None:
    hostile = await api.submit(code("huge message", "def attack():\n    raise Exception('A' * 60_000_000)"))
    submitted = time.monotonic()
    short = await api.submit(code("short", "def f():\n    return 'quick'", "f"))

    assert (await api.wait_final(short["id"], timeout=60))["result"] == "quick"
    short_seconds = time.monotonic() - submitted
    task = await api.wait_final(hostile["id"], timeout=90)

    assert task["status"] == "failed"
    assert task["error"]["type"] == "exception" and task["error"]["exc_type"] == "Exception"
    assert task["error"]["message"].startswith("Exception: AAAA")
    traceback = task["error"].get("traceback") or ""
    assert len(traceback) < 70_000 and "[truncated: " in traceback
    assert short_seconds < 30, f"a short task waited {short_seconds:.1f} s behind a 60 MB exception message"


async def test_code_that_searches_its_frames_and_memory_for_the_nonce_cannot_forge_a_success(
    api: Api, stack: Stack
) -> None:
    source = FORGER + "\n\ndef attack_then_fail():\n    attack()\n    raise RuntimeError('the honest outcome')\n"
    task = await attack(api, stack, code("forger", source, "attack_then_fail", timeout=120))

    assert task["status"] == "failed", task.get("result")
    assert task["error"]["exc_type"] == "RuntimeError"
    assert '"result":"forged"' in await api.log_text(task["id"])  # the forgeries were shown as output
