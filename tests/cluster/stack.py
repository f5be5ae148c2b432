"""The Taskmesh services as processes on a 3-node cluster, each under its own NATS user and
given all three URLs."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from taskmesh.processes import SERVICES, ServiceProcess, free_port
from tests.cluster.nodes import NatsCluster
from tests.support import Stack

CLUSTER_ENV = {
    "TASKMESH_JS_REPLICAS": "3",
    # the gateway waits out the store's repeats through an election (PUBLISH_RETRY_WINDOW, 15 s)
    "TASKMESH_STORE_TIMEOUT_SECONDS": "20",
}


@dataclass
class ClusterStack(Stack):
    """A Stack whose NATS is ``cluster`` (not a single server of its own)."""

    cluster: NatsCluster | None = None
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)

    def start(self, names: tuple[str, ...] = SERVICES, wait: bool = True) -> ClusterStack:
        assert self.cluster is not None
        self.instance = self.instance or f"test-{secrets.token_hex(4)}"
        self.http_port = self.http_port or free_port()
        for name in names:
            self.start_service(name)
        if wait:
            self.wait_ready(timeout=60)
        return self

    def start_service(self, name: str, key: str | None = None, **extra_env: str) -> ServiceProcess:
        assert self.cluster is not None
        return super().start_service(name, key, **{**CLUSTER_ENV, **self.cluster.credentials(name), **extra_env})
