"""Runner settings (``TASKMESH_*``)."""

from __future__ import annotations

import os
from datetime import timedelta

import msgspec

from services.common.secret_keys import SecretKeys
from services.common.settings import LimitSettings
from services.runner.egress import DEFAULT_DENIED_RANGES, LOOPBACK_RANGES, EgressPolicy

DEFAULT_BLOCKED_RANGES = DEFAULT_DENIED_RANGES
"""Loopback, private, link-local, metadata, CGNAT and ULA: no task reaches them unless allowed."""


def default_code_slots() -> int:
    """Two sandboxes per core: starting containers is CPU-bound on the engine side."""
    return max(2, 2 * (os.cpu_count() or 1))


class RunnerSettings(LimitSettings, kw_only=True, forbid_unknown_fields=True):
    """Slots, sandbox, dependency cache, egress policy and operator limits."""

    code_slots: int = 0
    """Concurrent sandboxed runs; 0 = two per CPU core."""
    api_slots: int = 64
    """Concurrent HTTP runs (I/O bound, so many)."""
    poison_deliveries: int = 4
    """A run delivered this many times without an outcome (runner crashes) is dead-lettered."""
    # output
    log_cap_bytes: int = 1024 * 1024
    result_cap_bytes: int = 512 * 1024
    response_body_cap_bytes: int = 256 * 1024
    # secrets
    secrets_key: list[str] = []
    """Keys that seal and open secret values: base64 of 32 random bytes each, comma-separated; the first
    seals, every one opens (rotation: put the new key first). Gateway and runners need the same keys."""
    secrets_key_file: str | None = None
    """A file of more secrets keys, one per line (`#` comments), after those of `TASKMESH_SECRETS_KEY`."""
    # egress: API tasks in the runner, and sandboxes through the egress proxy
    egress_deny: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_BLOCKED_RANGES))
    """Networks no task may reach (checked on the resolved address, by API tasks and by the sandboxes'
    egress proxy), comma-separated CIDRs. Default: loopback, RFC 1918, CGNAT, link-local and metadata,
    ULA, multicast."""
    egress_allow: list[str] = []
    """Exceptions to `TASKMESH_EGRESS_DENY`, comma-separated CIDRs (e.g. an internal service's subnet)."""
    egress_deny_hosts: list[str] = []
    """Host names no task may reach whatever they resolve to (`example.com`, `*.example.com`)."""
    egress_allow_hosts: list[str] = []
    """Host names any task may reach even when they resolve to a denied network (`*.internal.example`)."""
    egress_allow_loopback: bool = False
    """Allow 127.0.0.0/8 and ::1 (this machine): `taskmesh up` turns it on so local examples work;
    never in a shared deployment."""
    egress_proxy_host: str | None = None
    """Address the sandboxes' egress proxy listens on; default: this runner's address on
    `TASKMESH_SANDBOX_NETWORK` (the network's gateway when the runner runs on the host)."""
    egress_host_firewall: bool = True
    """Drop every packet from the sandbox network to this host except to the egress proxy
    (iptables INPUT rules; needs root on the host, so a runner in a container only warns)."""
    # sandbox (Docker)
    docker_host: str | None = None
    sandbox_image: str = "python:3.12-slim"
    sandbox_network: str = "taskmesh-sandbox"
    """Docker network of sandboxes that may use the network (isolated API tasks, `network: true`);
    created `--internal` when missing: its only way out is the runner's egress proxy."""
    sandbox_pids_limit: int = 128
    sandbox_tmpfs_mb: int = 64
    sandbox_user: str = "65534:65534"
    pool_size: int = 2
    """Started containers kept waiting per hot (image, dependencies) pair."""
    pool_max_idle: timedelta = timedelta(minutes=5)
    pool_max_ready: int = 8
    """Started containers the warm pool keeps waiting, all shapes together (a shape is pooled from its
    second use within `TASKMESH_POOL_MAX_IDLE`; the default shape always)."""
    deps_dir: str = ".taskmesh/deps"
    """Where installed requirement sets live (a path as this runner sees it)."""
    deps_volume: str | None = None
    """When set, the Docker volume that backs ``deps_dir`` (runner in a container): sandboxes mount it."""
    deps_cache_max_bytes: int = 5 * 1024**3
    """Size budget of requirement sets, uv's cache and partial builds together; uv's cache goes first,
    then the least recently used sets."""
    deps_set_max_bytes: int = 2 * 1024**3
    """Largest installed requirement set; a bigger one fails as `dependency_install_failed`."""
    uv_path: str | None = None
    """uv binary copied into dependency builders; default: the one next to this Python, or on PATH."""
    index_url: str | None = None
    """Package index for requirements (uv's default, PyPI, when unset)."""
    find_links: str | None = None
    """A wheelhouse (URL or directory listing of wheels); without ``index_url`` only it is used."""
    ca_bundle: str | None = "/etc/ssl/certs/ca-certificates.crt"
    """CA bundle copied into dependency builders (TLS-intercepting proxies); never disables TLS checks."""
    builder_network: str = "bridge"
    install_timeout_seconds: float = 600.0
    instance: str = "default"
    """Name of this installation; containers are labelled with it so two installations on one
    Docker host never reap each other's sandboxes."""

    def egress_policy(self) -> EgressPolicy:
        """The policy API tasks and the sandboxes' egress proxy apply."""
        allow = [*self.egress_allow, *(LOOPBACK_RANGES if self.egress_allow_loopback else [])]
        return EgressPolicy(
            self.egress_deny, allow, deny_hosts=self.egress_deny_hosts, allow_hosts=self.egress_allow_hosts
        )

    def __post_init__(self) -> None:
        self.secret_keys()  # a malformed secrets key stops the runner at start, not its first run

    def secret_keys(self) -> SecretKeys:
        """The keyring that opens secret values (SecretKeyError, a ValueError, if a key is malformed)."""
        return SecretKeys.configured(self.secrets_key, self.secrets_key_file)

    def effective_code_slots(self) -> int:
        return self.code_slots or default_code_slots()
