"""Services started while their cluster is still forming wait for it instead of exiting.

Until enough nodes have joined, JetStream answers "temporarily unavailable", has no meta leader,
or cannot place a 3-replica stream ("no suitable peers for placement"). Those mean "not yet":
compose starts services and NATS nodes together, and a node may be late.
"""

from __future__ import annotations

from pathlib import Path

from tests.cluster.nodes import NatsCluster, wait_until
from tests.cluster.stack import ClusterStack


def test_a_store_started_before_the_third_node_waits_and_leads_once_it_joins(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "cluster")
    late = cluster.nodes[2]
    stack = ClusterStack(tmp_path, cluster=cluster)
    try:
        for node in cluster.nodes[:2]:
            node.start(cluster.env())
        stack.start(("store", "gateway"), wait=False)
        store = stack.services["store"]
        wait_until(lambda: "JetStream not ready" in store.log(), 60, "the store waiting for JetStream")
        assert store.alive(), store.log()

        cluster.start_node(late, query="js-meta-only=true")
        wait_until(lambda: "store ready" in store.log(), 60, "the store ready once the third node joined")
        assert store.alive(), store.log()
        assert "Traceback" not in store.log()
    finally:
        stack.stop()
        cluster.stop()
