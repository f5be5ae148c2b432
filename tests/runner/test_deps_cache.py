"""The requirement-set cache: content addresses and least-recently-used eviction (filesystem only)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from services.runner.sandbox.deps import MARKER, UV_CACHE, DependencyCache, DepsConfig


def cache(root: Path, max_bytes: int) -> DependencyCache:
    config = DepsConfig(
        root=str(root),
        volume=None,
        image="img",
        uv_path=None,
        index_url=None,
        find_links=None,
        ca_bundle=None,
        network="none",
        timeout_seconds=1,
        max_bytes=max_bytes,
        labels={},
    )
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


def make_dir(root: Path, name: str, size: int, modified_seconds_ago: float = 0) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "payload.bin").write_bytes(b"x" * size)
    modified = time.time() - modified_seconds_ago
    os.utime(directory, (modified, modified))
    return directory


def test_the_budget_counts_uvs_cache_and_clears_it_before_evicting_any_set(tmp_path: Path) -> None:
    kept = make_set(tmp_path, "a" * 32, 4000, used_seconds_ago=7200)
    uv_cache = make_dir(tmp_path, UV_CACHE, 8000)
    cache(tmp_path, max_bytes=9000)._evict_if_needed(keep="d" * 32)
    assert not uv_cache.exists()
    assert kept.exists()


def test_an_abandoned_partial_build_is_removed_and_a_fresh_one_is_left_alone(tmp_path: Path) -> None:
    abandoned = make_dir(tmp_path, f"{'a' * 32}.partial-1-1", 10, modified_seconds_ago=3600)
    fresh = make_dir(tmp_path, f"{'b' * 32}.partial-2-2", 10)
    cache(tmp_path, max_bytes=10**9)._evict_if_needed(keep="d" * 32)
    assert not abandoned.exists()
    assert fresh.exists()


def test_a_partial_build_counts_against_the_budget(tmp_path: Path) -> None:
    oldest = make_set(tmp_path, "a" * 32, 4000, used_seconds_ago=7200)
    make_dir(tmp_path, f"{'b' * 32}.partial-2-2", 8000)
    cache(tmp_path, max_bytes=9000)._evict_if_needed(keep="d" * 32)
    assert not oldest.exists()


async def test_a_set_in_a_volume_is_mounted_from_the_volumes_own_directory_on_the_host(tmp_path: Path) -> None:
    class Engine:
        async def call(self, method: str, *args: object) -> dict[str, str]:
            assert (method, args) == ("inspect_volume", ("taskmesh-deps",))
            return {"Mountpoint": "/var/lib/docker/volumes/taskmesh-deps/_data"}

    config = DepsConfig(
        root=str(tmp_path),
        volume="taskmesh-deps",
        image="img",
        uv_path=None,
        index_url=None,
        find_links=None,
        ca_bundle=None,
        network="none",
        timeout_seconds=1,
        max_bytes=10**9,
        labels={},
    )
    deps = DependencyCache(engine=Engine(), config=config)  # type: ignore[arg-type]
    assert await deps.host_path("k" * 32) == f"/var/lib/docker/volumes/taskmesh-deps/_data/{'k' * 32}"
