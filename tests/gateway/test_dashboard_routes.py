"""The gateway serves the dashboard's files without a token, the API only with one, and previews cron."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client
from yarl import URL

from services.common.presence import ServiceRegistry
from services.gateway.app import create_app
from services.gateway.context import Gateway
from services.gateway.metrics import HttpMetrics
from services.gateway.settings import GatewaySettings
from services.gateway.store_client import StoreClient

TOKEN = "route-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    """The gateway's application with a token configured (no NATS: these routes need none)."""
    gateway = Gateway(
        settings=GatewaySettings(api_tokens=[TOKEN]),
        nc=Client(),
        store=StoreClient(Client(), 1.0),
        registry=ServiceRegistry(),
        metrics=HttpMetrics(),
    )
    async with TestClient(TestServer(create_app(gateway))) as test_client:
        yield test_client


async def test_the_dashboard_and_its_files_are_served_without_a_token_and_the_api_is_not(client: TestClient) -> None:
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    assert '<script type="module" src="/static/app.js">' in await page.text()
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'self': no inline script
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    script = await client.get("/static/app.js")
    assert script.status == 200 and script.content_type == "text/javascript"
    assert script.headers["Cache-Control"] == "no-cache"
    assert (await client.get("/api/tasks")).status == 401
    assert (await client.get("/api/openapi.json")).status == 401


async def test_vendored_files_are_cached_for_a_year_and_revalidate_by_etag(client: TestClient) -> None:
    first = await client.get("/static/vendor/uplot-1.6.32.min.js")
    assert first.status == 200 and "immutable" in first.headers["Cache-Control"]
    again = await client.get("/static/vendor/uplot-1.6.32.min.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304


@pytest.mark.parametrize(
    "path",
    [
        "/static/..%2fweb.py",
        "/static/vendor/..%2f..%2f__init__.py",
        "/static/%2e%2e%2fweb.py",
        "/static/vendor/missing.js",
        "/static/pages",
    ],
)
async def test_nothing_outside_the_static_folder_is_served(client: TestClient, path: str) -> None:
    raw = URL(f"http://{client.server.host}:{client.server.port}{path}", encoded=True)  # not normalised by the client
    response = await client.session.get(raw)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_the_api_reference_page_is_swagger_ui_over_the_openapi_document(client: TestClient) -> None:
    page = await client.get("/api/docs")
    assert page.status == 200
    text = await page.text()
    assert "swagger-ui-5.35.0-bundle.min.js" in text and "/static/reference.js" in text
    spec = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    assert "/api/cron/preview" in spec["paths"]


async def test_a_cron_preview_lists_the_next_fire_times_in_the_time_zone(client: TestClient) -> None:
    response = await client.get(
        "/api/cron/preview",
        headers=AUTH,
        params={"expression": "0 9 * * 1", "timezone": "America/New_York", "count": "3"},
    )
    assert response.status == 200
    body = await response.json()
    assert len(body["fires"]) == 3 and len(body["local"]) == 3
    assert all(local.endswith(("-05:00", "-04:00")) and "T09:00:00" in local for local in body["local"])
    assert body["fires"] == sorted(body["fires"])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"expression": "61 * * * *"}, "expression"),
        ({"expression": ""}, "expression"),
        ({"expression": "* * *"}, "expression"),
        ({"expression": "0 0 30 2 *"}, "expression"),
        ({"expression": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"expression": "* * * * *", "count": "0"}, "count"),
        ({"expression": "* * * * *", "count": "x"}, "count"),
        ({"expression": "* * * * *", "bogus": "1"}, "bogus"),
        ({"expression": "*" * 500}, "expression"),
    ],
)
async def test_a_bad_cron_preview_request_names_its_field(client: TestClient, params: dict, field: str) -> None:
    response = await client.get("/api/cron/preview", headers=AUTH, params=params)
    assert response.status == 400
    assert (await response.json())["error"]["field"] == field
