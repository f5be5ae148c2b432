"""Egress from sandboxes and API tasks: blocked addresses are refused with a clear error, whatever
the route (the proxy, a direct socket, a redirect, a name), and an allowed local target is reached.

Every target is on this machine: listeners the test starts on 127.0.0.1 (this host's loopback),
on docker0's address (the Docker bridge gateway), on 127.0.0.2 (the operator's allowed exception),
and a container the test creates at 169.254.169.254 on its own network (the metadata stand-in).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from tests.support import Api, Stack, WheelServer

SANDBOX_IMAGE = "taskmesh-sandbox:py311-r1"

PROBE = """
import os, socket, urllib.error, urllib.request

def probe(url, direct_host=None, direct_port=None):
    out = {"proxy": os.environ.get("HTTP_PROXY")}
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            out["status"], out["body"] = response.status, response.read().decode()[:500]
    except urllib.error.HTTPError as exc:
        out["status"], out["body"] = exc.code, exc.read().decode()[:500]
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    if direct_host:
        try:
            socket.create_connection((direct_host, direct_port), timeout=3).close()
            out["direct"] = "connected"
        except OSError as exc:
            out["direct"] = f"{type(exc).__name__}: {exc}"
    return out
"""


class Listener:
    """A local HTTP server on ``host`` that counts its hits; /redirect sends clients to ``location``."""

    def __init__(self, host: str) -> None:
        self.host, self.hits, self.location, self.port = host, 0, "", 0
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Listener:
        async def hello(request: web.Request) -> web.Response:
            self.hits += 1
            return web.Response(text=f"hello from {self.host}")

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(self.location)

        app = web.Application()
        app.router.add_get("/hello", hello)
        app.router.add_get("/redirect", redirect)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def docker0_address() -> str:
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True, timeout=10
    ).stdout
    return out.split("inet ")[1].split("/")[0]


def host_address() -> str:
    """This host's own (non-loopback) address: where the default route leaves."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: connect() on UDP only picks the route
        return str(probe.getsockname()[0])


@pytest.fixture(scope="module")
def deps_volume(docker_engine: None) -> Iterator[tuple[str, str]]:
    """A named volume for requirement sets, as compose has: (its name, its directory on this host)."""
    name = f"taskmesh-test-deps-{secrets.token_hex(3)}"
    subprocess.run(["docker", "volume", "create", name], check=True, capture_output=True, timeout=30)
    try:
        mountpoint = subprocess.run(
            ["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", name],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        yield name, mountpoint
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    wheel_server: WheelServer,
    deps_volume: tuple[str, str],
    docker_engine: None,
) -> Iterator[Stack]:
    running = Stack(
        tmp_path_factory.mktemp("egress"),
        env_extra={
            "TASKMESH_FIND_LINKS": wheel_server.url,
            "TASKMESH_POOL_SIZE": "1",
            "TASKMESH_EGRESS_ALLOW_LOOPBACK": "false",  # a shared deployment: loopback denied
            "TASKMESH_EGRESS_ALLOW": "127.0.0.2/32",  # the operator's exception: the allowed target
            "TASKMESH_DEPS_VOLUME": deps_volume[0],
            "TASKMESH_DEPS_DIR": deps_volume[1],
        },
    )  # sets in a volume
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
async def allowed() -> AsyncIterator[Listener]:
    listener = await Listener("127.0.0.2").start()
    yield listener
    await listener.stop()


@pytest.fixture
async def loopback() -> AsyncIterator[Listener]:
    listener = await Listener("127.0.0.1").start()
    yield listener
    await listener.stop()


@pytest.fixture
async def bridge_gateway() -> AsyncIterator[Listener]:
    listener = await Listener(docker0_address()).start()
    yield listener
    await listener.stop()


@pytest.fixture(scope="module")
def metadata(docker_engine: None) -> Iterator[str]:
    """A container answering at 169.254.169.254:80 on a network the test creates."""
    name = f"taskmesh-test-metadata-{secrets.token_hex(3)}"
    subprocess.run(
        ["docker", "network", "create", "--subnet", "169.254.169.0/24", name],
        check=True,
        capture_output=True,
        timeout=30,
    )
    try:
        subprocess.run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                name,
                "--network",
                name,
                "--ip",
                "169.254.169.254",
                SANDBOX_IMAGE,
                "python3",
                "-m",
                "http.server",
                "80",
                "--bind",
                "169.254.169.254",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 20
        while True:  # the stand-in answers this host: a refusal later is the policy's doing
            try:
                with urllib.request.urlopen("http://169.254.169.254/", timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the metadata stand-in did not start"
                time.sleep(0.2)
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        subprocess.run(["docker", "network", "rm", name], capture_output=True, timeout=60)


def metadata_requests(name: str) -> int:
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=30)
    return (logs.stdout + logs.stderr).count('"GET /latest/meta-data/')


