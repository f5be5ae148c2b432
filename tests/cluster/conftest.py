"""Fixtures: a 3-node cluster from deploy/nats/cluster.conf, and the services on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.cluster.nodes import NatsCluster
from tests.cluster.stack import ClusterStack
from tests.support import Api


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NatsCluster]:
    running = NatsCluster(tmp_path / "cluster").start()
    try:
        yield running
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(running.logs())
        running.stop()


@pytest.fixture
def cluster_stack(tmp_path: Path, cluster: NatsCluster, request: pytest.FixtureRequest) -> Iterator[ClusterStack]:
    running = ClusterStack(tmp_path, cluster=cluster)
    try:
        running.start()
        yield running
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(running.logs())
        running.stop()


@pytest.fixture
async def cluster_api(cluster_stack: ClusterStack) -> AsyncIterator[Api]:
    client = Api(cluster_stack.base_url)
    try:
        yield client
    finally:
        await client.close()
