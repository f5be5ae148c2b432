"""What a user submits (``TaskSpec``), how it is checked, and the task record they read back."""

from __future__ import annotations

import ast
import keyword
import re
from datetime import datetime
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct

from proto import bounds, cron, rates, secrets
from proto.bounds import Duration, PositiveDuration, RetryDelay
from proto.errors import FieldError

TaskType = Literal["immediate", "delayed", "scheduled"]
TaskKind = Literal["code", "api"]
HttpMethod = Literal["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
OverlapPolicy = Literal["allow", "forbid", "replace"]
MisfirePolicy = Literal["run_once", "skip", "run_all"]

TaskStatus = Literal[
    "pending",
    "queued",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "expired",
    "active",
    "paused",
    "completed",
]
"""One-shot tasks: pending → queued → running → succeeded | failed | timed_out | cancelled | expired
(``retrying`` between attempts). Scheduled tasks: active | paused, then completed or cancelled."""

FINAL_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled", "expired", "completed"})
"""A task in one of these states changes no more."""

Name = Annotated[str, Meta(max_length=bounds.MAX_NAME_CHARS)]
Requirement = Annotated[str, Meta(max_length=bounds.MAX_REQUIREMENT_CHARS)]
HeaderName = Annotated[str, Meta(max_length=bounds.MAX_HEADER_NAME_CHARS)]
HeaderValue = Annotated[str, Meta(max_length=bounds.MAX_HEADER_VALUE_CHARS)]
StatusCode = Annotated[int, Meta(ge=100, le=599)]
HostPattern = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=bounds.MAX_HOST_CHARS,
        description="A host name (example.com, matched exactly, any case) or *.example.com (its subdomains).",
    ),
]


