"""The hot reads served past the middleware stack (app/core/hot_path.py) keep what the stack
gave them: request ids, security headers, metrics, the head limit, authentication, revocation,
tenant checks and the one error shape."""

from __future__ import annotations

import re
from typing import Any

import httpx

from app.core.config import Settings
from app.core.headers import SECURITY_HEADER_DICT
from app.main import create_app
from tests.conftest import TokenFactory, bearer, build_settings, running_app

TENANT = "tenant-a"
CONFIG = f"/config/{TENANT}"


def _count(text: str, route: str, status: int) -> float:
    pattern = (
        r'junction_http_requests_total\{method="GET",route="'
        + re.escape(route)
        + rf'",status="{status}"\}} ([0-9.e+]+)'
    )
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def test_the_direct_routes_are_the_hot_reads(settings: Settings) -> None:
    app = create_app(settings)
    assert app.hot_reads is not None
    paths = {hot.route.path for hot in app.hot_reads._routes}
    assert paths == {"/config/{tenant_id}", "/token-management/tokens/{branch_id}"}


def test_no_hot_reads_when_a_middleware_must_see_every_request(database_url: str) -> None:
    limited = create_app(build_settings(database_url, rate_limit="100/second"))
    assert limited.hot_reads is None
    cors = create_app(build_settings(database_url, cors_allow_origins="https://app.example"))
    assert cors.hot_reads is None


async def test_a_hot_read_carries_a_request_id_and_the_security_headers(
    app: Any, client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    assert app.hot_reads is not None
    headers = bearer(make_token([TENANT]))
    response = await client.get(CONFIG, headers=headers)
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    for name, value in SECURITY_HEADER_DICT.items():
        assert response.headers[name] == value
    given = await client.get(CONFIG, headers={**headers, "X-Request-ID": "trace-123"})
    assert given.headers["x-request-id"] == "trace-123"


async def test_hot_reads_are_counted_under_their_route(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token([TENANT]))
    before = (await client.get("/metrics")).text
    await client.get(CONFIG, headers=headers)
    await client.get(CONFIG)  # 401
    after = (await client.get("/metrics")).text
    assert (
        _count(after, "/config/{tenant_id}", 200) == _count(before, "/config/{tenant_id}", 200) + 1
    )
    assert (
        _count(after, "/config/{tenant_id}", 401) == _count(before, "/config/{tenant_id}", 401) + 1
    )


async def test_hot_read_errors_have_the_one_error_shape(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    unauthenticated = await client.get(CONFIG)
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"] == "unauthorized"
    assert "x-request-id" in unauthenticated.headers
    other = await client.get(CONFIG, headers=bearer(make_token(["tenant-b"])))
    assert other.status_code == 403
    assert other.json()["error"] == "forbidden"
    bad = await client.get(f"{CONFIG}?provider_type=nope", headers=bearer(make_token([TENANT])))
    assert bad.status_code == 422
    assert bad.json()["fields"][0]["field"] == "query.provider_type"
    token_read = await client.get(
        "/token-management/tokens/branch-1?provider=local",
        headers=bearer(make_token([TENANT], roles=["service"])),
    )
    assert token_read.status_code == 404  # no such connection: the domain's error, as JSON
    assert token_read.json()["error"]


async def test_a_revoked_token_is_refused_on_a_hot_read(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token([TENANT], roles=["admin"]))
    assert (await client.get(CONFIG, headers=headers)).status_code == 200
    revoked = await client.post("/auth/revoke", json={}, headers=headers)
    assert revoked.status_code in {200, 204}, revoked.text
    again = await client.get(CONFIG, headers=headers)
    assert again.status_code == 401
    assert again.json()["error"] == "token_revoked"


async def test_a_head_over_the_limit_still_answers_431(database_url: str) -> None:
    settings = build_settings(database_url, request_max_header_bytes=2048)
    async with running_app(settings) as (_, client):
        response = await client.get(CONFIG, headers={"X-Padding": "p" * 4096})
    assert response.status_code == 431
