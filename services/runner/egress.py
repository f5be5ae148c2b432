"""Egress policy for API tasks and sandboxes: which addresses and host names a request may reach.

The check runs on the address a socket is about to connect to — after DNS, for literal IPs as well
as names — so a name that resolves to a blocked address (DNS rebinding included) is refused, and
the connection goes to exactly the address that was checked. Sandboxes get the same policy through
the runner's egress proxy (``services/runner/sandbox/egress_proxy.py``).
"""

from __future__ import annotations

import contextvars
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

DEFAULT_DENIED_RANGES = [
    "0.0.0.0/8",
    "127.0.0.0/8",
    "::1/128",
    "::/128",  # "this host" and loopback
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",  # RFC 1918 private networks
    "100.64.0.0/10",  # carrier-grade NAT (and Alibaba's metadata)
    "169.254.0.0/16",
    "fe80::/10",  # link-local (AWS, GCP, Azure metadata)
    "fc00::/7",  # unique local (AWS's fd00:ec2::254 metadata)
    "224.0.0.0/4",
    "240.0.0.0/4",
    "ff00::/8",  # multicast, reserved, broadcast
]
"""What no task reaches unless the operator allows it: this host, private networks, metadata."""

LOOPBACK_RANGES = ["127.0.0.0/8", "::1/128"]
"""Allowed on top of the operator's list when ``TASKMESH_EGRESS_ALLOW_LOOPBACK`` is on (local mode)."""

_allowed_for_request: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "allowed_for_request", default=frozenset()
)


class EgressDenied(OSError):
    """The destination is an address or host name the policy blocks."""


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _host_matches(host: str, patterns: list[str]) -> bool:
    """``example.com`` matches itself; ``*.example.com`` matches its subdomains."""
    host = host.lower().rstrip(".")
    return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns)


class EgressPolicy:
    """Deny ranges and host names, with allow ranges and host names that take precedence (an
    operator's exceptions); a denied host name is denied whatever its address."""

    def __init__(
        self,
        deny: Iterable[str],
        allow: Iterable[str] = (),
        *,
        deny_hosts: Iterable[str] = (),
        allow_hosts: Iterable[str] = (),
    ) -> None:
        self.deny = [ipaddress.ip_network(n, strict=False) for n in deny]
        self.allow = [ipaddress.ip_network(n, strict=False) for n in allow]
        self.deny_hosts = [h.lower().rstrip(".") for h in deny_hosts if h]
        self.allow_hosts = [h.lower().rstrip(".") for h in allow_hosts if h]

    def explicitly_allowed(self, address: str) -> bool:
        """Whether ``address`` is in an allow range (the operator's exception, or loopback in local mode)."""
        ip = _ip(address)
        return any(ip in n for n in self.allow)

    def permits(self, address: str) -> bool:
        """Whether a connection to ``address`` (an IP) is allowed, by address alone."""
        ip = _ip(address)
        if any(ip in n for n in self.allow):
            return True
        return not any(ip in n for n in self.deny)

    def allowed_by_name(self, host: str) -> bool:
        """Whether the operator allowed ``host`` by name (whatever it resolves to)."""
        return bool(host) and not _host_matches(host, self.deny_hosts) and _host_matches(host, self.allow_hosts)

    def refusal(self, host: str, address: str) -> str | None:
        """Why a connection to ``host`` at ``address`` is refused, or None when it is allowed."""
        if host and _host_matches(host, self.deny_hosts):
            return f"{host} is a host name the egress policy blocks"
        if host and _host_matches(host, self.allow_hosts):
            return None
        if self.permits(address):
            return None
        if host and host.strip("[]") != address:
            return f"{host} resolves to {address}, which the egress policy blocks"
        return f"{address} is blocked by the egress policy"

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's hook for making each connection's socket: refuse blocked addresses first."""
        family, kind, proto, _, address = addr_info
        if address[0] not in _allowed_for_request.get() and not self.permits(address[0]):
            raise EgressDenied(f"{address[0]} is blocked by the egress policy")
        return socket.socket(family=family, type=kind, proto=proto)


def allow_for_this_request(addresses: Iterable[str]) -> contextvars.Token[frozenset[str]]:
    """Let the current task's sockets reach ``addresses`` (a host allowed by name resolved to them)."""
    return _allowed_for_request.set(frozenset(addresses))


def reset_request_allowance(token: contextvars.Token[frozenset[str]]) -> None:
    """Undo ``allow_for_this_request``."""
    _allowed_for_request.reset(token)
