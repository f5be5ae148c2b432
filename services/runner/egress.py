"""Egress policy for API tasks: addresses a request may never reach (link-local, cloud metadata).

The check runs on the address a socket is about to connect to — after DNS, for literal IPs as well
as names — so a name that resolves to a blocked address (DNS rebinding included) is refused, and
the connection goes to exactly the address that was checked.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any


class EgressDenied(OSError):
    """The destination is an address the policy blocks."""


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

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's hook for making each connection's socket: refuse blocked addresses first."""
        family, kind, proto, _, address = addr_info
        if not self.permits(address[0]):
            raise EgressDenied(f"{address[0]} is blocked by the egress policy")
        return socket.socket(family=family, type=kind, proto=proto)
