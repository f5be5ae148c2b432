"""The OpenAPI 3.1 document, generated from the route table and the proto Structs."""

from __future__ import annotations

from typing import Any

import msgspec

from proto import secrets
from proto.errors import ErrorBody
from proto.rates import FLOW_KEY_SCHEMA
from proto.records import TaskRecord
from services import VERSION
from services.gateway.ids import ID_SCHEMA
from services.gateway.routes import ENDPOINTS, Endpoint
from services.gateway.scopes import SUBMIT

REF = "#/components/schemas/{name}"
TASK_LINKS = (
    "getTask",
    "listRuns",
    "getLogs",
    "cancelTask",
    "deleteTask",
    "waitTask",
    "getSchedule",
    "pauseSchedule",
    "resumeSchedule",
    "triggerSchedule",
    "scheduleLedger",
)
STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted (not finished yet)",
    400: "Invalid request",
    401: "Missing or wrong bearer token",
    403: "The token lacks the scope this needs",
    404: "Not found",
    409: "Conflicts with the task's state",
    413: "Body too large",
    415: "Body is not JSON",
    429: "Too many waits or log follows open; retry",
    503: "A dependency is unavailable; retry",
}


def build_spec(auth: bool) -> dict[str, Any]:
    """The OpenAPI document; ``auth`` adds the bearer scheme to every non-public operation."""
    types: list[Any] = [ErrorBody]
    for endpoint in ENDPOINTS:
        for kind in (endpoint.request, endpoint.response):
            if kind is not None and kind not in types:
                types.append(kind)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(types, schemas, strict=False))
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, schema_of, auth)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Taskmesh",
            "version": VERSION,
            "description": "Run Python functions in sandboxes and HTTP requests, now, later or on a cron "
            'schedule. Every error is {"error": {"code", "message", "field"}}.',
        },
        "paths": paths,
        "components": {"schemas": components},
    }
    if auth:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return document


PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "key": FLOW_KEY_SCHEMA,
    "name": {"type": "string", "pattern": secrets.NAME_PATTERN, "maxLength": secrets.MAX_NAME_CHARS},
}
"""Path parameters that are not ids (those get ID_SCHEMA)."""


def _operation(endpoint: Endpoint, schema_of: dict[Any, Any], auth: bool) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": PATH_SCHEMAS.get(name, ID_SCHEMA)}
        for name in _path_params(endpoint.path)
    ]
    parameters += [
        {
            "name": p.name,
            "in": "query",
            "required": False,
            "schema": p.schema,
            **({"description": p.description} if p.description else {}),
        }
        for p in endpoint.query
    ]
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
        responses.setdefault(
            str(status),
            {
                "description": STATUS_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": schema_of[ErrorBody]}},
            },
        )
    if endpoint.response is TaskRecord and endpoint.request is not None:
        # lets clients (and schemathesis' stateful phase) follow a created task to its operations
        links = {
            target: {"operationId": target, "parameters": {"task_id": "$response.body#/id"}} for target in TASK_LINKS
        }
        for status in (endpoint.status, *endpoint.extra_status):
            responses[str(status)]["links"] = links
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "parameters": parameters,
        "responses": responses,
    }
    if not endpoint.public:
        operation["x-scope"] = _scope_text(endpoint)
        operation["description"] = f"Needs a token with scope {_scope_text(endpoint)} (when tokens are configured)."
    if endpoint.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema_of[endpoint.request]}},
        }
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
