"""The requirement-set cache: content addresses and least-recently-used eviction (filesystem only)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from services.runner.sandbox.deps import MARKER, DependencyCache, DepsConfig


def cache(root: Path, max_bytes: int) -> DependencyCache:
    config = DepsConfig(root=str(root), volume=None, image="img", uv_path=None, index_url=None, find_links=None,
                        ca_bundle=None, network="none", timeout_seconds=1, max_bytes=max_bytes, labels={})
    return DependencyCache(engine=None, config=config)  # type: ignore[arg-type]


def make_set(root: Path, name: str, size: int, used_seconds_ago: float) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "payload.bin").write_bytes(b"x" * size)
    marker = directory / MARKER
    marker.write_text("done")
    used = time.time() - used_seconds_ago
    os.utime(marker, (used, used))
    return directory


def test_the_same_requirements_however_spelled_share_one_address(tmp_path: Path) -> None:
    deps = cache(tmp_path, 10**9)
    assert deps.key_for(["numpy==2.2.6", "six"], "sha256:a") == deps.key_for([" six ", "numpy == 2.2.6"], "sha256:a")
    assert deps.key_for(["six"], "sha256:a") != deps.key_for(["six"], "sha256:b")  # another image, another set


def test_eviction_removes_the_least_recently_used_sets_until_the_cache_fits(tmp_path: Path) -> None:
    oldest = make_set(tmp_path, "a" * 32, 4000, used_seconds_ago=7200)
    older = make_set(tmp_path, "b" * 32, 4000, used_seconds_ago=3600)
    recent = make_set(tmp_path, "c" * 32, 4000, used_seconds_ago=1800)
    cache(tmp_path, max_bytes=9000)._evict_if_needed(keep="d" * 32)
    assert not oldest.exists()
    assert older.exists() and recent.exists()


def test_eviction_spares_the_set_just_built_and_sets_in_use(tmp_path: Path) -> None:
    just_built = make_set(tmp_path, "a" * 32, 4000, used_seconds_ago=7200)
    in_use = make_set(tmp_path, "b" * 32, 4000, used_seconds_ago=5)
    cache(tmp_path, max_bytes=1000)._evict_if_needed(keep=just_built.name)
    assert just_built.exists() and in_use.exists()
