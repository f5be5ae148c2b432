"""What people see in a terminal: the --wait spinner in a pseudo-terminal, help, completion, no gateway."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import click
import pytest
from click.testing import CliRunner

from taskmesh.cli import cli
from taskmesh.processes import free_port
from tests.cli.conftest import ROOT, Taskmesh, cli_env
from tests.support import Api, TargetServer

SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def run_in_terminal(
    args: list[str], env: dict[str, str], timeout: float = 60.0, interrupt_after: str | None = None
) -> tuple[int, str]:
    """Run ``python -m taskmesh ARGS`` on a 120x40 pseudo-terminal; its exit code and everything it drew.

    With ``interrupt_after``, SIGINT (what Ctrl-C sends) once that text has been drawn.
    """
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "taskmesh", *args],
        cwd=ROOT,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    drawn = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not data:
                break
            drawn += data
            if interrupt_after is not None and interrupt_after in drawn.decode(errors="replace"):
                process.send_signal(signal.SIGINT)
                interrupt_after = None
        else:
            process.kill()
            raise AssertionError(f"taskmesh {' '.join(args)} still running after {timeout} s: {drawn.decode()[-2000:]}")
        return process.wait(10), drawn.decode(errors="replace")
    finally:
        os.close(controller)


async def test_submit_wait_in_a_terminal_spins_through_the_statuses_then_prints_the_result(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    env = cli_env(taskmesh.url, TERM="xterm-256color")
    env.pop("COLUMNS")
    code, drawn = await asyncio.to_thread(
        run_in_terminal, ["submit", "--api-url", f"{target.url}/slow?seconds=2", "--name", "slow call", "--wait"], env
    )
    assert code == 0, drawn
    assert "\x1b[?25l" in drawn  # the spinner hid the cursor while it ran
    assert any(frame in drawn for frame in SPINNER_FRAMES), drawn
    assert "running  slow call (" in drawn
    assert "succeeded" in drawn and '"slept"' in drawn
    assert "\x1b[" in drawn.split("succeeded")[-2]  # in colour on a terminal


async def test_submit_wait_in_a_terminal_exits_non_zero_when_the_task_fails(
    taskmesh: Taskmesh, target: TargetServer
) -> None:
    env = cli_env(taskmesh.url, TERM="xterm-256color")
    code, drawn = await asyncio.to_thread(
        run_in_terminal, ["submit", "--api-url", f"{target.url}/status/502", "--wait"], env
    )
    assert code == 1, drawn
    assert "✗" in drawn and "HTTP 502" in drawn


async def test_ctrl_c_during_submit_wait_stops_the_waiting_not_the_task(
    taskmesh: Taskmesh, api: Api, target: TargetServer
) -> None:
    env = cli_env(taskmesh.url, TERM="xterm-256color")
    code, drawn = await asyncio.to_thread(
        run_in_terminal,
        ["submit", "--api-url", f"{target.url}/hello", "--delay", "600", "--wait"],
        env,
        interrupt_after="pending  ",
    )
    assert code == 130, drawn
    assert "Traceback" not in drawn
    task_id = drawn.split("the task goes on: taskmesh show ")[1][:36]
    assert (await api.task(task_id))["status"] == "pending"


def every_command(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append(((*path, name), command))
        if isinstance(command, click.Group):
            found += every_command(command, (*path, name))
    return found


@pytest.mark.parametrize(
    "path", [(), *(path for path, _ in every_command(cli))], ids=lambda path: " ".join(path) or "taskmesh"
)
def test_every_command_has_complete_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="taskmesh")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: taskmesh {' '.join(path)}".rstrip())
    command = cli
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    assert command.help and command.help.strip(), "a description"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{param.name} has no help"


def test_the_top_level_help_documents_environment_exit_codes_and_completion() -> None:
    result = CliRunner().invoke(cli, ["--help"], prog_name="taskmesh")
    for text in ("TASKMESH_URL", "TASKMESH_TOKEN", "Exit codes", "_TASKMESH_COMPLETE=bash_source taskmesh"):
        assert text in result.output
    for name in ("up", "submit", "list", "show", "runs", "logs", "cancel", "delete", "schedules", "stats", "health"):
        assert f"\n  {name} " in result.output


def complete(words: str, url: str) -> list[str]:
    env = cli_env(url, _TASKMESH_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(len(words.split(" ")) - 1))
    done = subprocess.run(
        [sys.executable, "-m", "taskmesh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    return [line for line in done.stdout.splitlines() if line]


def test_bash_completion_script_comes_from_click() -> None:
    env = cli_env("http://127.0.0.1:1", _TASKMESH_COMPLETE="bash_source")
    done = subprocess.run(
        [sys.executable, "-m", "taskmesh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "_taskmesh_completion()" in done.stdout
    assert "-F _taskmesh_completion taskmesh" in done.stdout


def test_completion_offers_commands_and_options() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert complete("taskmesh sch", url) == ["plain,schedules"]
    assert complete("taskmesh schedules ", url) == ["plain,list", "plain,pause", "plain,resume", "plain,trigger"]
    assert "plain,--wait-timeout" in complete("taskmesh submit --wait", url)


async def test_completion_offers_task_ids_from_the_gateway(taskmesh: Taskmesh, target: TargetServer) -> None:
    task_id = (await taskmesh("submit", "--api-url", f"{target.url}/hello", "-q")).stdout.strip()
    assert f"plain,{task_id}" in await asyncio.to_thread(complete, "taskmesh show ", taskmesh.url)
    assert await asyncio.to_thread(complete, "taskmesh show zzz", taskmesh.url) == []


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["show", "x"],
        ["runs", "x"],
        ["logs", "x"],
        ["logs", "-f", "x"],
        ["cancel", "x"],
        ["delete", "x"],
        ["schedules"],
        ["schedules", "pause", "x"],
        ["schedules", "resume", "x"],
        ["schedules", "trigger", "x"],
        ["stats"],
        ["health"],
        ["submit", "--api-url", "http://127.0.0.1:9/"],
    ],
    ids=" ".join,
)
def test_a_gateway_that_is_not_running_is_one_line_and_exit_code_three(args: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["--url", url, *args], prog_name="taskmesh")
    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    assert result.stderr == f"error: gateway not reachable at {url}: is `taskmesh up` running?\n"


def test_a_gateway_that_is_not_running_with_json_also_prints_an_error_body() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["--url", url, "stats", "--json"], prog_name="taskmesh")
    assert result.exit_code == 3
    assert '"code": "unreachable"' in result.stdout
