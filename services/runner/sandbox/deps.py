"""Task requirements: installed once per (requirement set, image) into a content-addressed
directory by a throw-away builder container with network, then mounted read-only into runs.

The run itself stays offline. Sets are built once even when several runs (or runners on the same
Docker host) need a new set at the same moment: an asyncio lock per set, and a file lock for
other processes. A sandbox mounts its own set's directory and nothing else of the cache: never
another task's set, uv's cache or a partial build. One size budget covers sets, uv's cache and
abandoned partial builds (uv's cache goes first, then the least recently used sets); a set larger
than its own limit is refused.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import io
import logging
import os
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from proto.tasks import normalise_requirements
from services.runner.sandbox.engine import Engine

log = logging.getLogger(__name__)

MARKER = ".taskmesh-complete"
UV_CACHE = ".uv-cache"
BUILDER_UV = "/opt/taskmesh/uv"
BUILDER_CA = "/opt/taskmesh/ca-certificates.crt"
IN_USE_GRACE_SECONDS = 600


class DependencyInstallFailed(Exception):
    """The installer rejected the requirements; the message is the installer's own."""


@dataclass(frozen=True)
class DepsSet:
    """An installed requirement set, and how a sandbox mounts it."""

    key: str
    host_path: str
    path_in_sandbox: str
    cache_hit: bool
    install_ms: float


@dataclass(frozen=True)
class DepsConfig:
    """Where sets live and how builders reach the package index."""

    root: str
    volume: str | None
    image: str
    uv_path: str | None
    index_url: str | None
    find_links: str | None
    ca_bundle: str | None
    network: str
    timeout_seconds: float
    max_bytes: int
    labels: dict[str, str]
    set_max_bytes: int = 2 * 1024**3


def find_uv(configured: str | None) -> str | None:
    """The uv binary to copy into builders."""
    if configured:
        return configured
    beside = Path(sys.executable).with_name("uv")
    if beside.exists():
        return str(beside)
    return shutil.which("uv")


