"""Building a task spec (the body of ``POST /api/tasks``) from a file and command-line flags.

The gateway validates the spec; here we only assemble it, so there is one set of rules.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

PLAIN_FLAGS = {
    "name": "name",
    "method": "method",
    "api_url": "api_url",
    "timezone": "timezone",
    "max_runs": "max_runs",
    "timeout": "timeout",
    "retries": "max_retries",
    "retry_delay": "retry_delay_seconds",
    "memory_mb": "memory_mb",
    "cpus": "cpus",
    "overlap": "overlap_policy",
    "jitter": "jitter_seconds",
    "max_concurrency": "max_concurrency",
    "rate_limit": "rate_limit",
    "priority": "priority",
    "fairness_key": "fairness_key",
}
"""Flags copied into the spec as they are: flag name → spec field."""


def parse_value(text: str) -> Any:
    """A JSON value if ``text`` is one (``3``, ``true``, ``{"a": 1}``), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(values: tuple[str, ...], separator: str, option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, found, rest = value.partition(separator)
        if not found or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY{separator}VALUE", param_hint=option)
        pairs.append((key.strip(), rest.strip() if separator == ":" else rest))
    return pairs


def load_spec_file(path: str) -> dict[str, Any]:
    """A spec from a JSON or YAML file (``-`` reads standard input; YAML also reads JSON)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="SOURCE") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise click.BadParameter(
            f"{path} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: {str(exc).splitlines()[0]}",
            param_hint="SOURCE",
        ) from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold one object (a task spec)", param_hint="SOURCE")
    return data


def top_level_functions(code: str, path: str) -> list[str]:
    """Names of the functions a module defines at top level."""
    try:
        tree = ast.parse(code, filename=path)
    except SyntaxError as exc:
        raise click.BadParameter(f"{path}: syntax error on line {exc.lineno}: {exc.msg}", param_hint="SOURCE") from None
    return [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def code_from_python(path: str, function: str | None) -> dict[str, Any]:
    """``function_code`` and ``function_name`` from a Python file; the function defaults to its only one."""
    try:
        code = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="SOURCE") from None
    if function is None:
        names = top_level_functions(code, path)
        if len(names) != 1:
            found = ", ".join(names) or "none"
            raise click.UsageError(
                f"{path} defines {len(names)} top-level functions ({found}); name the one to run with --function"
            )
        function = names[0]
    return {"function_code": code, "function_name": function}


def build_spec(source: str | None, flags: dict[str, Any]) -> dict[str, Any]:
    """The spec: the file's (if any), then each flag given on top of it."""
    spec: dict[str, Any] = {}
    if source is not None and source.endswith(".py"):
        spec.update(code_from_python(source, flags.get("function")))
    elif source is not None:
        spec.update(load_spec_file(source))
    if flags.get("code") is not None:
        spec["function_code"] = flags["code"]
    if flags.get("function") is not None:
        spec["function_name"] = flags["function"]
    for flag, field in PLAIN_FLAGS.items():
        if flags.get(flag) is not None:
            spec[field] = flags[flag]
    if flags.get("args"):
        spec["args"] = [parse_value(value) for value in flags["args"]]
    if flags.get("kwargs"):
        spec["kwargs"] = {
            **spec.get("kwargs", {}),
            **{k: parse_value(v) for k, v in _pairs(flags["kwargs"], "=", "--kwarg")},
        }
    if flags.get("requirements"):
        spec["requirements"] = [*spec.get("requirements", []), *flags["requirements"]]
    if flags.get("headers"):
        spec["headers"] = {**spec.get("headers", {}), **dict(_pairs(flags["headers"], ":", "--header"))}
    if flags.get("data") is not None:
        spec["data"] = parse_value(flags["data"])
    if flags.get("expect_status"):
        spec["expected_status"] = list(flags["expect_status"])
    if flags.get("concurrency_keys"):
        keys = list(flags["concurrency_keys"])
        spec["concurrency_key"] = keys[0] if len(keys) == 1 else keys
    if flags.get("allow_hosts"):
        spec["allow_hosts"] = [*spec.get("allow_hosts", []), *flags["allow_hosts"]]
    for flag in ("isolated", "network"):
        if flags.get(flag):
            spec[flag] = True
    for key, value in _pairs(flags.get("overrides", ()), "=", "--set"):
        spec[key] = parse_value(value)
    if flags.get("delay") is not None:
        spec["task_type"], spec["delay_seconds"] = "delayed", flags["delay"]
    if flags.get("cron") is not None:
        spec["task_type"], spec["cron_expression"] = "scheduled", flags["cron"]
    spec.setdefault("task_type", "immediate")
    spec.setdefault("name", default_name(spec))
    if "function_code" not in spec and "api_url" not in spec:
        raise click.UsageError("nothing to run: give a SOURCE file, --code with --function, or --api-url")
    return spec


def default_name(spec: dict[str, Any]) -> str:
    """The function's name for code, ``METHOD url`` for an API call."""
    if spec.get("function_name"):
        return str(spec["function_name"])
    return f"{str(spec.get('method', 'GET')).upper()} {spec.get('api_url', '')}"[:200]
