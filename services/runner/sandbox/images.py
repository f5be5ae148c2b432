"""Which image sandboxes run: the configured one, pulled if missing, or a local sandbox image."""

from __future__ import annotations

import asyncio
import logging

import docker.errors

from services.runner.sandbox.engine import Engine, EngineUnavailable

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "python:3.12-slim"
SANDBOX_IMAGE_LABELS = ("org.taskmesh.sandbox", "org.taskmesh.recipe")
"""Labels of locally built sandbox images (deploy/sandbox/build.sh, the machine recipe)."""


async def resolve_image(engine: Engine, configured: str) -> tuple[str, str]:
    """(name, image id) to run. The default image falls back to a local sandbox image when it
    cannot be pulled (no registry); an explicitly configured image never silently changes."""
    try:
        return configured, (await engine.call("inspect_image", configured))["Id"]
    except docker.errors.ImageNotFound:
        pass
    try:
        repository, _, tag = configured.partition(":")
        await asyncio.wait_for(engine.call("pull", repository, tag=tag or "latest"), 300)
        return configured, (await engine.call("inspect_image", configured))["Id"]
    except Exception as exc:
        if configured == DEFAULT_IMAGE:
            for label in SANDBOX_IMAGE_LABELS:
                images = await engine.call("images", filters={"label": label})
                tagged = [i for i in images if i.get("RepoTags")]
                if tagged:
                    newest = max(tagged, key=lambda i: i.get("Created", 0))
                    log.info("no %s (no registry?); using local sandbox image %s", DEFAULT_IMAGE, newest["RepoTags"][0])
                    return newest["RepoTags"][0], newest["Id"]
        raise EngineUnavailable(
            f"sandbox image {configured} not found and could not be pulled ({type(exc).__name__}); "
            "build one (deploy/sandbox/build.sh) or set TASKMESH_SANDBOX_IMAGE"
        ) from exc


async def still_resolves(engine: Engine, name: str, image_id: str) -> bool:
    """Whether ``name`` is still the image ``image_id`` (a local inspect, no registry traffic).

    The periodic check keeps its resolved image while this holds, so a machine without a registry
    is not asked to pull every few seconds.
    """
    try:
        return bool(image_id) and (await engine.call("inspect_image", name))["Id"] == image_id
    except docker.errors.ImageNotFound:
        return False
