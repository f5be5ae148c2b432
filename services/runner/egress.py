"""Egress policy for API tasks: addresses a request may never reach (link-local, cloud metadata).

Checked at connect time on the resolved address, so a name that resolves to a blocked address
(DNS rebinding included) is refused, and the connection goes to the address that was checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressDenied(httpcore.ConnectError):
    """The destination resolves to an address the policy blocks."""


class EgressPolicy:
    """Deny ranges, with allow ranges that take precedence (an operator's exceptions)."""

    def __init__(self, deny: Iterable[str], allow: Iterable[str] = ()) -> None:
        self.deny = [ipaddress.ip_network(n, strict=False) for n in deny]
        self.allow = [ipaddress.ip_network(n, strict=False) for n in allow]

    def permits(self, address: str) -> bool:
        """Whether a connection to ``address`` (an IP) is allowed."""
        ip = ipaddress.ip_address(address.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in n for n in self.allow):
            return True
        return not any(ip in n for n in self.deny)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, checks every address against the policy, connects to one."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        blocked = [a for a in addresses if not self.policy.permits(a)]
        if blocked:
            raise EgressDenied(f"{host} resolves to {blocked[0]}, which the egress policy blocks")
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        raise last_error or httpcore.ConnectError(f"no address for {host!r}")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise EgressDenied("unix sockets are not reachable from API tasks")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)
