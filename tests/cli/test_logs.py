"""``taskmesh logs``: stored output of a code task, and ``-f`` following a task while it runs."""

from __future__ import annotations

import asyncio
import json

from tests.cli.conftest import Taskmesh
from tests.support import Api, Stack, TargetServer

PRINTER = """import sys, time

def main():
    print("first line", flush=True)
    print("a warning", file=sys.stderr, flush=True)
    time.sleep(2)
    print("second line", flush=True)
    return "done"
"""


async def submit_printer(taskmesh: Taskmesh, *flags: str) -> str:
    result = await taskmesh("submit", "--code", PRINTER, "--function", "main", "--name", "printer", "-q", *flags)
    assert result.code == 0, result
    return result.stdout.strip()


async def read_line(stream: asyncio.StreamReader, timeout: float = 60.0) -> str:
    line = await asyncio.wait_for(stream.readline(), timeout)
    assert line, "the stream ended"
    return line.decode()


async def test_logs_prints_the_task_stdout_to_stdout_and_its_stderr_to_stderr(
    taskmesh: Taskmesh, api: Api, docker_engine: None
) -> None:
    task_id = await submit_printer(taskmesh)
    await api.wait_final(task_id)
    result = await taskmesh("logs", task_id)
    assert result.code == 0, result
    assert result.stdout == "first line\nsecond line\n"
    assert result.stderr == "a warning\n"


async def test_logs_json_returns_the_chunks_with_their_streams(
    taskmesh: Taskmesh, api: Api, docker_engine: None
) -> None:
    task_id = await submit_printer(taskmesh)
    await api.wait_final(task_id)
    reply = (await taskmesh("logs", task_id, "--json")).json()
    assert reply["finished"] is True
    assert sorted((c["stream"], c["data"]) for c in reply["chunks"]) == [
        ("stderr", "a warning\n"),
        ("stdout", "first line\n"),
        ("stdout", "second line\n"),
    ]


async def test_logs_follow_prints_output_of_a_running_task_as_it_comes(
    taskmesh: Taskmesh, api: Api, docker_engine: None
) -> None:
    task_id = await submit_printer(taskmesh)
    follower = await taskmesh.start("logs", task_id, "-f")
    assert follower.stdout is not None and follower.stderr is not None
    assert await read_line(follower.stdout) == "first line\n"
    # the task sleeps two seconds between its lines: the first arrived while it runs
    assert (await api.task(task_id))["status"] == "running"
    assert await read_line(follower.stdout) == "second line\n"
    assert await asyncio.wait_for(follower.stdout.read(), 30) == b""
    assert await asyncio.wait_for(follower.wait(), 30) == 0
    stderr = (await follower.stderr.read()).decode()
    assert "a warning\n" in stderr
    assert "ended: succeeded" in stderr


async def test_logs_follow_json_prints_one_event_per_line_ending_with_the_status(
    taskmesh: Taskmesh, docker_engine: None
) -> None:
    task_id = await submit_printer(taskmesh)
    result = await taskmesh("logs", task_id, "--follow", "--json")
    assert result.code == 0, result
    events = [json.loads(line) for line in result.stdout.splitlines()]
    logs, end = events[:-1], events[-1]
    assert [e["event"] for e in logs] == ["log"] * len(logs) and end["event"] == "end", events
    # each chunk exactly once and in order; how many chunks there are is the runner's business
    # (it flushes every 100 ms, and `python -u` writes a print's text and its newline separately)
    assert [(e["attempt"], e["seq"]) for e in logs] == [(1, seq) for seq in range(len(logs))], events
    assert "".join(e["data"] for e in logs if e["stream"] == "stdout") == "first line\nsecond line\n"
    assert "".join(e["data"] for e in logs if e["stream"] == "stderr") == "a warning\n"
    assert end["status"] == "succeeded"


async def test_logs_follow_waits_for_a_delayed_task_to_start(taskmesh: Taskmesh, docker_engine: None) -> None:
    task_id = await submit_printer(taskmesh, "--delay", "1")
    result = await taskmesh("logs", task_id, "-f")
    assert result.code == 0, result
    assert result.stdout == "first line\nsecond line\n"


async def test_logs_prints_output_larger_than_one_reply_page_in_full(
    taskmesh: Taskmesh, api: Api, docker_engine: None
) -> None:
    # 700 KiB of numbered lines: the store answers in pages of 512 KiB
    code = "def main():\n    for n in range(70_000):\n        print(f'{n:09d}')\n"
    task_id = (await taskmesh("submit", "--code", code, "--function", "main", "-q")).stdout.strip()
    task = await api.wait_final(task_id)
    assert task["status"] == "succeeded", task
    result = await taskmesh("logs", task_id)
    assert result.code == 0, result
    assert result.stdout.splitlines() == [f"{n:09d}" for n in range(70_000)]
    reply = (await taskmesh("logs", task_id, "--json")).json()
    assert reply["more"] is False
    assert "".join(c["data"] for c in reply["chunks"]) == result.stdout


async def test_a_follow_whose_gateway_goes_away_ends_with_one_line_and_exit_code_three(
    taskmesh: Taskmesh, stack: Stack, target: TargetServer
) -> None:
    task_id = (await taskmesh("submit", "--api-url", f"{target.url}/hello", "--delay", "600", "-q")).stdout.strip()
    follower = await taskmesh.start("logs", "-f", task_id)
    assert follower.stderr is not None
    await asyncio.sleep(1.0)  # the follow request is in; nothing will come for ten minutes
    assert follower.returncode is None
    await asyncio.to_thread(stack.services["gateway"].stop)
    assert await asyncio.wait_for(follower.wait(), 30) == 3
    stderr = (await follower.stderr.read()).decode()
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert "Traceback" not in stderr