async def probe(
    api: Api, url: str, direct: tuple[str, int] | None = None, allow_hosts: list[str] | None = None
) -> dict[str, object]:
    args: list[object] = [url, *(direct or ())]
    created = await api.submit(
        {
            "name": "probe",
            "task_type": "immediate",
            "function_code": PROBE,
            "function_name": "probe",
            "args": args,
            "network": True,
            "timeout": 60,
            **({"allow_hosts": allow_hosts} if allow_hosts else {}),
        }
    )
    task = await api.wait_final(created["id"], timeout=120)
    assert task["status"] == "succeeded", task
    return task["result"]


def refused(result: dict[str, object], why: str) -> None:
    assert result["status"] == 403, result
    assert str(result["body"]).startswith("taskmesh egress proxy: "), result
    assert why in str(result["body"]), result


# --- code tasks with network -------------------------------------------------------------------


async def test_a_code_task_with_network_reaches_an_allowed_local_target_through_the_proxy(
    api: Api, allowed: Listener
) -> None:
    result = await probe(api, f"{allowed.url}/hello")
    assert result["status"] == 200 and result["body"] == "hello from 127.0.0.2"
    assert str(result["proxy"]).startswith("http://")
    assert allowed.hits == 1


async def test_the_docker_bridge_gateway_is_refused_through_the_proxy_and_unreachable_directly(
    api: Api, bridge_gateway: Listener
) -> None:
    result = await probe(api, f"{bridge_gateway.url}/hello", direct=(bridge_gateway.host, bridge_gateway.port))
    refused(result, f"{bridge_gateway.host} is blocked by the egress policy")
    assert result["direct"] != "connected"
    assert bridge_gateway.hits == 0


async def test_the_metadata_address_is_refused_through_the_proxy_and_unreachable_directly(
    api: Api, metadata: str
) -> None:
    before = metadata_requests(metadata)
    result = await probe(api, "http://169.254.169.254/latest/meta-data/", direct=("169.254.169.254", 80))
    refused(result, "169.254.169.254 is blocked by the egress policy")
    assert result["direct"] != "connected"
    assert metadata_requests(metadata) == before


async def test_this_hosts_loopback_is_refused(api: Api, loopback: Listener) -> None:
    result = await probe(api, f"{loopback.url}/hello")
    refused(result, "127.0.0.1 is blocked by the egress policy")
    assert loopback.hits == 0


async def test_this_hosts_own_address_is_refused_through_the_proxy_and_unreachable_directly(api: Api) -> None:
    everywhere = await Listener("0.0.0.0").start()  # a host service bound to every address
    try:
        own = host_address()
        result = await probe(api, f"http://{own}:{everywhere.port}/hello", direct=(own, everywhere.port))
    finally:
        await everywhere.stop()
    refused(result, f"{own} is this runner's host, which the egress policy blocks")
    assert result["direct"] != "connected"
    assert everywhere.hits == 0


async def test_a_name_that_resolves_to_a_blocked_address_is_refused(api: Api, loopback: Listener) -> None:
    # the proxy resolves the name itself and checks the address it will connect to
    result = await probe(api, f"http://localhost:{loopback.port}/hello")
    refused(result, "localhost resolves to")
    assert loopback.hits == 0


async def test_a_redirect_from_an_allowed_target_to_a_blocked_one_is_refused(
    api: Api, allowed: Listener, loopback: Listener
) -> None:
    allowed.location = f"{loopback.url}/hello"
    result = await probe(api, f"{allowed.url}/redirect")  # urllib follows: its next hop meets the proxy
    refused(result, "127.0.0.1 is blocked by the egress policy")
    assert loopback.hits == 0


async def test_a_code_task_with_allow_hosts_reaches_a_listed_host_and_is_refused_others(
    api: Api, allowed: Listener, loopback: Listener
) -> None:
    listed = await probe(api, f"{allowed.url}/hello", allow_hosts=["127.0.0.2"])
    unlisted = await probe(api, f"{allowed.url}/hello", allow_hosts=["api.example.com"])
    listed_but_blocked = await probe(api, f"http://localhost:{loopback.port}/hello", allow_hosts=["localhost"])
    assert listed["status"] == 200 and listed["body"] == "hello from 127.0.0.2"
    refused(unlisted, "127.0.0.2 is not in this task's allow_hosts (api.example.com)")
    refused(listed_but_blocked, "localhost resolves to")  # the list narrows the policy, never widens it
    assert allowed.hits == 1 and loopback.hits == 0


async def test_another_sandbox_is_not_held_to_a_tasks_allow_hosts(api: Api, allowed: Listener) -> None:
    await probe(api, f"{allowed.url}/hello", allow_hosts=["api.example.com"])
    result = await probe(api, f"{allowed.url}/hello")
    assert result["status"] == 200 and allowed.hits == 1


