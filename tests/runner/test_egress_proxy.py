"""The sandboxes' egress proxy: the API tasks' policy, on the address it resolved and connects to.

Every target is on this machine: 127.0.0.2 stands for an allowed host (allowed by CIDR), 127.0.0.1
for a blocked one (loopback is denied by default).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from services.runner.egress import DEFAULT_DENIED_RANGES, EgressPolicy
from services.runner.sandbox.egress_proxy import EgressProxy

POLICY = EgressPolicy(DEFAULT_DENIED_RANGES, allow=["127.0.0.2/32"])


class Target:
    """A local server that counts its hits; /redirect sends the client to ``location``."""

    def __init__(self, host: str) -> None:
        self.host, self.hits, self.location = host, 0, ""
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> Target:
        async def hello(request: web.Request) -> web.Response:
            self.hits += 1
            return web.json_response({"served_by": self.host, "path": request.path_qs})

        async def redirect(request: web.Request) -> web.Response:
            self.hits += 1
            raise web.HTTPFound(self.location)

        app = web.Application()
        app.router.add_get("/hello", hello)
        app.router.add_get("/redirect", redirect)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self


@pytest.fixture
async def targets() -> AsyncIterator[tuple[Target, Target]]:
    allowed, blocked = await Target("127.0.0.2").start(), await Target("127.0.0.1").start()
    yield allowed, blocked
    for target in (allowed, blocked):
        await target.runner.cleanup()  # type: ignore[union-attr]


async def started(proxy: EgressProxy) -> str:
    await proxy.start("127.0.0.1")
    host, port = proxy.address
    return f"http://{host}:{port}"


async def get(proxy_url: str, url: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, proxy=proxy_url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        return response.status, await response.text()


async def test_a_request_to_an_allowed_address_goes_through(targets: tuple[Target, Target]) -> None:
    allowed, _ = targets
    proxy = EgressProxy(POLICY)
    try:
        status, body = await get(await started(proxy), f"http://127.0.0.2:{allowed.port}/hello?x=1")
    finally:
        await proxy.close()
    assert status == 200 and '"path": "/hello?x=1"' in body
    assert proxy.allowed == 1


async def test_a_request_to_a_blocked_address_is_refused_with_a_403_that_says_why(
    targets: tuple[Target, Target],
) -> None:
    _, blocked = targets
    proxy = EgressProxy(POLICY)
    try:
        status, body = await get(await started(proxy), f"http://127.0.0.1:{blocked.port}/hello")
    finally:
        await proxy.close()
    assert status == 403
    assert body == "taskmesh egress proxy: 127.0.0.1 is blocked by the egress policy\n"
    assert blocked.hits == 0 and proxy.denied == 1


async def test_a_name_that_resolves_to_a_blocked_address_is_refused(targets: tuple[Target, Target]) -> None:
    _, blocked = targets
    proxy = EgressProxy(POLICY)
    try:
        status, body = await get(await started(proxy), f"http://localhost:{blocked.port}/hello")
    finally:
        await proxy.close()
    assert status == 403 and "localhost resolves to" in body and "which the egress policy blocks" in body
    assert blocked.hits == 0


async def test_a_redirect_is_handed_to_the_client_and_its_next_hop_is_checked_again(
    targets: tuple[Target, Target],
) -> None:
    allowed, blocked = targets
    allowed.location = f"http://127.0.0.1:{blocked.port}/hello"
    proxy = EgressProxy(POLICY)
    try:
        proxy_url = await started(proxy)
        status, _ = await get(proxy_url, f"http://127.0.0.2:{allowed.port}/redirect")
        follow, body = await get(proxy_url, allowed.location)
    finally:
        await proxy.close()
    assert status == 302 and follow == 403 and "blocked by the egress policy" in body
    assert blocked.hits == 0


async def test_dns_rebinding_cannot_change_the_address_after_the_check(targets: tuple[Target, Target]) -> None:
    allowed, blocked = targets
    answers = [["127.0.0.2"], ["127.0.0.1"]]  # first the allowed address, then the blocked one

    async def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    proxy = EgressProxy(POLICY, resolver=rebinding)
    try:
        status, body = await get(await started(proxy), f"http://rebind.test:{allowed.port}/hello")
    finally:
        await proxy.close()
    assert status == 200 and '"served_by": "127.0.0.2"' in body  # connected to the address it checked
    assert answers == [["127.0.0.1"]]  # resolved exactly once
    assert blocked.hits == 0


async def test_a_name_with_any_blocked_address_is_refused_even_beside_an_allowed_one(
    targets: tuple[Target, Target],
) -> None:
    allowed, _ = targets

    async def mixed(host: str, port: int) -> list[str]:
        return ["127.0.0.2", "127.0.0.1"]

    proxy = EgressProxy(POLICY, resolver=mixed)
    try:
        status, body = await get(await started(proxy), f"http://mixed.test:{allowed.port}/hello")
    finally:
        await proxy.close()
    assert status == 403 and "mixed.test resolves to 127.0.0.1" in body
    assert allowed.hits == 0


async def test_connect_tunnels_only_to_allowed_addresses(targets: tuple[Target, Target]) -> None:
    allowed, blocked = targets
    proxy = EgressProxy(POLICY)
    await proxy.start("127.0.0.1")
    try:
        replies = []
        for target in (allowed, blocked):
            reader, writer = await asyncio.open_connection(*proxy.address)
            writer.write(f"CONNECT {target.host}:{target.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status_line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if b" 200 " in status_line:
                writer.write(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            replies.append(status_line + await asyncio.wait_for(reader.read(), 10))
            writer.close()
    finally:
        await proxy.close()
    assert b"200 Connection established" in replies[0] and b'"served_by": "127.0.0.2"' in replies[0]
    assert replies[1].startswith(b"HTTP/1.1 403 Forbidden") and blocked.hits == 0


async def test_a_request_that_is_not_for_an_http_url_gets_a_400() -> None:
    proxy = EgressProxy(POLICY)
    await proxy.start("127.0.0.1")
    try:
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"GET /local/path HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        await proxy.close()
    assert reply.startswith(b"HTTP/1.1 400 Bad Request") and b"not a proxy request" in reply


async def get_from(local_address: str, proxy_url: str, url: str) -> tuple[int, str]:
    """A request through the proxy from ``local_address``: a sandbox's address on its network."""
    connector = aiohttp.TCPConnector(local_addr=(local_address, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, proxy=proxy_url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        return response.status, await response.text()


async def test_a_sandbox_with_allow_hosts_reaches_only_its_listed_hosts_and_never_a_blocked_address(
    targets: tuple[Target, Target],
) -> None:
    allowed, blocked = targets
    names = {"listed.test": "127.0.0.2", "other.test": "127.0.0.2", "rebound.test": "127.0.0.1"}

    async def local_names(host: str, port: int) -> list[str]:
        return [names[host]]

    proxy = EgressProxy(POLICY, resolver=local_names)
    proxy.admit("127.0.0.5", ["listed.test", "rebound.test"])
    try:
        proxy_url = await started(proxy)
        listed = await get_from("127.0.0.5", proxy_url, f"http://listed.test:{allowed.port}/hello")
        other = await get_from("127.0.0.5", proxy_url, f"http://other.test:{allowed.port}/hello")
        rebound = await get_from("127.0.0.5", proxy_url, f"http://rebound.test:{blocked.port}/hello")
        unrestricted = await get_from("127.0.0.6", proxy_url, f"http://other.test:{allowed.port}/hello")
        proxy.release("127.0.0.5")
        released = await get_from("127.0.0.5", proxy_url, f"http://other.test:{allowed.port}/hello")
    finally:
        await proxy.close()
    assert listed[0] == 200
    assert other == (
        403,
        "taskmesh egress proxy: other.test is not in this task's allow_hosts (listed.test, rebound.test)\n",
    )
    assert rebound[0] == 403 and "rebound.test resolves to 127.0.0.1, which the egress policy blocks" in rebound[1]
    assert unrestricted[0] == 200 and released[0] == 200  # the list is that sandbox's alone
    assert blocked.hits == 0 and allowed.hits == 3


async def test_connect_from_a_sandbox_with_allow_hosts_is_refused_for_an_unlisted_host() -> None:
    proxy = EgressProxy(POLICY)
    proxy.admit("127.0.0.1", ["listed.test"])
    try:
        await proxy.start("127.0.0.1")
        reader, writer = await asyncio.open_connection(*proxy.address)
        writer.write(b"CONNECT 127.0.0.2:443 HTTP/1.1\r\nHost: 127.0.0.2:443\r\n\r\n")
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
    finally:
        await proxy.close()
    assert answer.startswith(b"HTTP/1.1 403 Forbidden")
    assert answer.endswith(b"127.0.0.2 is not in this task's allow_hosts (listed.test)\n")


async def test_a_proxy_serving_known_sandboxes_only_refuses_any_other_address(targets: tuple[Target, Target]) -> None:
    allowed, _ = targets
    proxy = EgressProxy(POLICY, known_peers_only=True)
    proxy.admit("127.0.0.5", [])
    try:
        proxy_url = await started(proxy)
        admitted = await get_from("127.0.0.5", proxy_url, f"http://127.0.0.2:{allowed.port}/hello")
        stranger = await get_from("127.0.0.6", proxy_url, f"http://127.0.0.2:{allowed.port}/hello")
        proxy.release("127.0.0.5")
        released = await get_from("127.0.0.5", proxy_url, f"http://127.0.0.2:{allowed.port}/hello")
    finally:
        await proxy.close()
    assert admitted[0] == 200
    assert stranger == (403, "taskmesh egress proxy: 127.0.0.6 is not a sandbox of this runner\n")
    assert released[0] == 403 and allowed.hits == 1
