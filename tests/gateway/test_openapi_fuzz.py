"""Schemathesis against the served OpenAPI document: no 5xx, no response outside the schema.

No runner takes part: generated API tasks are accepted and stored but never executed, so
whatever URLs the fuzzer invents are never contacted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmesh.processes import wait_http
from tests.support import Stack

EXAMPLES_PER_OPERATION = int(os.environ.get("TASKMESH_FUZZ_EXAMPLES", "30"))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path)
    try:
        running.start(names=("store", "scheduler", "gateway"), wait=False)
        wait_http(f"{running.base_url}/api/health", ok_statuses=(200,), timeout=30)
        yield running
    finally:
        running.stop()


def test_schemathesis_finds_no_server_error_and_no_schema_violation(stack: Stack, tmp_path: Path) -> None:
    command = [
        Path(sys.executable).with_name("schemathesis"),
        "run",
        f"{stack.base_url}/api/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--workers",
        "1",
        "--no-color",
        "--seed",
        os.environ.get("TASKMESH_FUZZ_SEED", "20261126"),
    ]
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    for key, service in stack.services.items():
        assert "Traceback" not in service.log(), f"{key} logged a traceback:\n{service.log()[-4000:]}"
