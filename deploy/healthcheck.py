"""Container health check: ``python /opt/taskmesh/healthcheck.py <nats|nats-cluster|gateway|store|scheduler|runner>``.

Exit 0 when healthy, 1 otherwise (Docker's contract). Healthy means:
- nats:    the monitoring endpoint says JetStream is up;
- nats-cluster: that, and the cluster has a meta leader (the JetStream API answers);
- gateway: ``/api/health`` answers 200 (ok or degraded; 503 means NATS or the store is down);
- others:  this container's own instance was heard on ``taskmesh.heartbeat.<service>.*`` just now.
  Services heartbeat only once ready (streams there, sandboxes checked), so a healthy runner
  is one that works, not merely a process that runs. A store or scheduler heartbeats from when
  it stands by, ready to lead; `/api/health` tells which one leads.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.common.settings import ServiceSettings

TIMEOUT_SECONDS = 4.0
CONNECT_TIMEOUT_SECONDS = 1.5
"""Per NATS URL: a node that is down must leave time to try the others."""


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return response.status == 200
    except OSError:
        return False


def heard(service: str) -> bool:
    """True once a heartbeat of ``service`` sent from this container (same hostname) arrives.

    Tries every URL of ``TASKMESH_NATS_URL`` in turn until one accepts the connection (in a
    cluster any node carries every heartbeat). Speaks the NATS text protocol over a socket (TLS
    when the server asks for it): importing nats-py costs ~0.27 s of CPU, too much for a check
    every few seconds in every container; this costs ~0.05 s.
    """
    from services.common.settings import ServiceSettings, load_settings

    settings = load_settings(ServiceSettings)
    refused = []
    for raw in settings.nats_url.split(","):
        url = urllib.parse.urlsplit(raw.strip())
        try:
            sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 4222), CONNECT_TIMEOUT_SECONDS)
        except OSError as exc:  # this node is down: the next one will do
            refused.append(f"{url.netloc}: {exc}")
            continue
        return _listen(sock, url, service, settings)
    raise ConnectionError("no NATS URL answers (" + "; ".join(refused) + ")")


def _listen(sock: socket.socket, url: urllib.parse.SplitResult, service: str, settings: ServiceSettings) -> bool:
    """Subscribe to the service's heartbeats on an open connection; True when ours arrives."""
    me = socket.gethostname()
    deadline = time.monotonic() + TIMEOUT_SECONDS + settings.heartbeat_interval.total_seconds()
    connect = {
        "verbose": False,
        "pedantic": False,
        "name": "taskmesh-healthcheck",
        "lang": "python",
        "version": "0",
        "protocol": 1,
        "user": settings.nats_user,
        "pass": settings.nats_password,
        "auth_token": settings.nats_token,
    }
    try:
        info = sock.recv(65536)  # the server speaks first: INFO {...}
        if url.scheme == "tls" or b'"tls_required":true' in info:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=url.hostname)
        sock.sendall(
            b"CONNECT "
            + json.dumps({k: v for k, v in connect.items() if v is not None}).encode()
            + f"\r\nSUB taskmesh.heartbeat.{service}.* 1\r\nPING\r\n".encode()
        )
        buffer = b""
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return False
            if not chunk:
                raise ConnectionError("NATS closed the connection")
            buffer += chunk
            while b"\r\n" in buffer:
                line, rest = buffer.split(b"\r\n", 1)
                if line.startswith(b"MSG "):  # MSG <subject> <sid> [reply] <bytes>
                    size = int(line.split()[-1])
                    if len(rest) < size + 2:
                        break  # the payload is not all here yet
                    payload, buffer = rest[:size], rest[size + 2 :]
                    try:
                        if json.loads(payload).get("host") == me:
                            return True
                    except ValueError:
                        pass
                    continue
                buffer = rest
                if line.startswith(b"-ERR"):
                    raise ConnectionError(line.decode(errors="replace"))
                if line == b"PING":
                    sock.sendall(b"PONG\r\n")
        return False
    finally:
        sock.close()


def main(service: str) -> bool:
    if service == "nats":
        return http_ok("http://127.0.0.1:8222/healthz?js-enabled-only=true")
    if service == "nats-cluster":  # a node with JetStream up and a meta leader elected
        return http_ok("http://127.0.0.1:8222/healthz?js-meta-only=true")
    if service == "gateway":
        from services.common.settings import load_settings
        from services.gateway.settings import GatewaySettings

        return http_ok(f"http://127.0.0.1:{load_settings(GatewaySettings).http_port}/api/health")
    try:
        return heard(service)
    except Exception as exc:  # NATS unreachable, bad credentials: unhealthy, and say why
        print(f"{service}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("nats", "nats-cluster", "gateway", "store", "scheduler", "runner"):
        raise SystemExit("usage: healthcheck.py <nats|nats-cluster|gateway|store|scheduler|runner>")
    raise SystemExit(0 if main(sys.argv[1]) else 1)
