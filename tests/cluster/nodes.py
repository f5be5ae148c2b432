"""A 3-node JetStream cluster on loopback, each node a nats-server process started from the
deployment's own ``deploy/nats/cluster.conf`` (ports given on the command line).

Nodes are stopped by the PID this module started: SIGTERM (hand leaderships over) or SIGKILL.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskmesh.processes import _detach, free_port, nats_server_binary, stop_process

DEPLOY_NATS = Path(__file__).resolve().parents[2] / "deploy" / "nats"
USERS = ("gateway", "store", "scheduler", "runner", "client", "admin")


@dataclass
class Node:
    """One nats-server of the cluster; its ports and store survive a restart."""

    name: str
    root: Path
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    route_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str]) -> None:
        # the deployment's file with this node's store and route port (flags for those would
        # not merge with the file: --cluster_listen drops the route authorization)
        config = self.root / f"{self.name}.conf"
        config.write_text(
            (DEPLOY_NATS / "cluster.conf")
            .read_text()
            .replace("store_dir: /var/lib/taskmesh/nats", f'store_dir: "{self.root / self.name}"')
            .replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{self.route_port}")
        )
        log = open(self.root / f"{self.name}.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [
                nats_server_binary(),
                "-c",
                str(config),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                str(self.monitor_port),
            ],
            env={**env, "TASKMESH_NATS_SERVER_NAME": self.name},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_detach,
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait: the node hands its leaderships over first."""
        if self.process is not None:
            stop_process(self.process, timeout)

    def kill(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            self.process.wait(5)  # type: ignore[union-attr]

    def monitor(self, path: str, timeout: float = 2.0) -> tuple[int, Any]:
        """(status, JSON body) of a monitoring endpoint; (0, None) when the node does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}{path}", timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (OSError, ValueError):
            return 0, None

    def healthy(self, query: str = "js-meta-only=true") -> bool:
        return self.monitor(f"/healthz?{query}")[0] == 200


@dataclass
class NatsCluster:
    """Three nodes with authenticated routes, a system account and the deployment's users."""

    root: Path
    nodes: list[Node] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=lambda: {u: "tm" + secrets.token_hex(12) for u in USERS})
    route_password: str = field(default_factory=lambda: "tm" + secrets.token_hex(12))
    system_password: str = field(default_factory=lambda: "tm" + secrets.token_hex(12))

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # the include is relative to the including file
        shutil.copy(DEPLOY_NATS / "authorization.conf", self.root / "authorization.conf")
        self.nodes = self.nodes or [Node(f"nats-{i}", self.root) for i in (1, 2, 3)]

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (TASKMESH_NATS_URL)."""
        return ",".join(node.url for node in self.nodes)

    def env(self) -> dict[str, str]:
        """The nodes' environment: passwords and the three route URLs."""
        env = {f"TASKMESH_NATS_{user.upper()}_PASSWORD": password for user, password in self.passwords.items()}
        env |= {
            "TASKMESH_NATS_ROUTE_PASSWORD": self.route_password,
            "TASKMESH_NATS_SYSTEM_PASSWORD": self.system_password,
        }
        for i, node in enumerate(self.nodes, 1):
            env[f"TASKMESH_NATS_ROUTE_{i}"] = f"nats-route://route:{self.route_password}@127.0.0.1:{node.route_port}"
        return env

    def credentials(self, user: str) -> dict[str, str]:
        """What a service (or the admin) is started with to reach the cluster."""
        return {
            "TASKMESH_NATS_URL": self.urls,
            "TASKMESH_NATS_USER": user,
            "TASKMESH_NATS_PASSWORD": self.passwords[user],
        }

    def start(self, timeout: float = 30.0) -> NatsCluster:
        for node in self.nodes:
            node.start(self.env())
        self.wait_healthy(timeout=timeout)
        return self

    def start_node(self, node: Node, timeout: float = 30.0, query: str = "") -> None:
        """Start ``node`` again and wait until it is healthy (by default: every replica current)."""
        assert not node.alive()
        node.start(self.env())
        wait_until(lambda: node.healthy(query), timeout, f"{node.name} healthy ({query or 'all current'})")

    def wait_healthy(self, query: str = "js-meta-only=true", timeout: float = 30.0) -> None:
        def healthy() -> bool:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None and node.process.returncode > 0:
                    raise AssertionError(f"{node.name} exited with {node.process.returncode}:\n{self.logs()}")
            return all(n.healthy(query) for n in self.nodes if n.alive())

        wait_until(healthy, timeout, f"cluster {query}")

    def stream_leader(self, stream: str) -> Node:
        """The node that leads ``stream`` now (from a live node's /jsz)."""
        for node in self.nodes:
            if not node.alive():
                continue
            _, body = node.monitor("/jsz?accounts=true&streams=true")
            for account in (body or {}).get("account_details", []):
                for detail in account.get("stream_detail", []):
                    leader = (detail.get("cluster") or {}).get("leader")
                    if detail.get("name") == stream and leader:
                        return next(n for n in self.nodes if n.name == leader)
        raise AssertionError(f"no leader of {stream} known")

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive():
                node.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for node in self.nodes:
            node.terminate(timeout=15)

    def logs(self) -> str:
        return "\n".join(
            f"----- {n.name} -----\n{(self.root / f'{n.name}.log').read_text(errors='replace')[-3000:]}"
            for n in self.nodes
            if (self.root / f"{n.name}.log").exists()
        )


def wait_until(condition: Any, timeout: float, what: str) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s")
        time.sleep(0.1)
