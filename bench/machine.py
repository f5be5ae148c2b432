"""What the figures were measured on: machine, load, git commit, versions."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def git_info() -> dict[str, object]:
    """Commit, and whether tracked files differ from it (the figures are then of a dirty tree)."""
    return {
        "commit": _run(["git", "rev-parse", "--short=10", "HEAD"]) or "unknown",
        "branch": _run(["git", "rev-parse", "--abbrev-ref", "HEAD"]),
        "dirty": bool(_run(["git", "status", "--porcelain", "--untracked-files=no"])),
    }


def machine_info() -> dict[str, object]:
    return {
        "cores": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "kernel": platform.release(),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        ),
        "load_average_start": load_average(),
    }


def versions(celery_python: str | None) -> dict[str, str]:
    """Python, nats-server, celery, kombu, redis-py, redis-server, Docker engine, nats-py, uvloop."""
    from importlib import metadata

    from taskmesh.processes import nats_server_binary

    found = {
        "python": platform.python_version(),
        "nats-server": _run([nats_server_binary(), "--version"]),
        "redis-server": _run(["redis-server", "--version"]).split(" v=")[-1].split(" ")[0],
        "docker-engine": _run(["docker", "version", "--format", "{{.Server.Version}}"]),
    }
    for package in ("nats-py", "uvloop", "aiohttp", "msgspec", "taskmesh"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = ""
    if celery_python:
        script = (
            "import sys, celery, kombu, redis, requests; "
            "print(sys.version.split()[0], celery.__version__, kombu.__version__, redis.__version__, requests.__version__)"
        )
        parts = _run([celery_python, "-c", script]).split()
        if len(parts) == 5:
            found.update(zip(["celery-python", "celery", "kombu", "redis-py", "requests"], parts, strict=False))
    found["harness-python"] = sys.executable
    return found
