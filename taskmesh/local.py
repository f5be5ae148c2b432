"""Local mode: nats-server and the four services as processes on this machine, data in ``./.taskmesh``.

Everything listens on loopback only. Output of every process is shown with a prefix. Ctrl-C (or
SIGTERM) stops the services in reverse order, then nats-server. Data survives a restart.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path

from taskmesh.processes import (
    SERVICES,
    NatsServer,
    ProcessError,
    ServiceProcess,
    local_service_env,
    port_in_use,
    wait_http,
)

COLOURS = {"nats": "35", "store": "36", "scheduler": "33", "runner": "32", "gateway": "34"}


def _prefix(name: str, colour: bool) -> str:
    label = f"{name:<9}|"
    return f"\x1b[{COLOURS.get(name, '0')}m{label}\x1b[0m " if colour else f"{label} "


def run_local(data_dir: Path, http_port: int = 5001, nats_port: int = 4222) -> int:
    """Run until interrupted; returns the process exit code."""
    colour = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
    if port_in_use(http_port):
        print(
            f"taskmesh up: port {http_port} is in use (another 'taskmesh up'?); stop it or pass --port", file=sys.stderr
        )
        return 1
    if port_in_use(nats_port):
        print(f"taskmesh up: NATS port {nats_port} is in use; stop that server or pass --nats-port", file=sys.stderr)
        return 1
    data_dir = data_dir.absolute()
    nats = NatsServer(data_dir / "nats", port=nats_port, log_path=data_dir / "nats-server.log")
    print(f"{_prefix('nats', colour)}starting nats-server on 127.0.0.1:{nats_port} (data {nats.data_dir})", flush=True)
    try:
        nats.start()
    except ProcessError as exc:
        print(f"taskmesh up: {exc}", file=sys.stderr)
        return 1
    env = {
        **local_service_env(nats.url, http_port, data_dir),
        "TASKMESH_HTTP_HOST": "127.0.0.1",
        "TASKMESH_LOG_FORMAT": os.environ.get("TASKMESH_LOG_FORMAT", "text"),
    }
    services = [ServiceProcess(name, env).start(pipe_output=True) for name in SERVICES]
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    streams = {s.process.stdout.fileno(): s for s in services if s.process and s.process.stdout}
    announced = False
    started = time.monotonic()
    try:
        while not stopping:
            readable, _, _ = select.select(list(streams), [], [], 0.2)
            for fd in readable:
                line = os.read(fd, 65536)
                if not line:
                    del streams[fd]
                    continue
                service = streams[fd]
                for text in line.decode(errors="replace").splitlines():
                    print(f"{_prefix(service.name, colour)}{text}", flush=True)
            dead = [s for s in services if not s.alive()]
            if dead:
                print(
                    f"taskmesh up: {dead[0].name} exited with {dead[0].process.returncode}; stopping",  # type: ignore[union-attr]  # a dead service has a process
                    file=sys.stderr,
                )
                return_code = 1
                break
            if not announced and time.monotonic() - started > 0.5:
                try:
                    wait_http(f"http://127.0.0.1:{http_port}/api/health", timeout=0.5, ok_statuses=(200,))
                    print(
                        f"\nTaskmesh is up: API http://127.0.0.1:{http_port}/api  docs "
                        f"http://127.0.0.1:{http_port}/api/docs  (Ctrl-C stops)\n",
                        flush=True,
                    )
                    announced = True
                except ProcessError:
                    pass
        else:
            return_code = 0
    finally:
        print(f"{_prefix('nats', colour)}stopping services", flush=True)
        for service in reversed(services):
            service.stop()
            if service.process and service.process.stdout:
                rest = service.process.stdout.read()
                for text in rest.decode(errors="replace").splitlines():
                    print(f"{_prefix(service.name, colour)}{text}", flush=True)
        nats.stop()
        print(f"{_prefix('nats', colour)}stopped", flush=True)
    return return_code
