"""A compose deployment of Taskmesh for tests: images, a unique project, and a cleanup that leaves
nothing behind (containers, networks, volumes and the sandboxes its runners started).

Every Docker object is created here under a unique project / instance name and removed by that
name or by id; nothing else on the engine is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = [ROOT / "compose.yaml", Path(__file__).with_name("compose.test.yaml")]
SERVICE_IMAGE = "taskmesh:compose-test"
SANDBOX_IMAGE = "taskmesh-sandbox:compose-test"
LABEL_INSTANCE = "org.taskmesh.instance"
LABEL_RUNNER = "org.taskmesh.runner"
LABEL_PROJECT = "com.docker.compose.project"


def docker(*args: str, timeout: float = 120, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run the docker CLI; its stdout (stderr joins the error when it fails)."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def base_image() -> str:
    """The image to build on: TASKMESH_COMPOSE_BASE_IMAGE, the sandbox image, a labelled local image."""
    for name in ("TASKMESH_COMPOSE_BASE_IMAGE", "TASKMESH_SANDBOX_IMAGE"):
        if os.environ.get(name):
            return os.environ[name]
    for label in ("org.taskmesh.recipe", "org.taskmesh.sandbox"):
        found = docker("images", "--filter", f"label={label}", "--format", "{{.Repository}}:{{.Tag}}").split()
        # the images built here inherit the label: building on them would build on a built image
        found = [name for name in found if name not in (SERVICE_IMAGE, SANDBOX_IMAGE)]
        if found:
            return found[0]
    return "python:3.12-slim"


def build_tools_image() -> str:
    """deploy/build-tools-image.sh with this machine's uv and CA bundle, once per content."""
    uv = shutil.which("uv") or "/opt/taskmesh-env/bin/uv"
    ca = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    if not Path(uv).exists():
        raise AssertionError("no uv found (PATH or /opt/taskmesh-env/bin): the service image is installed with it")
    digest = hashlib.sha256()
    for path in (uv, ca):
        if Path(path).exists():
            digest.update(Path(path).read_bytes())
    tag = f"taskmesh-build-tools:{digest.hexdigest()[:12]}"
    if not docker("images", "-q", tag).strip():
        args = ["--uv", uv, "--tag", tag] + (["--ca-bundle", ca] if Path(ca).exists() else [])
        subprocess.run(
            [str(ROOT / "deploy" / "build-tools-image.sh"), *args], check=True, capture_output=True, timeout=120
        )
    return tag


def make_index(wheelhouse: Path, target: Path) -> None:
    """A PEP 503 'simple' index of the wheelhouse: simple/<project>/<wheel>, directory listings
    as pages (http.server makes them), readable by the server's user 65534."""
    for wheel in wheelhouse.glob("*.whl"):
        project = wheel.name.split("-")[0].lower().replace("_", "-").replace(".", "-")
        directory = target / "simple" / project
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copy(wheel, directory / wheel.name)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


