"""The OpenAPI 3.1 document, generated from the route table and the proto Structs, and a docs page."""

from __future__ import annotations

import html
from typing import Any

import msgspec

from proto.errors import ErrorBody
from proto.records import TaskRecord
from services import VERSION
from services.gateway.ids import ID_SCHEMA
from services.gateway.routes import ENDPOINTS, Endpoint
from services.gateway.scopes import SUBMIT

REF = "#/components/schemas/{name}"
TASK_LINKS = ("getTask", "listRuns", "getLogs", "cancelTask", "deleteTask", "waitTask", "getSchedule",
              "pauseSchedule", "resumeSchedule", "triggerSchedule", "scheduleLedger")
STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted (not finished yet)", 400: "Invalid request",
               401: "Missing or wrong bearer token", 403: "The token lacks the scope this needs", 404: "Not found",
               409: "Conflicts with the task's state",
               413: "Body too large", 415: "Body is not JSON",
               429: "Too many waits or log follows open; retry", 503: "A dependency is unavailable; retry"}


def build_spec(auth: bool) -> dict[str, Any]:
    """The OpenAPI document; ``auth`` adds the bearer scheme to every non-public operation."""
    types: list[Any] = [ErrorBody]
    for endpoint in ENDPOINTS:
        for kind in (endpoint.request, endpoint.response):
            if kind is not None and kind not in types:
                types.append(kind)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(types, schemas))
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, schema_of, auth)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Taskmesh", "version": VERSION,
                 "description": "Run Python functions in sandboxes and HTTP requests, now, later or on a cron "
                                "schedule. Every error is {\"error\": {\"code\", \"message\", \"field\"}}."},
        "paths": paths,
        "components": {"schemas": components},
    }
    if auth:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return document


def _operation(endpoint: Endpoint, schema_of: dict[Any, Any], auth: bool) -> dict[str, Any]:
    parameters = [{"name": name, "in": "path", "required": True, "schema": ID_SCHEMA}
                  for name in _path_params(endpoint.path)]
    parameters += [{"name": p.name, "in": "query", "required": False, "schema": p.schema,
                    **({"description": p.description} if p.description else {})} for p in endpoint.query]
    responses: dict[str, Any] = {}
    for status in (endpoint.status, *endpoint.extra_status):
        if status == 503 and endpoint.response is not None and endpoint.path == "/api/health":
            content = {"application/json": {"schema": schema_of[endpoint.response]}}
        elif endpoint.response is not None:
            content = {endpoint.content_type: {"schema": schema_of[endpoint.response]}}
        else:
            content = {endpoint.content_type: {"schema": {"type": "string"}}}
        responses[str(status)] = {"description": STATUS_TEXT.get(status, "OK"), "content": content}
    errors = set(endpoint.errors) | ({401, 403} if auth and not endpoint.public else set())
    if endpoint.request is not None or endpoint.query or _path_params(endpoint.path):
        errors.add(400)
    for status in sorted(errors):
        responses.setdefault(str(status), {"description": STATUS_TEXT.get(status, "Error"),
                                           "content": {"application/json": {"schema": schema_of[ErrorBody]}}})
    if endpoint.response is TaskRecord and endpoint.request is not None:
        # lets clients (and schemathesis' stateful phase) follow a created task to its operations
        links = {target: {"operationId": target, "parameters": {"task_id": "$response.body#/id"}}
                 for target in TASK_LINKS}
        for status in (endpoint.status, *endpoint.extra_status):
            responses[str(status)]["links"] = links
    operation: dict[str, Any] = {"operationId": endpoint.operation_id, "summary": endpoint.summary,
                                 "tags": [endpoint.tag], "parameters": parameters, "responses": responses}
    if not endpoint.public:
        operation["x-scope"] = _scope_text(endpoint)
        operation["description"] = f"Needs a token with scope {_scope_text(endpoint)} (when tokens are configured)."
    if endpoint.request is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": schema_of[endpoint.request]}}}
    if auth and not endpoint.public:
        # OpenAPI 3.1 lets a bearer requirement list the roles it needs; a submission's depends on its body
        operation["security"] = [{"bearer": [] if endpoint.scope == SUBMIT else [endpoint.scope]}]
    return operation


def _scope_text(endpoint: Endpoint) -> str:
    if endpoint.scope == SUBMIT:
        return "submit:code (a code or sandboxed task) or submit:api (a plain API task)"
    return endpoint.scope


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def docs_page(spec: dict[str, Any]) -> str:
    """A self-contained HTML page describing every endpoint (no external assets)."""
    rows = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            params = ", ".join(f"<code>{html.escape(p['name'])}</code>" for p in operation["parameters"]) or "—"
            statuses = ", ".join(sorted(operation["responses"]))
            body = "TaskSpec (JSON)" if "requestBody" in operation else "—"
            rows.append(f"<tr><td class=m>{method.upper()}</td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(operation['summary'])}</td><td>{params}</td><td>{body}</td>"
                        f"<td>{statuses}</td><td>{html.escape(operation.get('x-scope', 'public'))}</td></tr>")
    spec_fields = spec["components"]["schemas"].get("TaskSpec", {}).get("properties", {})
    fields = "".join(f"<li><code>{html.escape(name)}</code> — {html.escape(_type_text(schema))}</li>"
                     for name, schema in spec_fields.items())
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>Taskmesh API</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}}
.m{{font-weight:bold;font-family:monospace}}code{{background:#f4f4f4;padding:0 .2em}}</style></head><body>
<h1>Taskmesh API <small>{html.escape(spec['info']['version'])}</small></h1>
<p>{html.escape(spec['info']['description'])} Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a>.</p>
<table><tr><th>Method</th><th>Path</th><th>What</th><th>Parameters</th><th>Body</th><th>Statuses</th><th>Scope</th></tr>
{''.join(rows)}</table><h2>Task fields (TaskSpec)</h2><ul>{fields}</ul></body></html>"""


def _type_text(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_type_text(s) for s in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    return str(schema.get("type", "any"))