class DependencyCache:
    """Builds and hands out requirement sets."""

    def __init__(self, engine: Engine, config: DepsConfig) -> None:
        self.engine = engine
        self.config = config
        self.root = Path(config.root).absolute()
        self._locks: dict[str, asyncio.Lock] = {}
        self._host_root: str | None = None
        self.installs = 0
        self.hits = 0

    def key_for(self, requirements: list[str], image_id: str) -> str:
        """Content address of a set: the normalised requirements, the image, the index."""
        text = "\n".join(
            [image_id, self.config.index_url or "", self.config.find_links or "", *normalise_requirements(requirements)]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    async def host_path(self, key: str) -> str:
        """Where the engine finds set ``key``: under the volume's mountpoint when sets live in a
        volume (Docker API 1.41 has no volume-subpath mount, so a sandbox binds that directory)."""
        if not self.config.volume:
            return str(self.root / key)
        if self._host_root is None:
            volume = await self.engine.call("inspect_volume", self.config.volume)
            self._host_root = str(volume["Mountpoint"])
        return f"{self._host_root}/{key}"

    async def _found(self, key: str, cache_hit: bool, install_ms: float) -> DepsSet:
        return DepsSet(key, await self.host_path(key), "/deps", cache_hit, install_ms)

    async def ensure(self, requirements: list[str], image_id: str) -> DepsSet:
        """The installed set for ``requirements``, building it first if needed."""
        key = self.key_for(requirements, image_id)
        directory = self.root / key
        if (directory / MARKER).exists():
            self.hits += 1
            _touch(directory / MARKER)
            return await self._found(key, True, 0.0)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                if (directory / MARKER).exists():
                    self.hits += 1
                    return await self._found(key, True, 0.0)
                started = time.perf_counter()
                await asyncio.get_running_loop().run_in_executor(None, self.root.mkdir, 0o755, True, True)
                with open(self.root / f"{key}.lock", "w") as lock_file:  # noqa: ASYNC230 - a local lock file; the wait is below
                    await asyncio.get_running_loop().run_in_executor(None, fcntl.flock, lock_file, fcntl.LOCK_EX)
                    try:
                        if not (directory / MARKER).exists():  # another runner may have built it meanwhile
                            await self._build(key, normalise_requirements(requirements))
                            self.installs += 1
                    finally:
                        fcntl.flock(lock_file, fcntl.LOCK_UN)
        finally:
            # also after a failed build: it may have filled uv's cache, and a lock left behind
            # here would keep uv's cache from ever being cleared ("a build of ours is running")
            self._locks.pop(key, None)
            asyncio.get_running_loop().run_in_executor(None, self._evict_if_needed, key)
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        log.info("requirements installed", extra={"set": key, "requirements": len(requirements), "ms": elapsed})
        return await self._found(key, False, elapsed)

    async def _build(self, key: str, requirements: list[str]) -> None:
        uv = find_uv(self.config.uv_path)
        if uv is None:
            raise DependencyInstallFailed("no uv binary to install requirements with (set TASKMESH_UV_PATH)")
        partial = f"{key}.partial-{os.getpid()}-{int(time.time() * 1000)}"
        target_in_builder = f"/deps-root/{partial}"
        environment = {
            "HOME": "/tmp",
            "UV_CACHE_DIR": f"/deps-root/{UV_CACHE}",
            "UV_NO_PROGRESS": "1",
            "UV_PYTHON_DOWNLOADS": "never",
        }
        if self.config.index_url:
            environment["UV_INDEX_URL"] = self.config.index_url
        if self.config.find_links:
            environment["UV_FIND_LINKS"] = self.config.find_links
            if not self.config.index_url:
                environment["UV_NO_INDEX"] = "1"
        binds: dict[str, dict[str, str]] = {}
        if self.config.volume:
            binds[self.config.volume] = {"bind": "/deps-root", "mode": "rw"}
        else:
            binds[str(self.root)] = {"bind": "/deps-root", "mode": "rw"}
        ca_bundle = self.config.ca_bundle if self.config.ca_bundle and os.path.exists(self.config.ca_bundle) else None  # noqa: ASYNC240 - one local stat
        if ca_bundle:
            environment["SSL_CERT_FILE"] = BUILDER_CA
        # Requirements were validated (names and version clauses only, never options) and are
        # passed as separate argv items after "--": no shell, no interpolation.
        command = [
            BUILDER_UV,
            "pip",
            "install",
            "--target",
            target_in_builder,
            "--python",
            "python3",
            "--only-binary",
            ":all:",
            "--compile-bytecode",
            "--quiet",
            "--",
            *requirements,
        ]
        host_config = await self.engine.host_config(
            binds=binds,
            network_mode=self.config.network,
            init=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit="1g",
            pids_limit=256,
        )
        created = await self.engine.call(
            "create_container",
            self.config.image,
            command=command,
            environment=environment,
            user=f"{os.getuid()}:{os.getgid()}",
            working_dir="/tmp",
            host_config=host_config,
            labels={**self.config.labels, "org.taskmesh.role": "builder"},
        )
        container = created["Id"]
        try:
            # Copied in, not bind-mounted: bind sources are resolved on the engine's host, which is
            # not this runner's filesystem when the runner itself runs in a container.
            archive = await asyncio.get_running_loop().run_in_executor(None, _tools_archive, uv, ca_bundle)
            await self.engine.call("put_archive", container, "/", archive)
            await self.engine.call("start", container)
            try:
                status = await asyncio.wait_for(self.engine.call("wait", container), self.config.timeout_seconds)
            except TimeoutError:
                raise DependencyInstallFailed(
                    f"installing {', '.join(requirements)} took longer than {self.config.timeout_seconds:g} s"
                ) from None
            if status.get("StatusCode", 1) != 0:
                logs = await self.engine.call("logs", container, stdout=True, stderr=True)
                raise DependencyInstallFailed(_installer_message(logs.decode("utf-8", "replace")))
            size = await asyncio.get_running_loop().run_in_executor(None, _size, self.root / partial)
            if size > self.config.set_max_bytes:
                raise DependencyInstallFailed(
                    f"the installed requirements take {size / 1024**2:.0f} MB, more than the "
                    f"{self.config.set_max_bytes / 1024**2:.0f} MB a requirement set may (TASKMESH_DEPS_SET_MAX_BYTES)"
                )
            await asyncio.get_running_loop().run_in_executor(None, self._complete, partial, key)
        finally:
            await self.engine.remove(container)
            await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, str(self.root / partial), True)

    def _complete(self, partial: str, key: str) -> None:
        source, target = self.root / partial, self.root / key
        (source / MARKER).write_text(str(time.time()))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        source.rename(target)

    def _evict_if_needed(self, keep: str) -> None:
        """Remove abandoned partial builds, then uv's cache, then least recently used sets, until
        everything fits the budget."""
        now = time.time()
        try:
            entries = [p for p in self.root.iterdir() if p.is_dir()]
        except OSError:
            return
        for path in entries:  # a partial older than any install may be is a crashed build's
            if ".partial-" in path.name and now - path.stat().st_mtime > self.config.timeout_seconds + 60:
                shutil.rmtree(path, ignore_errors=True)
                log.info("partial build removed", extra={"path": path.name})
        sets = [(p, (p / MARKER).stat().st_mtime, _size(p)) for p in entries if (p / MARKER).exists()]
        others = sum(_size(p) for p in entries if p.exists() and not (p / MARKER).exists())
        total = sum(size for _, _, size in sets) + others
        cache = self.root / UV_CACHE
        if total > self.config.max_bytes and cache.exists() and not self._locks:  # not under a build of ours
            cache_size = _size(cache)
            shutil.rmtree(cache, ignore_errors=True)
            total -= cache_size
            log.info("uv cache cleared", extra={"bytes": cache_size})
        for path, used_at, size in sorted(sets, key=lambda s: s[1]):
            if total <= self.config.max_bytes:
                break
            if path.name == keep or now - used_at < IN_USE_GRACE_SECONDS:
                continue
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            log.info("requirement set evicted", extra={"set": path.name, "bytes": size})


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _size(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


def _tools_archive(uv: str, ca_bundle: str | None) -> bytes:
    """A tar of uv (and the CA bundle) for ``put_archive`` into a builder container."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for source, target, mode in ((uv, BUILDER_UV, 0o755), (ca_bundle, BUILDER_CA, 0o644)):
            if source is None:
                continue
            source = os.path.realpath(source)  # a symlink would be archived as a link the builder lacks
            info = archive.gettarinfo(source, arcname=target.lstrip("/"))
            info.mode = mode
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(source, "rb") as handle:
                archive.addfile(info, handle)
    return buffer.getvalue()


def _installer_message(logs: str) -> str:
    lines = [line.strip() for line in logs.strip().splitlines() if line.strip()]
    interesting = [line for line in lines if not line.startswith(("Resolved", "Prepared", "Installed", "Audited"))]
    text = " ".join((interesting or lines)[-12:])
    return text[:2000] or "the installer failed without a message"
