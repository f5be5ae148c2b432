"""deploy/nats: the server configs agree with proto, and cluster.conf makes a working cluster."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from proto import streams
from taskmesh import processes
from tests.cluster.nodes import DEPLOY_NATS, NatsCluster, Node, wait_until


def _max_payload(text: str) -> int:
    found = re.findall(r"^\s*max_payload\s*[:=]\s*(\d+)\s*$", text, re.MULTILINE)
    assert len(found) == 1, "max_payload must be set once, in bytes"
    return int(found[0])


@pytest.mark.parametrize("config", ["nats.conf", "cluster.conf"])
def test_every_server_config_sets_the_max_payload_that_proto_assumes(config: str) -> None:
    assert _max_payload((DEPLOY_NATS / config).read_text()) == streams.SERVER_MAX_PAYLOAD_BYTES


def test_local_mode_sets_the_same_max_payload_and_it_leaves_room_for_headers() -> None:
    assert _max_payload(processes.NATS_CONFIG) == streams.SERVER_MAX_PAYLOAD_BYTES
    assert streams.SERVER_MAX_PAYLOAD_BYTES >= streams.MAX_PAYLOAD_BYTES + 64 * 1024


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    running = NatsCluster(tmp_path / "cluster").start()
    try:
        yield running
    finally:
        running.stop()


async def test_three_nodes_from_cluster_conf_form_one_cluster_with_r3_streams_and_a_system_account(
    cluster: NatsCluster,
) -> None:
    admin = await nats.connect(cluster.urls.split(","), user="admin", password=cluster.passwords["admin"])
    try:
        info = await admin.jetstream().add_stream(name="PROBE", subjects=["probe.>"], num_replicas=3)
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        assert admin.max_payload == streams.SERVER_MAX_PAYLOAD_BYTES
    finally:
        await admin.close()
    system = await nats.connect(cluster.urls.split(","), user="system", password=cluster.system_password)
    try:
        seen: set[str] = set()
        inbox = system.new_inbox()
        subscription = await system.subscribe(inbox)
        # A node answers the ping once its system-account route is up, which can come after the
        # JetStream health the fixture waits for: ask again until all three answered.
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            await system.publish("$SYS.REQ.SERVER.PING", b"", reply=inbox)
            try:
                while len(seen) < 3:
                    message = await subscription.next_msg(timeout=1)
                    seen.add(message.data.decode().split('"name":"', 1)[1].split('"', 1)[0])
            except NatsTimeoutError:
                continue
        assert seen == {"nats-1", "nats-2", "nats-3"}
    finally:
        await system.close()
    routes = [node.monitor("/routez")[1] for node in cluster.nodes]
    assert all(body and body["num_routes"] >= 2 for body in routes)


def test_a_node_with_a_wrong_route_password_is_kept_out(cluster: NatsCluster) -> None:
    intruder = Node("nats-x", cluster.root)
    intruder.start({k: v.replace(cluster.route_password, "wrong") for k, v in cluster.env().items()})
    try:
        wait_until(lambda: intruder.monitor("/varz")[0] == 200, 10, "the intruder up")
        time.sleep(3)  # what it could do in that time: solicit routes, find a meta leader
        assert not intruder.healthy()
        for node in cluster.nodes:
            names = {route.get("remote_name") for route in node.monitor("/routez")[1]["routes"]}
            assert "nats-x" not in names and names <= {"nats-1", "nats-2", "nats-3"}
    finally:
        intruder.terminate(5)