@dataclass
class Deployment:
    """One compose project: `compose(...)` runs docker compose on it; `url` is the gateway."""

    workdir: Path
    base: str
    project: str = field(default_factory=lambda: f"tmtest-{secrets.token_hex(3)}")
    token: str = field(default_factory=lambda: "tm" + secrets.token_hex(16))
    env: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    url: str = ""

    def prepare(self, wheelhouse: Path, tools_image: str) -> None:
        site, index = self.workdir / "site", self.workdir / "index"
        site.mkdir(parents=True)
        (site / "hello.json").write_text(json.dumps({"hello": "compose"}))
        for path in (site, site / "hello.json"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        make_index(wheelhouse, index)
        socket_gid = str(os.stat("/var/run/docker.sock").st_gid)
        settings = {
            **{
                f"TASKMESH_NATS_{user}_PASSWORD": "tm" + secrets.token_hex(12)
                for user in ("GATEWAY", "STORE", "SCHEDULER", "RUNNER", "CLIENT", "ADMIN")
            },
            "TASKMESH_API_TOKEN": self.token,
            "TASKMESH_DOCKER_GID": socket_gid,
            "TASKMESH_IMAGE": SERVICE_IMAGE,
            "TASKMESH_BASE_IMAGE": self.base,
            "TASKMESH_BUILD_TOOLS_IMAGE": tools_image,
            "TASKMESH_SANDBOX_IMAGE": SANDBOX_IMAGE,
            "TASKMESH_HTTP_PUBLISH": "127.0.0.1:",  # an ephemeral port on loopback
            "TASKMESH_INDEX_URL": "http://wheels:8000/simple/",
            "TASKMESH_INSTANCE": self.project,
            "TASKMESH_HEALTHCHECK_INTERVAL": "3s",
            "TASKMESH_CODE_SLOTS": "2",
            "TASKMESH_TEST_SITE_DIR": str(site),
            "TASKMESH_TEST_INDEX_DIR": str(index),
        }
        # The same values in a file too: it replaces the checkout's own .env, and it is what a
        # person reproducing a failure passes to `docker compose --env-file`.
        env_file = self.workdir / "compose.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        self.env = {**os.environ, **settings, "COMPOSE_ENV_FILE": str(env_file)}

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
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

    def timed(self, name: str, *args: str, timeout: float = 600) -> str:
        started = time.monotonic()
        try:
            return self.compose(*args, timeout=timeout)
        finally:
            self.timings[name] = round(time.monotonic() - started, 1)

    def up(self, *extra: str) -> None:
        self.compose("up", "-d", "--wait", "--no-build", *extra)
        port = self.compose("port", "gateway", "5001").strip().rsplit(":", 1)[1]
        self.url = f"http://127.0.0.1:{port}"

    def health(self) -> dict:
        return httpx.get(f"{self.url}/api/health", timeout=5).json()

    def wait_runners(self, count: int, timeout: float = 60) -> dict:
        """Wait until /api/health lists ``count`` runners with usable sandboxes."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if health["checks"]["runners"].get("count") == count and health["checks"]["sandbox"].get("count") == count:
                return health
            assert time.monotonic() < deadline, f"not {count} runners after {timeout} s: {health['checks']}"
            time.sleep(0.5)

    def container_of_host(self, hostname: str) -> str:
        """The id of this project's container whose hostname is ``hostname``."""
        for container in self.compose("ps", "-a", "-q").split():
            if docker("inspect", "--format", "{{.Config.Hostname}}", container).strip() == hostname:
                return container
        raise AssertionError(f"no container of {self.project} has hostname {hostname}")

    def sandboxes(self, runner_id: str | None = None) -> list[str]:
        """Containers started by this deployment's runners (of one runner if given)."""
        labels = ["--filter", f"label={LABEL_INSTANCE}={self.project}"]
        if runner_id:
            labels += ["--filter", f"label={LABEL_RUNNER}={runner_id}"]
        return docker("ps", "-a", "-q", *labels).split()

    def leftovers(self) -> dict[str, list[str]]:
        """Everything of this deployment still on the engine."""
        project = f"label={LABEL_PROJECT}={self.project}"
        return {
            "containers": docker("ps", "-a", "-q", "--filter", project).split() + self.sandboxes(),
            "networks": docker("network", "ls", "-q", "--filter", project).split(),
            "volumes": docker("volume", "ls", "-q", "--filter", project).split(),
        }

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--timestamps", check=False, timeout=60)[-30000:]

    def remove_everything(self) -> None:
        """down -v, then whatever a killed runner could not remove (its sandboxes), by id."""
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False, timeout=180)
        left = self.leftovers()
        if left["containers"]:
            docker("rm", "-f", "-v", *left["containers"], check=False)
        if left["networks"]:
            docker("network", "rm", *left["networks"], check=False)
        if left["volumes"]:
            docker("volume", "rm", "-f", *left["volumes"], check=False)
        # Earlier builds of our images, now untagged, would pile up run after run on a developer's
        # machine; only dangling images with our labels are pruned.
        for label in ("org.opencontainers.image.title=taskmesh", "org.taskmesh.sandbox=1"):
            docker("image", "prune", "-f", "--filter", f"label={label}", check=False)
