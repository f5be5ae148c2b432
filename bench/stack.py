"""A whole local Taskmesh (nats-server + store, scheduler, runner(s), gateway) as child processes."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from taskmesh.processes import NatsServer, ServiceProcess, free_port, local_service_env


@dataclass
class TaskmeshStack:
    """Like tests.support.Stack, with ``runners`` runner processes and PIDs for RSS and CPU."""

    root: Path
    runners: int = 1
    env_extra: dict[str, str] = field(default_factory=dict)
    nats: NatsServer | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    http_port: int = 0
    instance: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        return {
            **local_service_env(self.nats.url if self.nats else "", self.http_port, self.root, self.instance),
            "TASKMESH_SHUTDOWN_GRACE": "5",
            # dependency builders fetch from the wheelhouse served on 127.0.0.1
            "TASKMESH_BUILDER_NETWORK": "host",
            **self.env_extra,
        }

    def start(self, timeout_s: float = 60.0) -> TaskmeshStack:
        self.instance = self.instance or f"bench-{secrets.token_hex(4)}"
        self.http_port = self.http_port or free_port()
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        # a caller may hand in its own (not yet started) nats-server, e.g. one with pprof (bench/natsmon.py)
        self.nats = self.nats or NatsServer(self.root / "nats", log_path=self.root / "logs" / "nats-server.log")
        self.nats.start()
        runners = [("runner" if number == 1 else f"runner-{number}", "runner") for number in range(1, self.runners + 1)]
        for key, name in [("store", "store"), ("scheduler", "scheduler"), *runners, ("gateway", "gateway")]:
            self.services[key] = ServiceProcess(name, self.env(), log_path=self.root / "logs" / f"{key}.log").start()
        self.wait_ready(timeout_s)
        return self

    def health(self) -> dict:
        with urllib.request.urlopen(f"{self.base_url}/api/health", timeout=3) as response:
            return json.loads(response.read())

    def wait_ready(self, timeout_s: float, sandbox: bool = False) -> dict:
        """Until the store answers, a scheduler leads and every runner sends heartbeats."""
        deadline, last = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            for key, service in self.services.items():
                if not service.alive():
                    raise RuntimeError(f"{key} exited: {service.log()[-3000:]}")
            try:
                last = self.health()
                checks = last.get("checks", {})
                if (
                    checks.get("store", {}).get("status") == "ok"
                    and checks.get("scheduler", {}).get("status") == "ok"
                    and checks.get("runners", {}).get("count", 0) >= self.runners
                    and (not sandbox or checks.get("sandbox", {}).get("status") == "ok")
                ):
                    return last
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Taskmesh not ready after {timeout_s} s: {last}")

    def pids(self) -> dict[str, int]:
        """Every service and nats-server by name."""
        found = {key: service.pid for key, service in self.services.items() if service.alive()}
        if self.nats is not None and self.nats.process is not None:
            found["nats-server"] = self.nats.process.pid
        return found

    def stop(self) -> None:
        """SIGTERM every service at once, then nats-server, then remove this instance's containers."""
        alive = [service for service in self.services.values() if service.alive()]
        for service in alive:
            service.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for service in alive:
            service.stop(timeout=20, signalled=True)
        if self.nats is not None:
            self.nats.stop()
        remove_containers(f"org.taskmesh.instance={self.instance}")


def remove_containers(label: str) -> int:
    """Remove the containers carrying ``label`` (only ever a label of our own run)."""
    try:
        found = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True, timeout=30
        ).stdout.split()
        if found:
            subprocess.run(["docker", "rm", "-f", *found], capture_output=True, timeout=120)
        return len(found)
    except (OSError, subprocess.SubprocessError):
        return 0


class WheelServer:
    """``.taskmesh/wheelhouse`` served on 127.0.0.1: the runner's find-links, so no public index is used."""

    def __init__(self, directory: Path, log_dir: Path) -> None:
        self.directory, self.log_dir, self.port = directory, log_dir, 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> WheelServer:
        self.port = procs.free_port()
        self.process = procs.start_child(
            [
                sys.executable,
                "-m",
                "http.server",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(self.directory),
            ],
            self.log_dir / "wheel-server.log",
        )
        procs.wait_port(self.port, self.process)
        return self

    def stop(self) -> None:
        procs.stop_tree(self.process, 5)


def sandbox_image() -> str:
    """The sandbox image the runner will use (``TASKMESH_SANDBOX_IMAGE``, else a labelled local image)."""
    image = os.environ.get("TASKMESH_SANDBOX_IMAGE")
    if image:
        return image
    found = subprocess.run(
        ["docker", "images", "--filter", "label=org.taskmesh.sandbox", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    return found[0] if found else "python:3.12-slim"
