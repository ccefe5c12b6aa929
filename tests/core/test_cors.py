"""CORS for browser frontends: CORS_ALLOW_ORIGINS, preflights, and readable error answers."""

from __future__ import annotations

import httpx
import pytest

from app.core.config import ConfigurationError, Settings
from tests.conftest import TokenFactory, bearer, build_settings, running_app

APP_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.net"


def _preflight(origin: str, method: str = "POST", headers: str = "authorization,content-type"):
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


async def test_without_the_setting_no_answer_carries_cors_headers(
    database_url: str, make_token: TokenFactory
) -> None:
    async with running_app(build_settings(database_url)) as (_, client):
        read = await client.get("/livez", headers={"Origin": APP_ORIGIN})
        preflight = await client.options("/config/tenant-a", headers=_preflight(APP_ORIGIN))
    assert _cors_headers(read) == {}
    assert _cors_headers(preflight) == {}
    assert preflight.status_code == 405
    assert preflight.json()["error"] == "method_not_allowed"


async def test_a_preflight_from_an_allowed_origin_is_answered(database_url: str) -> None:
    settings = build_settings(database_url, cors_allow_origins=APP_ORIGIN, cors_max_age_s=900)
    async with running_app(settings) as (_, client):
        response = await client.options("/config/tenant-a", headers=_preflight(APP_ORIGIN))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert methods >= {"GET", "POST", "PUT", "PATCH", "DELETE"}
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "content-type", "x-request-id"} <= allowed
    assert response.headers["access-control-max-age"] == "900"
    assert "access-control-allow-credentials" not in response.headers
    # Answered inside the request context: a request id and the security headers, like any answer.
    assert response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_an_allowed_origin_reads_answers_and_their_request_id(
    database_url: str, make_token: TokenFactory
) -> None:
    settings = build_settings(
        database_url, cors_allow_origins=f"{APP_ORIGIN},http://localhost:3000"
    )
    headers = {"Origin": "http://localhost:3000", **bearer(make_token(roles=["service"]))}
    async with running_app(settings) as (_, client):
        response = await client.get("/config/tenant-a", headers=headers)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert {"x-request-id", "retry-after", "www-authenticate"} <= exposed
    assert "Origin" in response.headers["vary"]


async def test_a_disallowed_origin_gets_no_cors_headers(
    database_url: str, make_token: TokenFactory
) -> None:
    settings = build_settings(database_url, cors_allow_origins=APP_ORIGIN)
    headers = {"Origin": OTHER_ORIGIN, **bearer(make_token(roles=["service"]))}
    async with running_app(settings) as (_, client):
        read = await client.get("/config/tenant-a", headers=headers)
        preflight = await client.options("/config/tenant-a", headers=_preflight(OTHER_ORIGIN))
    assert read.status_code == 200
    assert _cors_headers(read) == {}
    assert "Origin" in read.headers["vary"]
    # The preflight is answered as without CORS: the browser refuses the call it announced.
    assert preflight.status_code == 405
    assert _cors_headers(preflight) == {}


async def test_a_preflight_for_a_header_not_allowed_is_a_json_400(database_url: str) -> None:
    settings = build_settings(database_url, cors_allow_origins=APP_ORIGIN)
    async with running_app(settings) as (_, client):
        response = await client.options(
            "/config/tenant-a", headers=_preflight(APP_ORIGIN, headers="x-sneaky")
        )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "cors_preflight_refused",
        "detail": "Disallowed CORS headers",
    }


async def test_error_answers_carry_cors_headers_for_an_allowed_origin(
    database_url: str, make_token: TokenFactory
) -> None:
    settings = build_settings(
        database_url,
        cors_allow_origins=APP_ORIGIN,
        request_max_body_bytes=1024,
        rate_limit="100/minute",
        rate_limit_by_address="2/minute",
    )
    origin = {"Origin": APP_ORIGIN}
    member = {**origin, **bearer(make_token(tenants=["tenant-a"], sub="member"))}
    async with running_app(settings) as (_, client):
        answers = {
            # A tenant the caller lacks, an unknown object, bad input, too large a body.
            403: await client.get("/config/tenant-b", headers=member),
            404: await client.get("/token-management/clients/unknown-client", headers=member),
            422: await client.get("/config/tenant-a?include_secrets=maybe", headers=member),
            413: await client.post(
                "/config/tenant-a",
                content=b"{" + b" " * 2048 + b"}",
                headers={**member, "Content-Type": "application/json"},
            ),
        }
        # Without a token: 401, and past the per-address limit, 429 with Retry-After.
        anonymous = [await client.get("/config/tenant-a", headers=origin) for _ in range(3)]
    answers[401] = anonymous[0]
    answers[429] = anonymous[-1]
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN, status
        assert response.json()["error"], status
    assert answers[401].headers["www-authenticate"].startswith("Bearer")
    assert answers[429].headers["retry-after"]


async def test_credentials_are_allowed_only_when_asked_for(database_url: str) -> None:
    settings = build_settings(
        database_url, cors_allow_origins=APP_ORIGIN, cors_allow_credentials=True
    )
    async with running_app(settings) as (_, client):
        preflight = await client.options("/livez", headers=_preflight(APP_ORIGIN, "GET", ""))
        read = await client.get("/livez", headers={"Origin": APP_ORIGIN})
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert read.headers["access-control-allow-credentials"] == "true"
    assert read.headers["access-control-allow-origin"] == APP_ORIGIN


async def test_a_wildcard_allows_any_origin_without_credentials(database_url: str) -> None:
    async with running_app(build_settings(database_url, cors_allow_origins="*")) as (_, client):
        read = await client.get("/livez", headers={"Origin": OTHER_ORIGIN})
    assert read.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in read.headers


def test_a_wildcard_with_credentials_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigurationError, match="CORS_ALLOW_CREDENTIALS"):
        Settings(_env_file=None, cors_allow_origins="*", cors_allow_credentials=True)


@pytest.mark.parametrize(
    "entry",
    ["https://app.example.com/", "app.example.com", "ftp://app.example.com", "https://a@b.com"],
)
def test_an_entry_that_is_not_an_origin_is_refused(entry: str) -> None:
    with pytest.raises(ConfigurationError, match="is not an origin"):
        Settings(_env_file=None, cors_allow_origins=entry)


def test_origins_are_compared_as_browsers_send_them() -> None:
    settings = Settings(
        _env_file=None, cors_allow_origins=" https://App.Example.com:443 , http://localhost:3000"
    )
    assert settings.cors_origins == ("https://app.example.com", "http://localhost:3000")
