"""``python -m services.common.config_doc``: print docs/configuration.md from the Settings Structs.

One row per ``TASKMESH_*`` variable: its default, its meaning (the field's docstring in the
settings module, else ``MEANINGS`` below) and the services that read it. A test compares the
file with this output, so the table cannot drift from the code.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from datetime import timedelta

import msgspec

from services.common.settings import ServiceSettings, env_name
from services.gateway.settings import GatewaySettings
from services.runner.settings import RunnerSettings
from services.scheduler.settings import SchedulerSettings
from services.store.settings import StoreSettings

SETTINGS: dict[str, type[ServiceSettings]] = {
    "gateway": GatewaySettings,
    "scheduler": SchedulerSettings,
    "store": StoreSettings,
    "runner": RunnerSettings,
}
"""Each service and the Struct its ``__main__`` loads."""

MEANINGS: dict[str, str] = {
    # every service
    "nats_url": "NATS server URL; several, comma-separated, for a cluster.",
    "nats_user": (
        "NATS user name (compose: one user per service, see deploy/nats/); a service reads replies only "
        "under its own inbox prefix, `_INBOX.<service>.` (gateway, store, scheduler, runner)."
    ),
    "nats_password": "Password of `TASKMESH_NATS_USER`.",
    "nats_token": "NATS token, instead of user and password.",
    "log_level": "DEBUG, INFO, WARNING or ERROR.",
    "log_format": "`json`, `text`, or `auto` (JSON unless stderr is a terminal).",
    "js_replicas": "Replicas of each stream and bucket a service creates (3 on a 3-node NATS cluster).",
    "shutdown_grace": "After SIGTERM, how long in-flight work may finish before it is cancelled (runners hand runs back).",
    "heartbeat_interval": "How often each instance publishes its heartbeat (presence, health, orphan reaping).",
    # gateway
    "http_host": "Address the HTTP API listens on (`0.0.0.0` in a container).",
    "http_port": "Port of the HTTP API.",
    "max_body_bytes": "Largest accepted request body.",
    "store_timeout_seconds": "How long the gateway waits for the store's reply before answering 503.",
    "max_wait_seconds": "Largest `?wait=` a request may ask for.",
    # scheduler
    "fire_concurrency": "Fires published concurrently by the leader.",
    # store
    "task_retention": "Finished one-shot tasks older than this are deleted with their runs and logs.",
    "retention_sweep_interval": "How often the store looks for tasks past `TASKMESH_TASK_RETENTION`.",
    "run_history_limit": "Runs kept per task (the oldest finished ones are dropped).",
    "max_concurrent_requests": "Requests the store handles at once; more wait.",
    # operator limits (store checks submissions, the runner enforces them)
    "code_timeout_seconds": "Default timeout of a code task.",
    "api_timeout_seconds": "Default timeout of an API task.",
    "max_timeout_seconds": "Largest `timeout` a task may ask for.",
    "sandbox_memory_mb": "Default memory limit of a sandbox.",
    "max_memory_mb": "Largest `memory_mb` a task may ask for.",
    "sandbox_cpus": "Default CPU limit of a sandbox.",
    "max_cpus": "Largest `cpus` a task may ask for.",
    "allow_sandbox_network": "Whether a task may ask for `network: true` (its sandbox is then on `TASKMESH_SANDBOX_NETWORK`).",
    # runner
    "log_cap_bytes": "Output kept per run attempt; the rest is cut (runner) and never stored (store).",
    "result_cap_bytes": "Largest return value of a code task, as JSON.",
    "response_body_cap_bytes": "Response body kept as an API task's result.",
    "docker_host": "Docker engine to start sandboxes on (default: `DOCKER_HOST`, else the local socket).",
    "sandbox_image": "Image of code sandboxes; when it is the default and cannot be pulled, a local image labelled `org.taskmesh.sandbox` is used.",
    "sandbox_pids_limit": "Processes a sandbox may run.",
    "sandbox_tmpfs_mb": "Size of a sandbox's writable /tmp (the rest of its filesystem is read-only).",
    "sandbox_user": "User (uid:gid) sandboxes run as.",
    "pool_max_idle": "A warm container unused this long is replaced.",
    "builder_network": "Docker network of the containers that install requirements (they need the index).",
    "install_timeout_seconds": "Longest a requirement install may take.",
}
"""Meanings of fields that have no docstring in their settings module."""

NOTES = """\
Formats: durations are seconds (`2.5`) or ISO 8601 (`PT30S`); lists are comma-separated; booleans
are `true`/`false`; an empty value unsets an optional setting. A service ignores variables it does
not read.

