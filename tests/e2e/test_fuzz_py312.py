"""The end-to-end fuzz test again, with every service on Python 3.12 (the compose image's Python).

msgspec's recursion limit differs between 3.11 and 3.12, so what one interpreter accepts the other
might not decode (issue 13). A 3.12 environment is made from the same lock, and the fuzz test runs
in it: its stack's services are started with that interpreter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON_312 = Path(os.environ.get("TASKMESH_PYTHON_312", "/root/.pyenv/versions/3.12.1/bin/python"))
EXAMPLES = os.environ.get("TASKMESH_FUZZ_EXAMPLES_312", "150")


@pytest.fixture(scope="session")
def venv_312(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3.12 environment with exactly what uv.lock pins (and this checkout, editable)."""
    uv = shutil.which("uv") or "/opt/taskmesh-env/bin/uv"
    if not PYTHON_312.exists() or not Path(uv).exists():
        message = f"Python 3.12 ({PYTHON_312}) and uv are needed to run the services on 3.12"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    venv = tmp_path_factory.mktemp("py312") / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_NATIVE_TLS": "1"}
    subprocess.run([uv, "venv", "-q", "--python", str(PYTHON_312), str(venv)], check=True, env=env, timeout=120)
    subprocess.run(
        [uv, "sync", "-q", "--locked", "--extra", "cli", "--group", "test", "--python", str(venv / "bin" / "python")],
        check=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    return venv / "bin" / "python"


@pytest.mark.docker
def test_the_fuzz_test_passes_with_every_service_on_python_312(venv_312: Path, docker_engine: None) -> None:
    version = subprocess.run(
        [str(venv_312), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert version == "(3, 12)"
    done = subprocess.run(
        [str(venv_312), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", "tests/e2e/test_fuzz.py"],
        cwd=ROOT,
        env={**os.environ, "TASKMESH_FUZZ_EXAMPLES": EXAMPLES},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout.splitlines()[-1]
