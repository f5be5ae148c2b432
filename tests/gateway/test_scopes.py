"""Scoped tokens: every endpoint of the route table refuses a token without its scope (403) and takes one with it."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from services.common.settings import SettingsError, load_settings
from services.gateway.routes import ENDPOINTS, Endpoint
from services.gateway.scopes import SUBMIT
from services.gateway.settings import GatewaySettings
from tests.support import Stack

TOKENS = {
    "reader-7f3a": {"read"},
    "api-submitter-7f3a": {"submit:api"},
    "code-submitter-7f3a": {"submit:code"},
    "operator-7f3a": {"admin"},
    "everything-7f3a": {"read", "submit:api", "submit:code", "admin"},
}
"""Each test token and the scopes it is configured with below."""
UNKNOWN_ID = "0000000000000000-not-a-task"
DELAYED = {"task_type": "delayed", "delay_seconds": 3600}
"""Submissions the tests accept never run: they are due in an hour."""


@pytest.fixture
def stack_env(tmp_path) -> dict[str, str]:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("# operators\noperator-7f3a admin\n\ncode-submitter-7f3a submit:code\n")
    return {
        "TASKMESH_API_TOKENS": "reader-7f3a:read,api-submitter-7f3a:submit:api,everything-7f3a",
        "TASKMESH_API_TOKENS_FILE": str(tokens_file),
    }


def as_path(endpoint: Endpoint) -> str:
    return re.sub(r"\{[a-z_]+\}", UNKNOWN_ID, endpoint.path)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_body(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "scoped api", "api_url": url, **DELAYED, **extra}


CODE_BODY = {"name": "scoped code", "function_code": "def main():\n    return 1\n", "function_name": "main", **DELAYED}
SCHEDULED = {"task_type": "scheduled", "cron_expression": "0 0 1 1 *", "delay_seconds": None}


def test_every_endpoint_refuses_a_token_without_its_scope_and_takes_one_with_it(stack: Stack) -> None:
    checked = 0
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        for endpoint in ENDPOINTS:
            if endpoint.public or endpoint.scope == SUBMIT:
                continue
            for token, scopes in TOKENS.items():
                response = client.request(endpoint.method, as_path(endpoint), headers=bearer(token))
                if endpoint.scope in scopes:
                    assert response.status_code != 403, (endpoint.path, token, response.text)
                else:
                    assert response.status_code == 403, (endpoint.path, token, response.text)
                    error = response.json()["error"]
                    assert error["code"] == "forbidden" and error.get("field") is None
                    assert f"needs scope {endpoint.scope}" in error["message"]
                checked += 1
    assert checked == 5 * sum(1 for e in ENDPOINTS if not e.public and e.scope != SUBMIT)


SUBMISSIONS = [  # path, body, the scope it needs
    ("/api/tasks", api_body("http://127.0.0.1:9/x"), "submit:api"),
    ("/api/tasks", CODE_BODY, "submit:code"),
    ("/api/tasks", api_body("http://127.0.0.1:9/x", isolated=True), "submit:code"),
    ("/api/tasks/isolated", api_body("http://127.0.0.1:9/x"), "submit:code"),
    ("/api/scheduled-tasks", {**api_body("http://127.0.0.1:9/x"), **SCHEDULED}, "submit:api"),
    ("/api/scheduled-tasks", {**CODE_BODY, **SCHEDULED}, "submit:code"),
]


def test_a_submission_needs_the_scope_its_kind_of_task_needs(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        for path, body, needed in SUBMISSIONS:
            sent = {key: value for key, value in body.items() if value is not None}
            for token, scopes in TOKENS.items():
                response = client.post(path, json=sent, headers=bearer(token))
                if needed in scopes:
                    assert response.status_code == 201, (path, needed, token, response.text)
                    continue
                assert response.status_code == 403, (path, needed, token, response.text)
                error = response.json()["error"]
                assert error["code"] == "forbidden"
                if scopes & {"submit:api", "submit:code"}:
                    assert f"needs scope {needed}" in error["message"]
                else:  # a token that may submit nothing is refused before its body is read
                    assert "needs scope submit:api or submit:code" in error["message"]


def test_tokens_are_checked_before_scopes_and_health_stays_public(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        assert client.get("/api/health").status_code == 200
        for endpoint in ENDPOINTS:
            if endpoint.public:
                continue
            for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic cmVhZGVyOg=="}):
                response = client.request(endpoint.method, as_path(endpoint), headers=headers)
                assert response.status_code == 401, (endpoint.path, response.text)
        # a body that is not a task is the store's 400, for any token that may submit something
        broken = client.post(
            "/api/tasks", content=b"[1, 2", headers={**bearer("api-submitter-7f3a"), "Content-Type": "application/json"}
        )
        assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
        refused = client.post("/api/tasks", content=b"[1, 2", headers=bearer("reader-7f3a"))
        assert refused.status_code == 403
        logs = stack.logs()
        assert not [token for token in TOKENS if token in logs]


def test_the_openapi_document_shows_the_scope_of_every_operation(stack: Stack) -> None:
    spec = httpx.get(f"{stack.base_url}/api/openapi.json", headers=bearer("reader-7f3a"), timeout=30).json()
    for endpoint in ENDPOINTS:
        operation = spec["paths"][endpoint.path][endpoint.method.lower()]
        if endpoint.public:
            assert "x-scope" not in operation and "security" not in operation
        elif endpoint.scope == SUBMIT:
            assert operation["x-scope"].startswith("submit:code") and "403" in operation["responses"]
        else:
            assert operation["x-scope"] == endpoint.scope
            assert operation["security"] == [{"bearer": [endpoint.scope]}]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("tok:raed", "unknown scope 'raed'"),
        ("tok:", "no scope after ':'"),
        (":read", "empty token"),
        ("same,same:read", "configured twice"),
    ],
)
def test_a_malformed_token_setting_stops_the_gateway_without_showing_the_token(value: str, problem: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(problem)) as raised:
        load_settings(GatewaySettings, {"TASKMESH_API_TOKENS": value})
    assert "tok" not in str(raised.value).replace("token", "") and "same" not in str(raised.value)


def test_a_plain_token_keeps_every_scope_and_a_scoped_one_only_its_own(tmp_path) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("filed read, admin\n")
    settings = load_settings(
        GatewaySettings,
        {"TASKMESH_API_TOKENS": "old,new:read+submit:api", "TASKMESH_API_TOKENS_FILE": str(tokens_file)},
    )
    tokens = settings.tokens()
    assert tokens.scopes_of("old") == {"read", "submit:api", "submit:code", "admin"}
    assert tokens.scopes_of("new") == {"read", "submit:api"}
    assert tokens.scopes_of("filed") == {"read", "admin"}
    assert tokens.scopes_of("ol") is None and tokens.scopes_of("") is None
