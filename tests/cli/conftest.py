"""The ``taskmesh`` command run as a real subprocess (``python -m taskmesh``) against a running stack."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import Stack

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    """How one command ended."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def cli_env(url: str, **extra: str) -> dict[str, str]:
    """This process's environment without any TASKMESH_URL/TOKEN of the developer's, pointed at ``url``."""
    env = {k: v for k, v in os.environ.items() if k not in ("TASKMESH_URL", "TASKMESH_TOKEN")}
    return {**env, "TASKMESH_URL": url, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **extra}


class Taskmesh:
    """Runs ``python -m taskmesh ARGS`` without blocking the event loop (the target server lives on it)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def start(self, *args: str, **env: str) -> asyncio.subprocess.Process:
        """Start the command; the caller reads its output."""
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "taskmesh",
            *args,
            cwd=ROOT,
            env=cli_env(self.url, **env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def __call__(self, *args: str, timeout: float = 120.0, **env: str) -> Result:
        """Run the command to its end."""
        process = await self.start(*args, **env)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"taskmesh {' '.join(args)} still running after {timeout} s") from None
        return Result(process.returncode or 0, stdout.decode(), stderr.decode())


@pytest.fixture
def taskmesh(stack: Stack) -> Taskmesh:
    """The command line, pointed at this test's stack by TASKMESH_URL."""
    return Taskmesh(stack.base_url)
