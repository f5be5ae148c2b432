"""R1 -> R3: the services keep running on a replica mismatch, and one admin command finishes it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import nats
from nats.aio.client import Client

from proto import streams, subjects
from taskmesh.processes import project_root
from tests.cluster.nodes import NatsCluster
from tests.cluster.stack import ClusterStack

ALL = [*streams.streams(), *(f"KV_{name}" for name in streams.buckets())]


async def _replicas(nc: Client) -> dict[str, int]:
    js = nc.jetstream(timeout=10)
    found = {}
    for name in ALL:
        try:
            found[name] = (await js.stream_info(name)).config.num_replicas
        except nats.js.errors.NotFoundError:
            pass
    return found


async def _replicas_so_far(nc: Client) -> dict[str, int]:
    """``_replicas`` while the services create their streams: a stream whose creation is still
    being placed in the forming cluster may not answer its info request (CI saw a 10 s timeout);
    that is "not there yet", asked again by the caller's loop."""
    try:
        return await _replicas(nc)
    except nats.errors.TimeoutError:
        return {}


async def _heard(nc: Client, services: set[str], timeout: float = 40) -> None:
    heard: set[str] = set()
    subscription = await nc.subscribe("taskmesh.heartbeat.>")
    deadline = time.monotonic() + timeout
    try:
        while not services <= heard:
            assert time.monotonic() < deadline, f"heard only {heard} of {services}"
            try:
                message = await subscription.next_msg(timeout=1)
            except nats.errors.TimeoutError:
                continue
            heard.add(message.subject.split(".")[2])
    finally:
        await subscription.unsubscribe()


def _admin_command(cluster: NatsCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASKMESH_NATS_URL": cluster.urls, "TASKMESH_NATS_ADMIN_PASSWORD": cluster.passwords["admin"]}
    env.pop("TASKMESH_NATS_USER", None)
    return subprocess.run(
        [sys.executable, "-m", "services.admin.replicas", *args],
        env=env,
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_an_r1_install_moved_to_r3_keeps_running_and_the_admin_command_makes_everything_r3(
    tmp_path: Path, cluster: NatsCluster
) -> None:
    stack = ClusterStack(tmp_path, cluster=cluster)
    admin = await nats.connect(cluster.urls.split(","), user="admin", password=cluster.passwords["admin"])
    try:
        for name in ("store", "scheduler"):
            stack.start_service(name, TASKMESH_JS_REPLICAS="1")
        deadline = time.monotonic() + 40
        while set(await _replicas_so_far(admin)) != set(ALL):
            assert time.monotonic() < deadline, stack.logs()
            await asyncio.sleep(0.2)
        assert set((await _replicas(admin)).values()) == {1}
        for name in ("store", "scheduler"):
            stack.services[name].stop()

        for name in ("store", "scheduler"):  # TASKMESH_JS_REPLICAS=3 now
            stack.start_service(name)
        await _heard(admin, {"store", "scheduler"})
        assert all(stack.services[name].alive() for name in ("store", "scheduler")), stack.logs()
        replicas = await _replicas(admin)
        assert replicas[subjects.STREAM_TASKS] == 3  # a service may update its own streams
        assert replicas[f"KV_{subjects.BUCKET_TASKS}"] == 1  # but not a bucket's: it warns instead
        assert "python -m services.admin.replicas" in stack.services["store"].log()

        done = await asyncio.to_thread(_admin_command, cluster, "3")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"KV_{subjects.BUCKET_LEASES}: R1 -> R3" in done.stdout
        assert set((await _replicas(admin)).values()) == {3}
        leases = await admin.jetstream().stream_info(f"KV_{subjects.BUCKET_LEASES}")
        assert leases.config.max_age == streams.LEASE_TTL.total_seconds()
        again = await asyncio.to_thread(_admin_command, cluster, "3")
        assert again.returncode == 0 and "0 streams changed" in again.stdout, again.stdout + again.stderr
        await _heard(admin, {"store", "scheduler"})
        assert all(stack.services[name].alive() for name in ("store", "scheduler")), stack.logs()
    finally:
        await admin.close()
        stack.stop()
