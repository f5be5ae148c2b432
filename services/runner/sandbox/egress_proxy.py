"""The sandboxes' only way out: an HTTP forward and CONNECT proxy that applies the egress policy.

Sandboxes with network sit on an internal Docker network with no route beyond this host; the
runner listens there and sandboxes get ``HTTP(S)_PROXY``. The proxy resolves each name itself,
checks every resolved address and connects to exactly the address it checked, so DNS rebinding
cannot slip past it; it never follows redirects (the client sees them, and its next request comes
through here again).

The runner tells the proxy each sandbox's address on the internal network before the task's code
starts (``admit``), with the task's ``allow_hosts`` if it has any (they narrow the policy for that
sandbox alone), and forgets it only once the container is gone (``release``): the address is the
sandbox's identity. With ``known_peers_only`` the proxy serves no other address, so a sandbox
cannot shed its list by using another runner's proxy on the same network.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from proto.tasks import host_allowed
from services.runner.egress import EgressPolicy

log = logging.getLogger(__name__)

HEAD_MAX_BYTES = 64 * 1024
HEAD_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 256
"""Open client connections at once (each holds two of the runner's file descriptors); more are closed."""
HOP_HEADERS = (b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive")

Resolver = Callable[[str, int], Awaitable[list[str]]]


class ProxyRefusal(Exception):
    """A request the proxy answers itself: a status and a plain-text reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, once per request)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class EgressProxy:
    """One listener per runner; counts what it let through and what it refused."""

    def __init__(self, policy: EgressPolicy, resolver: Resolver = resolve, *, known_peers_only: bool = False) -> None:
        self.policy = policy
        self.resolver = resolver
        self.known_peers_only = known_peers_only
        self.server: asyncio.Server | None = None
        self.allowed = 0
        self.denied = 0
        self._connections: set[asyncio.Task[None]] = set()
        self._peers: dict[str, list[str]] = {}

    def admit(self, address: str, allow_hosts: list[str]) -> None:
        """Serve ``address`` (a sandbox); when ``allow_hosts`` is not empty, only those hosts, within the policy."""
        self._peers[address] = list(allow_hosts)

    def release(self, address: str) -> None:
        """Forget ``address``: its container is gone (safe twice)."""
        self._peers.pop(address, None)

    def __repr__(self) -> str:
        return f"<EgressProxy {self.address} allowed={self.allowed} denied={self.denied}>"

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the proxy listens on."""
        assert self.server is not None, "proxy not started"
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self, host: str, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    async def close(self) -> None:
        """Stop listening and end open tunnels (safe twice)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            self.denied += 1
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # the client went away or never finished its request
        finally:
            self._connections.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            method, target, head = _parse(head)
            if method == "CONNECT":
                host, port = _authority(target, 443)
            else:
                parts = urlsplit(target)
                if parts.scheme != "http" or not parts.hostname:
                    raise ProxyRefusal(400, "Bad Request", f"not a proxy request for an http:// URL: {target[:200]}")
                host, port = parts.hostname, parts.port or 80
            self._check_task_hosts(writer, host)
            upstream_reader, upstream_writer = await self._connect(host, port)
        except ProxyRefusal as refusal:
            await _answer(writer, refusal)
            return
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                upstream_writer.write(head)
            await _pipe_both(reader, writer, upstream_reader, upstream_writer)
        finally:
            upstream_writer.close()

    def _check_task_hosts(self, writer: asyncio.StreamWriter, host: str) -> None:
        """Refuse an unknown sandbox (when only known ones are served), or ``host`` when the
        connecting sandbox's task lists other hosts."""
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        if self.known_peers_only and address not in self._peers:
            self.denied += 1
            raise ProxyRefusal(403, "Forbidden", f"taskmesh egress proxy: {address} is not a sandbox of this runner")
        allow_hosts = self._peers.get(address)
        if allow_hosts and not host_allowed(host, allow_hosts):
            self.denied += 1
            log.info("egress denied by allow_hosts", extra={"host": host})
            raise ProxyRefusal(
                403,
                "Forbidden",
                f"taskmesh egress proxy: {host} is not in this task's allow_hosts ({', '.join(allow_hosts)})",
            )

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve ``host``, refuse if any address is blocked, connect to a checked address."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                addresses = await self.resolver(host, port)
        except (OSError, TimeoutError) as exc:
            raise ProxyRefusal(502, "Bad Gateway", f"taskmesh egress proxy: cannot resolve {host}: {exc}") from None
        for address in addresses:
            refusal = self.policy.refusal(host, address)
            if refusal:
                self.denied += 1
                log.info("egress denied", extra={"host": host, "address": address, "port": port})
                raise ProxyRefusal(403, "Forbidden", f"taskmesh egress proxy: {refusal}")
        failures = []
        for address in addresses:  # exactly the addresses checked above: never a second lookup
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    connection = await asyncio.open_connection(address, port)
            except (OSError, TimeoutError) as exc:
                failures.append(f"{address}: {exc or type(exc).__name__}")
                continue
            if _is_this_host(connection[1]) and not self.policy.explicitly_allowed(address):
                # one of this host's own (public) addresses: its services, not the internet
                connection[1].close()
                self.denied += 1
                raise ProxyRefusal(
                    403,
                    "Forbidden",
                    f"taskmesh egress proxy: {address} is this runner's host, which the egress policy blocks",
                )
            self.allowed += 1
            return connection
        raise ProxyRefusal(
            502,
            "Bad Gateway",
            f"taskmesh egress proxy: cannot connect to {host}:{port} ({'; '.join(failures) or 'no address'})",
        )


def _is_this_host(writer: asyncio.StreamWriter) -> bool:
    """A connection to one of this host's addresses: the kernel's local route uses it as the source too."""
    local, peer = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
    return bool(local and peer) and local[0] == peer[0]


def _parse(head: bytes) -> tuple[str, str, bytes]:
    """Method, target and the head to send upstream (origin-form, no hop-by-hop headers)."""
    lines = head.split(b"\r\n")
    try:
        method, target, version = lines[0].decode("latin-1").split(" ")
    except ValueError:
        raise ProxyRefusal(400, "Bad Request", "taskmesh egress proxy: malformed request line") from None
    if method == "CONNECT":
        return method, target, b""
    parts = urlsplit(target)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kept = [line for line in lines[1:] if line and line.split(b":", 1)[0].strip().lower() not in HOP_HEADERS]
    rebuilt = [f"{method} {path} {version}".encode("latin-1"), *kept, b"Connection: close", b"", b""]
    return method, target, b"\r\n".join(rebuilt)


def _authority(target: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(f"//{target}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ProxyRefusal(400, "Bad Request", f"taskmesh egress proxy: bad port in {target[:200]}") from None
    if not parts.hostname:
        raise ProxyRefusal(400, "Bad Request", f"taskmesh egress proxy: no host in {target[:200]}")
    return parts.hostname, port


async def _answer(writer: asyncio.StreamWriter, refusal: ProxyRefusal) -> None:
    body = (refusal.message + "\n").encode()
    writer.write(
        f"HTTP/1.1 {refusal.status} {refusal.reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nX-Taskmesh-Egress: denied\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until one side is done, then end both."""
    tasks = [asyncio.create_task(_pipe(reader, upstream_writer)), asyncio.create_task(_pipe(upstream_reader, writer))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # the response may still be flowing after the client finished sending: let it finish
        if tasks[0].done() and not tasks[1].done():
            await tasks[1]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            target.write(data)
            await target.drain()
        if target.can_write_eof():
            target.write_eof()
    except OSError:
        pass