# --- API tasks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("isolated", [False, True], ids=["in-the-runner", "isolated"])
async def test_an_api_task_with_allow_hosts_is_refused_a_listed_name_that_resolves_to_a_blocked_address(
    api: Api, loopback: Listener, isolated: bool
) -> None:
    created = await api.submit(
        {
            "name": "listed-but-blocked",
            "task_type": "immediate",
            "api_url": f"http://localhost:{loopback.port}/hello",
            "allow_hosts": ["localhost"],
            "isolated": isolated,
            "timeout": 30,
        }
    )
    task = await api.wait_final(created["id"], timeout=120)
    assert task["status"] == "failed", task
    assert task["error"]["type"] == "egress_denied"
    assert "127.0.0.1" in task["error"]["message"] and "egress policy" in task["error"]["message"]
    assert loopback.hits == 0


async def test_an_api_task_whose_url_is_outside_its_allow_hosts_is_rejected_naming_the_field(api: Api) -> None:
    rejected = await api.submit(
        {
            "name": "outside",
            "task_type": "immediate",
            "api_url": "http://127.0.0.2/hello",
            "allow_hosts": ["api.example.com"],
        },
        expect=400,
    )
    assert rejected["error"]["field"] == "allow_hosts"
    assert "127.0.0.2 is not in allow_hosts" in rejected["error"]["message"]


async def test_an_isolated_api_task_without_requests_reports_a_redirect_instead_of_following_it(
    api: Api, allowed: Listener, loopback: Listener
) -> None:
    allowed.location = f"{loopback.url}/hello"
    created = await api.submit(
        {
            "name": "redirect",
            "task_type": "immediate",
            "api_url": f"{allowed.url}/redirect",
            "isolated": True,
            "requirements": ["idna"],
            "expected_status": [302],
            "timeout": 30,
        }
    )
    task = await api.wait_final(created["id"], timeout=120)
    assert task["spec"]["requirements"] == ["idna"]  # no requests: the bootstrap's urllib path
    assert task["status"] == "succeeded", task
    assert task["result"]["status_code"] == 302
    assert loopback.hits == 0


@pytest.mark.parametrize("isolated", [False, True], ids=["in-the-runner", "isolated"])
async def test_an_api_task_cannot_read_the_nats_monitor(api: Api, stack: Stack, isolated: bool) -> None:
    assert stack.nats is not None
    url = f"http://127.0.0.1:{stack.nats.monitor_port}/connz?auth=true&subs=true"
    created = await api.submit(
        {"name": "connz", "task_type": "immediate", "api_url": url, "isolated": isolated, "timeout": 30}
    )
    task = await api.wait_final(created["id"], timeout=120)
    assert task["status"] == "failed", task
    assert task["error"]["type"] == "egress_denied"
    assert "127.0.0.1" in task["error"]["message"] and "egress policy" in task["error"]["message"]
    assert "connz" not in json.dumps(task.get("result"))


async def test_an_isolated_api_task_reaches_the_allowed_target(api: Api, allowed: Listener) -> None:
    created = await api.submit(
        {
            "name": "allowed",
            "task_type": "immediate",
            "api_url": f"{allowed.url}/hello",
            "isolated": True,
            "timeout": 30,
        }
    )
    task = await api.wait_final(created["id"], timeout=120)
    assert task["status"] == "succeeded", task
    assert task["result"]["body"] == "hello from 127.0.0.2"
    await asyncio.sleep(0)  # keep the listener's loop turning before teardown


# --- requirement sets ----------------------------------------------------------------------------

LOOK_AROUND = """
import os

def look():
    found = {"deps": os.environ.get("TASKMESH_DEPS"), "mounted": sorted(os.listdir("/deps")),
             "deps_root": os.path.exists("/deps-root")}
    for top in ("/deps", "/deps-root", "/"):
        for directory, subdirectories, files in os.walk(top):
            if directory.startswith(("/proc", "/sys")):
                subdirectories[:] = []
            if "six.py" in files or ".uv-cache" in subdirectories:
                found.setdefault("others", []).append(directory)
    return found
"""


async def test_a_sandbox_sees_only_its_own_requirement_set_never_another_tasks_nor_uvs_cache(
    api: Api, deps_volume: tuple[str, str]
) -> None:
    other = await api.submit(
        {
            "name": "six",
            "task_type": "immediate",
            "requirements": ["six"],
            "function_code": "import six\ndef f():\n    return six.__file__",
            "function_name": "f",
        }
    )
    assert (await api.wait_final(other["id"], timeout=180))["status"] == "succeeded"
    created = await api.submit(
        {
            "name": "look",
            "task_type": "immediate",
            "requirements": ["idna"],
            "function_code": LOOK_AROUND,
            "function_name": "look",
            "timeout": 60,
        }
    )
    task = await api.wait_final(created["id"], timeout=180)
    assert task["status"] == "succeeded", task
    result = task["result"]
    assert result["deps"] == "/deps" and "idna" in result["mounted"] and "six.py" not in result["mounted"]
    assert result["deps_root"] is False
    assert "others" not in result, result  # neither six (another task's set) nor uv's cache anywhere
    assert any(name.endswith(".uv-cache") for name in os.listdir(deps_volume[1]))  # it exists, out of sight