class TaskSpec(Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A task as submitted: the JSON body of ``POST /api/tasks`` and of ``SUBMIT_TASK``.

    A code task has ``function_code`` + ``function_name``; an API task has ``api_url``.
    Field names of the original system (the seeds) are kept as they were.
    """

    name: Annotated[str, Meta(min_length=1, max_length=bounds.MAX_NAME_CHARS)]
    task_type: TaskType
    # code tasks
    function_code: Annotated[str, Meta(max_length=bounds.MAX_CODE_CHARS)] | None = None
    function_name: Name | None = None
    args: Annotated[list[Any], Meta(max_length=bounds.MAX_ARGS, description=bounds.VALUE_RULE)] = []
    kwargs: Annotated[dict[Name, Any], Meta(max_length=bounds.MAX_KWARGS, description=bounds.VALUE_RULE)] = {}
    requirements: Annotated[list[Requirement], Meta(max_length=bounds.MAX_REQUIREMENTS)] = []
    # API tasks
    api_url: Annotated[str, Meta(max_length=bounds.MAX_URL_CHARS)] | None = None
    method: Annotated[str, Meta(max_length=bounds.MAX_METHOD_CHARS)] = "GET"
    headers: Annotated[dict[HeaderName, HeaderValue], Meta(max_length=bounds.MAX_HEADERS)] = {}
    data: Annotated[Any, Meta(description=bounds.VALUE_RULE)] = None
    expected_status: Annotated[list[StatusCode], Meta(max_length=bounds.MAX_EXPECTED_STATUS)] = []
    # code tasks: secrets given as environment variables (API tasks write {{ secrets.NAME }})
    secrets: Annotated[list[secrets.SecretName], Meta(max_length=secrets.MAX_SECRETS_PER_TASK)] = []
    # when
    delay_seconds: Duration | None = None
    cron_expression: Annotated[str, Meta(max_length=bounds.MAX_CRON_CHARS)] | None = None
    timezone: Annotated[str, Meta(max_length=bounds.MAX_TIMEZONE_CHARS)] = "UTC"
    start_at: Annotated[datetime, Meta(tz=True)] | None = None
    end_at: Annotated[datetime, Meta(tz=True)] | None = None
    max_runs: Annotated[int, Meta(ge=1, le=bounds.MAX_RUNS)] | None = None
    overlap_policy: OverlapPolicy = "allow"
    misfire_policy: MisfirePolicy = "run_once"
    jitter_seconds: Annotated[
        float,
        Meta(
            ge=0,
            le=bounds.MAX_JITTER_SECONDS,
            description="Delay each fire by a fixed offset in [0, jitter_seconds), a hash of task and slot; "
            "at most the shortest interval between fires.",
        ),
    ] = 0.0
    start_deadline_seconds: PositiveDuration | None = None
    # how
    timeout: PositiveDuration | None = None
    isolated: bool = False
    network: bool = False
    memory_mb: Annotated[int, Meta(ge=bounds.MIN_MEMORY_MB)] | None = None
    cpus: Annotated[float, Meta(ge=bounds.MIN_CPUS)] | None = None
    max_retries: Annotated[int, Meta(ge=0, le=20)] = 0
    retry_delay_seconds: RetryDelay = 1.0
    retry_backoff: Annotated[float, Meta(ge=1, le=10)] = 2.0
    retry_delay_max_seconds: RetryDelay = 300.0
    # where
    allow_hosts: Annotated[
        list[HostPattern],
        Meta(
            max_length=bounds.MAX_ALLOW_HOSTS,
            description="When set, the only hosts this task may reach (within the operator's egress policy).",
        ),
    ] = []
    # flow control (admitted by the scheduler leader; see docs/architecture.md)
    concurrency_key: (
        rates.FlowKey | Annotated[list[rates.FlowKey], Meta(max_length=bounds.MAX_CONCURRENCY_KEYS)] | None
    ) = None
    max_concurrency: Annotated[int, Meta(ge=1, le=bounds.MAX_CONCURRENCY)] | None = None
    rate_limit: rates.RateLimit | None = None
    priority: Annotated[int, Meta(ge=bounds.MIN_PRIORITY, le=bounds.MAX_PRIORITY)] = 3
    fairness_key: rates.FlowKey | None = None

    @property
    def concurrency_keys(self) -> list[str]:
        """``concurrency_key`` as a list (empty when the task has none)."""
        key = self.concurrency_key
        return [] if key is None else [key] if isinstance(key, str) else list(key)

    @property
    def limited(self) -> bool:
        """Whether runs of this task go through admission (else they are published at once)."""
        return self.concurrency_key is not None or self.rate_limit is not None

    @property
    def kind(self) -> TaskKind:
        """``code`` when there is function code, else ``api``."""
        return "code" if self.function_code is not None else "api"

    @property
    def sandboxed(self) -> bool:
        """Code tasks always run in a sandbox; API tasks only when ``isolated``."""
        return self.kind == "code" or self.isolated


class Limits(Struct, kw_only=True, frozen=True):
    """Operator-set defaults and maxima for per-task overrides (validated at submission)."""

    code_timeout_seconds: float = 300.0
    api_timeout_seconds: float = 30.0
    max_timeout_seconds: float = 3600.0
    memory_mb: int = 512
    max_memory_mb: int = 2048
    cpus: float = 0.5
    max_cpus: float = 2.0
    allow_network: bool = True


_REQUIREMENT = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"  # project name
    r"(?:\[[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*\])?"  # extras
    r"(?:\s*(?:===|==|!=|<=|>=|~=|<|>)\s*[A-Za-z0-9.*+!_-]+"  # first version clause
    r"(?:\s*,\s*(?:===|==|!=|<=|>=|~=|<|>)\s*[A-Za-z0-9.*+!_-]+)*)?$"  # more clauses
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_PATTERN = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\.?$")


def normalise_requirements(requirements: list[str]) -> list[str]:
    """Requirements with whitespace removed, de-duplicated and sorted: the cache key's input."""
    return sorted({"".join(r.split()) for r in requirements})


def check_spec(spec: TaskSpec, limits: Limits) -> None:
    """Raise FieldError for the first problem msgspec's types cannot express."""
    kind_fields(spec)
    value_fields(spec)
    trigger_fields(spec)
    if spec.kind == "code":
        code_fields(spec)
    else:
        api_fields(spec)
    execution_fields(spec, limits)
    secret_references(spec)
    host_fields(spec)
    flow_fields(spec)


def secret_references(spec: TaskSpec) -> dict[str, str]:
    """The secrets the task uses, each with the field that names it (FieldError for a bad name)."""
    if spec.secrets and spec.kind != "code":
        raise FieldError("secrets", "secrets applies to code tasks; API tasks write {{ secrets.NAME }}")
    return secrets.references(spec.api_url, spec.headers, spec.data, spec.secrets)


def kind_fields(spec: TaskSpec) -> None:
    if spec.function_code is not None and spec.api_url is not None:
        raise FieldError("api_url", "give either function_code (a code task) or api_url (an API task), not both")
    if spec.function_code is None and spec.api_url is None:
        if spec.function_name is not None:
            raise FieldError("function_code", "a code task needs function_code")
        if spec.headers or spec.data is not None or spec.method != "GET":
            raise FieldError("api_url", "an API task needs api_url")
        raise FieldError("function_code", "a task needs function_code + function_name (code) or api_url (API)")


def value_fields(spec: TaskSpec) -> None:
    """args, kwargs and data: JSON values, shallow (checked without recursion), small in total."""
    size = 0
    for name in ("args", "kwargs", "data"):
        value = getattr(spec, name)
        if bounds.nesting_depth(value) > bounds.MAX_NESTING_DEPTH:
            raise FieldError(name, f"{name} is nested more than {bounds.MAX_NESTING_DEPTH} levels deep")
        try:
            size += len(msgspec.json.encode(value))
        except (TypeError, ValueError, OverflowError):
            raise FieldError(name, f"{name} must be a JSON value") from None
        if size > bounds.MAX_VALUE_BYTES:
            raise FieldError(
                name, f"args, kwargs and data together may be at most {bounds.MAX_VALUE_BYTES} bytes of JSON"
            )


def trigger_fields(spec: TaskSpec) -> None:
    if spec.task_type == "delayed" and spec.delay_seconds is None:
        raise FieldError("delay_seconds", "a delayed task needs delay_seconds")
    if spec.task_type != "delayed" and spec.delay_seconds is not None:
        raise FieldError("delay_seconds", "delay_seconds applies only to task_type 'delayed'")
    try:
        cron.load_zone(spec.timezone)
    except cron.CronError as exc:
        raise FieldError("timezone", str(exc)) from None
    if spec.task_type == "scheduled":
        if spec.cron_expression is None:
            raise FieldError("cron_expression", "a scheduled task needs cron_expression")
        try:
            cron.CronSchedule(spec.cron_expression, spec.timezone)
        except cron.CronError as exc:
            raise FieldError("cron_expression", str(exc)) from None
        for name in ("start_at", "end_at"):
            instant = getattr(spec, name)
            if instant is not None and instant >= bounds.LATEST_INSTANT:
                raise FieldError(name, f"{name} must be before {bounds.LATEST_INSTANT.isoformat()}")
        if spec.start_at and spec.end_at and spec.end_at <= spec.start_at:
            raise FieldError("end_at", "end_at must be after start_at")
        jitter_field(spec)
    else:
        for name in ("cron_expression", "start_at", "end_at", "max_runs"):
            if getattr(spec, name) is not None:
                raise FieldError(name, f"{name} applies only to task_type 'scheduled'")
        if spec.jitter_seconds:
            raise FieldError("jitter_seconds", "jitter_seconds applies only to task_type 'scheduled'")


def jitter_field(spec: TaskSpec) -> None:
    """Jitter at most the shortest interval between fires: offsets stay below it, so fires keep their order."""
    if not spec.jitter_seconds:
        return
    gap = cron.CronSchedule(spec.cron_expression or "", spec.timezone).shortest_gap()
    if gap is not None and spec.jitter_seconds > gap.total_seconds():
        raise FieldError(
            "jitter_seconds",
            f"jitter_seconds may be at most the shortest interval between fires ({gap.total_seconds():g} s)",
        )


def code_fields(spec: TaskSpec) -> None:
    code = spec.function_code or ""
    if not code.strip():
        raise FieldError("function_code", "function_code is empty")
    if len(code) > bounds.MAX_CODE_CHARS:
        raise FieldError("function_code", f"function_code is longer than {bounds.MAX_CODE_CHARS} characters")
    name = spec.function_name
    if name is None:
        raise FieldError("function_name", "a code task needs function_name")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise FieldError("function_name", f"{name!r} is not a Python identifier")
    for field in ("api_url", "headers", "data"):
        if getattr(spec, field):
            raise FieldError(field, f"{field} applies only to API tasks")
    check_source(code, name)
    check_requirements(spec.requirements)


def check_source(code: str, function_name: str) -> None:
    """Parse (never run) the code: a syntax error or a missing function is known now."""
    try:
        tree = ast.parse(code, filename="task.py", mode="exec")
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        raise FieldError("function_code", f"syntax error{where}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise FieldError("function_code", f"function_code cannot be parsed: {type(exc).__name__}") from None
    bound: set[str] = set()
    star_import = False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                bound.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    star_import = True
                bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            # conditional definitions: trust them rather than reject working code
            bound.update(n.name for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
            bound.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    if function_name not in bound and not star_import:
        raise FieldError("function_name", f"function_code defines no top-level {function_name!r}")


def check_requirements(requirements: list[str]) -> None:
    if len(requirements) > bounds.MAX_REQUIREMENTS:
        raise FieldError("requirements", f"at most {bounds.MAX_REQUIREMENTS} requirements")
    for requirement in requirements:
        if len(requirement) > bounds.MAX_REQUIREMENT_CHARS or not _REQUIREMENT.match(requirement.strip()):
            raise FieldError(
                "requirements",
                f"{requirement[:80]!r} is not a package requirement such as 'pandas==2.2.3' "
                "(URLs, paths and installer options are not accepted)",
            )


def api_fields(spec: TaskSpec) -> None:
    url = secrets.placeholder(spec.api_url or "")  # references are checked on their own
    if len(url) > bounds.MAX_URL_CHARS:
        raise FieldError("api_url", f"api_url is longer than {bounds.MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is no number or out of range
    except ValueError:
        raise FieldError("api_url", "api_url is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise FieldError("api_url", "api_url must be an http:// or https:// URL")
    if not parts.hostname:
        raise FieldError("api_url", "api_url has no host")
    if any(c.isspace() for c in url):
        raise FieldError("api_url", "api_url must not contain whitespace")
    if spec.method.upper() not in get_args(HttpMethod):
        raise FieldError("method", f"method must be one of {', '.join(get_args(HttpMethod))}")
    if len(spec.headers) > bounds.MAX_HEADERS:
        raise FieldError("headers", f"at most {bounds.MAX_HEADERS} headers")
    for key, value in spec.headers.items():
        if not _HEADER_NAME.match(key):
            raise FieldError("headers", f"{key[:60]!r} is not a valid header name")
        if "\r" in value or "\n" in value or len(value) > bounds.MAX_HEADER_VALUE_CHARS:
            raise FieldError("headers", f"header {key!r} has an invalid value")
    for field in ("function_name",):
        if getattr(spec, field) is not None:
            raise FieldError(field, f"{field} applies only to code tasks")
    if spec.args or spec.kwargs:
        raise FieldError("args", "args and kwargs apply only to code tasks")
    if spec.requirements and not spec.isolated:
        raise FieldError("requirements", "requirements apply to code tasks and isolated API tasks")
    check_requirements(spec.requirements)


def execution_fields(spec: TaskSpec, limits: Limits) -> None:
    if spec.timeout is not None and spec.timeout > limits.max_timeout_seconds:
        raise FieldError("timeout", f"timeout may be at most {limits.max_timeout_seconds:g} seconds")
    if spec.memory_mb is not None and spec.memory_mb > limits.max_memory_mb:
        raise FieldError("memory_mb", f"memory_mb may be at most {limits.max_memory_mb}")
    if spec.cpus is not None and spec.cpus > limits.max_cpus:
        raise FieldError("cpus", f"cpus may be at most {limits.max_cpus:g}")
    if spec.network and not limits.allow_network:
        raise FieldError("network", "network access for sandboxes is disabled by the operator")
    if not spec.sandboxed:
        for field in ("network", "memory_mb", "cpus"):
            if getattr(spec, field):
                raise FieldError(field, f"{field} applies to sandboxed tasks (code or isolated)")


def host_fields(spec: TaskSpec) -> None:
    """allow_hosts: host names or ``*.`` wildcards, for tasks that reach the network at all."""
    if not spec.allow_hosts:
        return
    if len(spec.allow_hosts) > bounds.MAX_ALLOW_HOSTS:
        raise FieldError("allow_hosts", f"at most {bounds.MAX_ALLOW_HOSTS} allow_hosts")
    for pattern in spec.allow_hosts:
        if len(pattern) > bounds.MAX_HOST_CHARS or not _HOST_PATTERN.match(pattern):
            raise FieldError(
                "allow_hosts",
                f"{pattern[:80]!r} is not a host name such as 'api.example.com' or a wildcard such as "
                "'*.example.com' (no scheme, port, path or address range)",
            )
    if spec.kind == "code" and not spec.network:
        raise FieldError("allow_hosts", "allow_hosts applies to API tasks and to code tasks with network")
    host = urlsplit(spec.api_url or "").hostname if spec.kind == "api" else None
    if host and not host_allowed(host, spec.allow_hosts):
        raise FieldError("allow_hosts", f"api_url's host {host} is not in allow_hosts")


def host_allowed(host: str, patterns: list[str]) -> bool:
    """Whether ``host`` is one of ``patterns``: exactly (any case), or a subdomain of a ``*.`` pattern."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def flow_fields(spec: TaskSpec) -> None:
    """Keys are printable; a limit needs a key to hold it (a rate alone limits the task itself)."""
    keys = spec.concurrency_keys
    if isinstance(spec.concurrency_key, list) and not keys:
        raise FieldError("concurrency_key", "concurrency_key, when a list, names at least one key")
    if len(set(keys)) != len(keys):
        raise FieldError("concurrency_key", "concurrency_key names a key twice")
    for key in keys:
        rates.check_flow_key(key, "concurrency_key")
    if spec.max_concurrency is not None and not keys:
        raise FieldError("max_concurrency", "max_concurrency needs a concurrency_key to count runs by")
    if spec.rate_limit is not None:
        rates.parse_rate(spec.rate_limit)
    if spec.fairness_key is not None:
        rates.check_flow_key(spec.fairness_key, "fairness_key")
        if not spec.limited:
            raise FieldError("fairness_key", "fairness_key needs a concurrency_key or a rate_limit to share")


def normalised(spec: TaskSpec, *, isolated: bool = False) -> TaskSpec:
    """The spec as stored: upper-case method; isolated API tasks get the seed's default 'requests'."""
    changes: dict[str, Any] = {}
    if spec.method != spec.method.upper():
        changes["method"] = spec.method.upper()
    if isolated and not spec.isolated:
        changes["isolated"] = True
    if (isolated or spec.isolated) and spec.kind == "api" and not spec.requirements:
        changes["requirements"] = ["requests"]
    return msgspec.structs.replace(spec, **changes) if changes else spec
