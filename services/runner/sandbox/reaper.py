"""Orphan containers: labelled with their installation and runner; a runner that no longer answers
its ping has left them behind, and any other runner of the installation on that host removes them."""

from __future__ import annotations

import logging

from nats.aio.client import Client

from services.runner import pings
from services.runner.sandbox.engine import Engine

log = logging.getLogger(__name__)

LABEL_MANAGED = "org.taskmesh.managed"
LABEL_INSTANCE = "org.taskmesh.instance"
LABEL_RUNNER = "org.taskmesh.runner"
LABEL_RUN = "org.taskmesh.run"


async def reap_orphans(engine: Engine, nc: Client, instance: str, runner_id: str) -> int:
    """Remove this installation's containers whose runner is gone; returns how many."""
    try:
        containers = await engine.call(
            "containers", all=True, filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={instance}"]}
        )
    except Exception as exc:
        log.warning("orphan scan failed: %s", exc)
        return 0
    owners: dict[str, list[str]] = {}
    for container in containers:
        owner = container.get("Labels", {}).get(LABEL_RUNNER, "")
        if owner != runner_id:
            owners.setdefault(owner, []).append(container["Id"])
    reaped = 0
    for owner, ids in owners.items():
        if await _alive(nc, owner):
            continue
        for container_id in ids:
            try:
                await engine.remove(container_id)
                reaped += 1
            except Exception as exc:
                log.warning("orphan %s not removed: %s", container_id[:12], exc)
    if reaped:
        log.info("reaped orphan containers", extra={"count": reaped, "runners": len(owners)})
    return reaped


async def _alive(nc: Client, runner_id: str) -> bool:
    """Unsure (a timeout, an impostor's answer) counts as alive: its containers stay."""
    return bool(runner_id) and await pings.ask(nc, runner_id) != "gone"
