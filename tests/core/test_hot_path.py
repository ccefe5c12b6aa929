"""The hot routes served past the middleware stack (app/core/hot_path.py) keep what the stack
gave them: request ids, security headers, metrics, the head and body limits, authentication,
revocation, tenant checks, maintenance mode and the one error shape."""

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


def _count(text: str, route: str, status: int, method: str = "GET") -> float:
    pattern = (
        rf'junction_http_requests_total\{{method="{method}",route="'
        + re.escape(route)
        + rf'",status="{status}"\}} ([0-9.e+]+)'
    )
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def test_the_direct_routes_are_the_hot_routes(settings: Settings) -> None:
    app = create_app(settings)
    assert app.hot_routes is not None
    paths = {(hot.method, hot.route.path) for hot in app.hot_routes._routes}
    assert paths == {
        ("GET", "/config/{tenant_id}"),
        ("GET", "/token-management/tokens/{branch_id}"),
        ("POST", "/usage/openai"),
    }


def test_a_hot_route_matches_the_paths_its_route_would(settings: Settings) -> None:
    # The matcher reads a last-segment parameter without the route's regex: it must take and
    # refuse exactly what the regex does, with the same parameters.
    app = create_app(settings)
    assert app.hot_routes is not None
    paths = [
        "/config/tenant-a",
        "/config/",
        "/config",
        "/config/a/b",
        "/config/a/",
        "/config/%2F",
        "/config/a b",
        "/config/tenant-a\n",
        "/configs/tenant-a",
        "/token-management/tokens/branch-1",
        "/token-management/tokens/",
        "/usage/openai",
        "/usage/openai/",
        "/usage/openaix",
    ]
    for hot in app.hot_routes._routes:
        for path in paths:
            found = hot.route.path_regex.match(path)
            expected = None if found is None else found.groupdict()
            assert hot.params(path) == expected, (hot.route.path, path)


def test_in_maintenance_the_hot_write_goes_through_the_stack(database_url: str) -> None:
    app = create_app(build_settings(database_url, maintenance_mode="read_only"))
    assert app.hot_routes is not None
    assert {hot.method for hot in app.hot_routes._routes} == {"GET"}


def test_no_hot_routes_when_a_middleware_must_see_every_request(database_url: str) -> None:
    limited = create_app(build_settings(database_url, rate_limit="100/second"))
    assert limited.hot_routes is None
    cors = create_app(build_settings(database_url, cors_allow_origins="https://app.example"))
    assert cors.hot_routes is None


async def test_a_hot_read_carries_a_request_id_and_the_security_headers(
    app: Any, client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    assert app.hot_routes is not None
    headers = bearer(make_token([TENANT]))
    response = await client.get(CONFIG, headers=headers)
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    for name, value in SECURITY_HEADER_DICT.items():
        assert response.headers[name] == value
    given = await client.get(CONFIG, headers={**headers, "X-Request-ID": "trace-123"})
    assert given.headers["x-request-id"] == "trace-123"


async def test_hot_routes_are_counted_under_their_route(
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


USAGE = "/usage/openai"
_EVENT = {
    "tenant_id": TENANT,
    "model": "gpt-4o-mini",
    "prompt_tokens": 3,
    "completion_tokens": 2,
    "source": "ai_reply",
}


async def test_a_hot_write_carries_a_request_id_and_is_counted(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token([TENANT], roles=["service"]))
    before = (await client.get("/metrics")).text
    response = await client.post(USAGE, json=_EVENT, headers={**headers, "X-Request-ID": "ev-1"})
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == "ev-1"
    for name, value in SECURITY_HEADER_DICT.items():
        assert response.headers[name] == value
    after = (await client.get("/metrics")).text
    assert _count(after, USAGE, 201, "POST") == _count(before, USAGE, 201, "POST") + 1


async def test_a_hot_write_keeps_the_body_limits(
    database_url: str, make_token: TokenFactory
) -> None:
    settings = build_settings(database_url, request_max_batch_body_bytes=4096)
    headers = bearer(make_token([TENANT], roles=["service"]))
    async with running_app(settings) as (app, client):
        assert app.hot_routes is not None
        too_large = await client.post(USAGE, json=[_EVENT] * 100, headers=headers)
        nested = await client.post(
            USAGE,
            content=b"[" * 40 + b"]" * 40,
            headers={**headers, "Content-Type": "application/json"},
        )
        bad_length = await client.post(
            USAGE, content=b"{}", headers={**headers, "Content-Length": "x2"}
        )
        wrong = await client.post(USAGE, json={**_EVENT, "prompt_tokens": -1}, headers=headers)
    assert too_large.status_code == 413 and too_large.json()["error"] == "payload_too_large"
    assert nested.status_code == 422 and "nested deeper" in nested.json()["detail"]
    assert bad_length.status_code == 400
    assert wrong.status_code == 422 and wrong.json()["fields"][0]["field"] == "prompt_tokens"
    for refused in (too_large, nested, bad_length, wrong):
        assert re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])


async def test_a_hot_write_is_refused_without_the_service_role(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    anonymous = await client.post(USAGE, json=_EVENT)
    reader = await client.post(USAGE, json=_EVENT, headers=bearer(make_token([TENANT])))
    other = await client.post(
        USAGE, json=_EVENT, headers=bearer(make_token(["tenant-b"], roles=["service"]))
    )
    assert anonymous.status_code == 401
    assert reader.status_code == 403
    assert other.status_code == 403
