"""compose.cluster.yaml as users run it: three NATS nodes and the services, up --wait, a task,
the documented admin command inside a node, down. Requires a Docker engine (fails, never skips)."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests import wheelhouse
from tests.compose.deployment import ROOT, Deployment, base_image, build_tools_image, docker
from tests.support import Api

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(900)]

CLUSTER_FILES = [ROOT / "compose.cluster.yaml", ROOT / "tests" / "compose" / "compose.test.yaml"]
IMAGE = "taskmesh:compose-cluster-test"
"""Its own tag: the single-node compose tests (maybe running beside) keep theirs."""
SANDBOX = os.environ.get("TASKMESH_CLUSTER_SANDBOX_IMAGE", "taskmesh-sandbox:py311-r1")


@dataclass
class ClusterDeployment(Deployment):
    """A Deployment of compose.cluster.yaml."""

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        files = [arg for path in CLUSTER_FILES for arg in ("-f", str(path))]
        return docker(
            "compose",
            "-p",
            self.project,
            "--env-file",
            self.env["COMPOSE_ENV_FILE"],
            *files,
            *args,
            timeout=timeout,
            check=check,
            env=self.env,
        )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    try:
        docker("version", timeout=20)
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        pytest.fail(f"the compose tests need a Docker engine and none answers ({exc})", pytrace=False)
    deployment = ClusterDeployment(tmp_path_factory.mktemp("compose-cluster"), base_image())
    started = time.monotonic()
    (deployment.workdir / "index").mkdir()  # no wheels needed: this test installs no requirement
    try:
        deployment.prepare(wheelhouse.target_dir(), build_tools_image())
        extra = {
            "TASKMESH_IMAGE": IMAGE,
            "TASKMESH_SANDBOX_IMAGE": SANDBOX,
            "TASKMESH_NATS_ROUTE_PASSWORD": "tm" + secrets.token_hex(12),
            "TASKMESH_NATS_SYSTEM_PASSWORD": "tm" + secrets.token_hex(12),
        }
        env_file = deployment.workdir / "compose.env"
        env_file.write_text(env_file.read_text() + "".join(f"{k}={v}\n" for k, v in extra.items()))
        deployment.env |= extra
        deployment.timed("compose build", "build")
        up_started = time.monotonic()
        deployment.up()
        deployment.timings["up --wait"] = round(time.monotonic() - up_started, 1)
        yield deployment
    except BaseException:
        print(deployment.logs())
        raise
    finally:
        if deployment.env:
            deployment.remove_everything()
        deployment.timings["total"] = round(time.monotonic() - started, 1)
        print(f"\ncompose cluster {deployment.project}: {deployment.timings}")


async def test_the_cluster_comes_up_healthy_runs_a_task_and_needs_no_replica_upgrade(
    deployment: ClusterDeployment,
) -> None:
    health = deployment.health()
    assert health["status"] == "ok", health["checks"]
    api = Api(deployment.url, token=deployment.token)
    try:
        created = await api.submit(
            {"name": "on the cluster", "task_type": "immediate", "api_url": "http://target:8000/hello.json"}
        )
        done = await api.wait_final(created["id"], timeout=60)
        assert done["status"] == "succeeded", done
    finally:
        await api.close()
    # the documented admin command, inside a node, with the admin password it already has
    upgrade = deployment.compose("exec", "-T", "nats-1", "python", "-m", "services.admin.replicas", "3")
    assert "0 streams changed" in upgrade and "KV_leases: R3 already" in upgrade, upgrade
    # SIGTERM, a clean exit, a restart; the services keep answering
    deployment.compose("restart", "nats-2", timeout=120)
    deployment.compose("up", "-d", "--wait", "--no-build", "nats-2", timeout=120)
    assert deployment.health()["status"] in ("ok", "degraded")
