"""Which image sandboxes run, against the real engine (local images only: nothing is pulled)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from services.runner.sandbox.engine import Engine
from services.runner.sandbox.images import resolve_image, still_resolves


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    running = Engine(os.environ.get("DOCKER_HOST"), threads=2)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def local_tag() -> Iterator[str]:
    """A tag of the sandbox image that only this test uses (removed afterwards)."""
    source = os.environ.get("TASKMESH_SANDBOX_IMAGE", "taskmesh-sandbox:py311-r1")
    tag = f"taskmesh-test-image:{secrets.token_hex(4)}"
    subprocess.run(["docker", "tag", source, tag], check=True, capture_output=True, timeout=60)
    try:
        yield tag
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True, timeout=60)


async def test_a_configured_local_image_is_used_as_it_is(engine: Engine, local_tag: str) -> None:
    name, image_id = await resolve_image(engine, local_tag)
    assert name == local_tag
    assert image_id.startswith("sha256:")


async def test_the_resolved_image_is_kept_only_while_its_name_still_means_it(engine: Engine, local_tag: str) -> None:
    _, image_id = await resolve_image(engine, local_tag)
    assert await still_resolves(engine, local_tag, image_id)
    assert not await still_resolves(engine, local_tag, "sha256:" + "0" * 64)  # rebuilt under the same tag
    assert not await still_resolves(engine, local_tag, "")  # never resolved
    subprocess.run(["docker", "rmi", local_tag], check=True, capture_output=True, timeout=60)
    assert not await still_resolves(engine, local_tag, image_id)  # removed