compose.yaml sets the NATS user and password of each service, `TASKMESH_HTTP_HOST`,
`TASKMESH_API_TOKENS`, `TASKMESH_DEPS_DIR`, `TASKMESH_DEPS_VOLUME`, `TASKMESH_SANDBOX_NETWORK`, `TASKMESH_INSTANCE` and
`TASKMESH_BUILDER_NETWORK` itself; the variables compose.yaml reads (passwords, image names, the
published port) are listed at its top and in deploy/README.md.

Outside the services: `taskmesh up` reads `TASKMESH_DATA_DIR` (default `.taskmesh`); the
nats-server it starts (and compose's) runs with Go's soft memory limit
`TASKMESH_NATS_MEMORY_LIMIT` (e.g. `96MiB`; unset by default: it halves nats-server's memory after a burst but doubles its CPU under load); the `taskmesh` command reads
`TASKMESH_URL` (default `http://127.0.0.1:5001`) and `TASKMESH_TOKEN`.
"""


def field_docstrings(kind: type) -> dict[str, str]:
    """``name: type = default`` followed by a string literal: that literal, per field, for the
    class and its Taskmesh bases (msgspec keeps no docstrings of fields at run time)."""
    found: dict[str, str] = {}
    for cls in reversed(kind.__mro__):
        if not cls.__module__.startswith("services."):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body  # type: ignore[attr-defined]  # a class's source parses to one ClassDef
        for node, following in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                found[node.target.id] = " ".join(following.value.value.split())
    return found


def default_text(field: msgspec.structs.FieldInfo) -> str:
    """The default as it would be written in the environment."""
    value = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, timedelta):
        return f"`{value.total_seconds():g}` (s)"
    if isinstance(value, list):
        return f"`{','.join(value)}`" if value else "(empty)"
    if value == "":
        return "(empty)"
    return f"`{value}`"


def rows() -> list[tuple[str, str, str, str]]:
    """(variable, default, meaning, services) for every setting, common ones first."""
    readers: dict[str, list[str]] = {}
    fields: dict[str, msgspec.structs.FieldInfo] = {}
    docstrings: dict[str, str] = {}
    for service, kind in SETTINGS.items():
        docstrings = {**field_docstrings(kind), **docstrings}
        for field in msgspec.structs.fields(kind):
            readers.setdefault(field.name, []).append(service)
            fields.setdefault(field.name, field)
    common = [f.name for f in msgspec.structs.fields(ServiceSettings)]
    order = common + [name for name in fields if name not in common]
    table = []
    for name in order:
        meaning = docstrings.get(name) or MEANINGS.get(name)
        if not meaning:
            raise LookupError(
                f"setting {name!r} has no meaning: give it a docstring (a string on the line "
                "after the field) or an entry in services/common/config_doc.py MEANINGS"
            )
        services = "all" if len(readers[name]) == len(SETTINGS) else ", ".join(readers[name])
        table.append((f"`{env_name(name)}`", default_text(fields[name]), meaning, services))
    return table


def render() -> str:
    """The whole of docs/configuration.md."""
    lines = [
        "# Configuration",
        "",
        "Every service reads its settings once, at start, from `TASKMESH_<SETTING>` environment",
        "variables (`services/*/settings.py`). This file is generated by",
        "`python -m services.common.config_doc > docs/configuration.md`; a test keeps it current.",
        "",
        "| variable | default | meaning | read by |",
        "|---|---|---|---|",
    ]
    for variable, default, meaning, services in rows():
        cell = meaning.replace("|", "\\|")  # a pipe would end the cell
        lines.append(f"| {variable} | {default} | {cell} | {services} |")
    return "\n".join([*lines, "", NOTES])


if __name__ == "__main__":
    print(render(), end="")
