"""Child processes of the harness: start, stop by PID, resident memory and CPU read from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from taskmesh.processes import free_port, stop_process

__all__ = [
    "descendants",
    "free_port",
    "start_child",
    "stop_tree",
    "tree_rss_mib",
    "tree_schedstat_seconds",
    "wait_port",
]


def _own_session() -> None:
    """In the child: own session, and SIGTERM when the harness dies so nothing outlives it."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_child(
    command: list[str], log_path: Path, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> subprocess.Popen:
    """Start ``command`` with output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            preexec_fn=_own_session,
        )


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def _identity(pid: int) -> tuple[int, str] | None:
    """PID plus start time: a PID reused by another process does not match."""
    fields = _stat_fields(pid)
    return (pid, fields[19]) if fields else None


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (this kernel has no /proc/<pid>/task/<tid>/children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent_of(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mib(pid: int) -> float:
    """RSS of ``pid`` plus all its descendants, in MiB."""
    return round(sum(rss_kib(p) for p in [pid, *descendants(pid)]) / 1024, 1)


def schedstat_seconds(pid: int) -> tuple[float, float]:
    """(on CPU, runnable but waiting for a CPU) of every thread of ``pid``, from /proc/<pid>/task/*/schedstat."""
    on_cpu = waiting = 0
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0
    for thread in threads:
        try:
            fields = Path(f"/proc/{pid}/task/{thread}/schedstat").read_text().split()
        except OSError:
            continue
        on_cpu += int(fields[0])
        waiting += int(fields[1])
    return on_cpu / 1e9, waiting / 1e9


def tree_schedstat_seconds(pid: int) -> tuple[float, float]:
    """schedstat_seconds summed over ``pid`` and its live descendants."""
    pairs = [schedstat_seconds(p) for p in [pid, *descendants(pid)]]
    return sum(pair[0] for pair in pairs), sum(pair[1] for pair in pairs)


def stop_tree(process: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM the process we started, wait, SIGKILL it; then kill any descendant it left behind."""
    if process is None:
        return
    left = [_identity(pid) for pid in descendants(process.pid)] if process.poll() is None else []
    stop_process(process, timeout)
    deadline = time.monotonic() + 5
    for identity in filter(None, left):  # children of a process we started (prefork pool); by PID only
        while _identity(identity[0]) == identity and time.monotonic() < deadline:
            time.sleep(0.05)
        if _identity(identity[0]) == identity:
            try:
                os.kill(identity[0], signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_port(port: int, process: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
