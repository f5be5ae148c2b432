"""The sandbox network: internal (no route beyond this host), with the egress proxy as its only exit.

An ``--internal`` bridge still reaches the host itself (its gateway, docker0, the host's own
addresses) through the INPUT chain, which Docker leaves open. So, when it can (root on the host),
the runner drops everything from the bridge to this host except the proxy's port.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from dataclasses import dataclass

from services.runner.sandbox.engine import Engine

log = logging.getLogger(__name__)

LABEL_EGRESS_NETWORK = "org.taskmesh.egress-network"


@dataclass(frozen=True)
class SandboxNetwork:
    """The network's name, its bridge interface on the host, its gateway, and where the proxy listens."""

    name: str
    interface: str
    gateway: str
    listen: str
    internal: bool


async def ensure_network(engine: Engine, name: str, labels: dict[str, str], listen: str | None) -> SandboxNetwork:
    """Create the internal network if missing; join it when this runner is a container."""
    try:
        info = await engine.call("inspect_network", name)
    except Exception as exc:
        if "not found" not in str(exc).lower() and "404" not in str(exc):
            raise
        try:
            await engine.call(
                "create_network",
                name,
                driver="bridge",
                internal=True,
                labels={**labels, LABEL_EGRESS_NETWORK: "1"},
                check_duplicate=True,
            )
        except Exception as create_exc:  # another runner created it meanwhile
            if "already exists" not in str(create_exc):
                raise
        info = await engine.call("inspect_network", name)
    configs = (info.get("IPAM") or {}).get("Config") or []
    gateway = next((c["Gateway"].split("/")[0] for c in configs if c.get("Gateway") and ":" not in c["Gateway"]), "")
    interface = (info.get("Options") or {}).get("com.docker.network.bridge.name") or f"br-{info['Id'][:12]}"
    own = await _own_address(engine, info)
    if not (listen or own or gateway):  # never listen on every address of the host instead
        raise RuntimeError(f"network {name} has no IPv4 gateway for the egress proxy: set TASKMESH_EGRESS_PROXY_HOST")
    return SandboxNetwork(
        name=name,
        interface=interface,
        gateway=gateway,
        listen=listen or own or gateway,
        internal=bool(info.get("Internal")),
    )


async def _own_address(engine: Engine, network: dict[str, object]) -> str | None:
    """This runner's address on the network when it runs in a container (joining it if needed)."""
    try:
        me = await engine.call("inspect_container", socket.gethostname())
    except Exception:
        return None  # not a container of this engine: the runner is on the host
    name = str(network["Name"])
    attached = (me.get("NetworkSettings") or {}).get("Networks") or {}
    if name not in attached:
        await engine.call("connect_container_to_network", me["Id"], name)
        me = await engine.call("inspect_container", me["Id"])
        attached = me["NetworkSettings"]["Networks"]
    return str(attached[name]["IPAddress"]) or None


class HostFirewall:
    """INPUT rules: from the sandbox bridge, only the proxy's port on this host answers."""

    def __init__(self, network: SandboxNetwork, port: int) -> None:
        self.accept = [
            "INPUT",
            "-i",
            network.interface,
            "-d",
            network.listen,
            "-p",
            "tcp",
            "--dport",
            str(port),
            "-j",
            "ACCEPT",
        ]
        self.drop = ["INPUT", "-i", network.interface, "-j", "DROP"]
        self.installed = False

    async def install(self) -> str | None:
        """Add the rules (the accept rule first); the reason when that is not possible."""
        if shutil.which("iptables") is None:
            return "iptables not found"
        if not await _iptables("-C", *self.drop):  # first in INPUT: no earlier ACCEPT may let it through
            error = await _iptables_error("-I", self.drop[0], "1", *self.drop[1:])
            if error:
                return error
        error = await _iptables_error("-I", self.accept[0], "1", *self.accept[1:])
        if error:
            return error
        self.installed = True
        return None

    async def remove(self) -> None:
        """Remove this runner's accept rule; the drop rule stays for the other runners."""
        if self.installed:
            await _iptables("-D", *self.accept)
            self.installed = False


async def _iptables(*args: str) -> bool:
    return await _iptables_error(*args) is None


async def _iptables_error(*args: str) -> str | None:
    try:
        process = await asyncio.create_subprocess_exec(
            "iptables", "-w", "5", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(15):
            _, stderr = await process.communicate()
    except (OSError, TimeoutError) as exc:
        return f"iptables: {exc}"
    return None if process.returncode == 0 else f"iptables: {stderr.decode(errors='replace').strip()[:300]}"
