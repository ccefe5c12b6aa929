"""Input PostgreSQL cannot store, and provider answers out of range, are 4xx, never 500s."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.core.auth import mint_token
from app.core.config import Settings
from app.core.crypto import Keyring
from app.devtools.oauth_provider import LocalOAuthServer
from app.tokens.exceptions import ProviderError
from app.tokens.oauth import MAX_EXPIRES_IN_S, parse_token_response
from app.tokens.providers import ProviderSpec
from tests.conftest import bearer, build_settings, running_app
from tests.oauth_fixtures import (
    client_body,
    complete_login,
    connect_branch,
    register_client,
)
from tests.tokens.helpers import all_connections


async def test_nul_character_in_a_client_field_is_a_422(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    headers = bearer(make_token(roles=["service"]))
    for field, value in (
        ("name", "app\u0000"),
        ("client_id", "id\u0000"),
        ("redirect_uri", "https://app.example.com/cb\u0000"),
        ("return_urls", ["https://app.example.com/done\u0000"]),
        ("workspace_info", {"team": "a\u0000"}),
    ):
        response = await client.post(
            "/token-management/clients",
            json=client_body(oauth_server, **{field: value}),
            headers=headers,
        )
        assert response.status_code == 422, (field, response.text)
        assert response.json()["fields"][0]["field"] == field
    listed = await client.get("/token-management/clients", headers=headers)
    assert listed.json()["items"] == []


async def test_nan_in_workspace_info_is_a_422(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    body = json.dumps(client_body(oauth_server, workspace_info={"n": float("nan")})).encode()
    response = await client.post(
        "/token-management/clients",
        content=body,
        headers={**bearer(make_token(roles=["service"])), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "workspace_info"


async def test_nul_character_in_a_client_edit_is_a_422(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    created = await register_client(client, token, oauth_server)
    response = await client.patch(
        f"/token-management/clients/{created['id']}",
        json={"name": "x\u0000"},
        headers=bearer(token),
    )
    assert response.status_code == 422
    read = await client.get(f"/token-management/clients/{created['id']}", headers=bearer(token))
    assert read.json()["name"] == created["name"]


async def test_nul_character_in_a_client_id_path_is_a_422(
    client: httpx.AsyncClient, make_token
) -> None:
    headers = bearer(make_token(roles=["service"]))
    for path in ("/token-management/clients/a%00b", "/token-management/oauth/login/a%00b"):
        response = await client.get(path, params={"branch_id": "b"}, headers=headers)
        assert response.status_code == 422, path


async def test_custom_provider_url_with_an_impossible_port_is_a_422(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    response = await client.post(
        "/token-management/clients",
        json=client_body(oauth_server, token_url="https://auth.example.com:99999/token"),
        headers=bearer(make_token(roles=["service"])),
    )
    assert response.status_code == 422


async def test_a_custom_token_url_with_a_tab_is_a_422_at_registration(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["admin"])
    url = oauth_server.provider_urls()["token_url"].replace("/token", "/to\tken")
    response = await client.post(
        "/token-management/clients",
        json=client_body(oauth_server, token_url=url),
        headers=bearer(token),
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "token_url"
    listed = await client.get("/token-management/clients", headers=bearer(token))
    assert listed.json()["items"] == []


async def test_workspace_info_nested_256_deep_is_a_422(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    nested = '{"a":' * 256 + "1" + "}" * 256
    body = json.dumps(client_body(oauth_server, workspace_info={})).replace(
        '"workspace_info": {}', f'"workspace_info": {nested}'
    )
    response = await client.post(
        "/token-management/clients",
        content=body,
        headers={**bearer(make_token(roles=["admin"])), "content-type": "application/json"},
    )
    assert response.status_code == 422


async def test_workspace_info_deeper_than_its_bound_is_a_422_naming_it(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    info: Any = 1
    for _ in range(9):
        info = {"a": info}
    response = await client.post(
        "/token-management/clients",
        json=client_body(oauth_server, workspace_info=info),
        headers=bearer(make_token(roles=["admin"])),
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "workspace_info"


_SPEC = ProviderSpec(
    name="local", display_name="Local", authorization_url="https://a/", token_url="https://t/"
)


def _lifetime_s(expires_in: Any) -> int | None:
    data = {"access_token": "at", "token_type": "Bearer", "expires_in": expires_in}
    return parse_token_response(data, _SPEC).expires_in


def _expires_in_s(connected: dict[str, Any]) -> float:
    expires_at = datetime.fromisoformat(connected["expires_at"])
    return (expires_at - datetime.now(UTC)).total_seconds()


@pytest.mark.parametrize(
    ("expires_in", "lifetime_s"),
    [
        (3600, 3600),
        ("3600", 3600),
        (0, 0),
        (MAX_EXPIRES_IN_S, MAX_EXPIRES_IN_S),
        (MAX_EXPIRES_IN_S + 1, MAX_EXPIRES_IN_S),
        (10**20, MAX_EXPIRES_IN_S),
        ("9" * 12, MAX_EXPIRES_IN_S),
        ("9" * 5000, MAX_EXPIRES_IN_S),
        (None, None),
    ],
)
def test_the_parser_clamps_a_lifetime_to_the_longest_kept(
    expires_in: Any, lifetime_s: int | None
) -> None:
    assert _lifetime_s(expires_in) == lifetime_s


@pytest.mark.parametrize("expires_in", ["²", "-1", -1, 1.5, True, "", "1e3", [3600]])
def test_the_parser_refuses_a_lifetime_that_is_not_a_count_of_seconds(expires_in: Any) -> None:
    with pytest.raises(ProviderError) as raised:
        _lifetime_s(expires_in)
    assert raised.value.code == "invalid_response"


async def test_a_provider_lifetime_beyond_the_calendar_still_connects(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    oauth_server.token_lifetime_s = 10**20
    connected = await connect_branch(client, make_token(roles=["service"]), oauth_server)
    assert _expires_in_s(connected) == pytest.approx(MAX_EXPIRES_IN_S, abs=60)
    assert len(await all_connections(app)) == 1


async def test_a_provider_lifetime_of_non_ascii_digits_fails_the_login_cleanly(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    oauth_server.token_lifetime_s = "²"  # type: ignore[assignment]
    token = make_token(roles=["service"])
    created = await register_client(client, token, oauth_server)
    callback = await complete_login(client, token, created["id"], "branch-1")
    assert callback.status_code == 502
    assert callback.json()["reason"] == "invalid_response"
    assert await all_connections(app) == []


async def test_a_provider_lifetime_of_five_thousand_digits_is_clamped(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    oauth_server.token_lifetime_s = "9" * 5000  # type: ignore[assignment]
    connected = await connect_branch(client, make_token(roles=["service"]), oauth_server)
    assert _expires_in_s(connected) == pytest.approx(MAX_EXPIRES_IN_S, abs=60)


def _production(settings: Settings) -> Settings:
    return build_settings(
        settings.database_url,
        environment="production",
        auth_jwt_secret="production-secret-0123456789abcdef0123456789",
        encryption_keys=Keyring.generate_key(),
    )


async def test_outside_development_a_custom_provider_may_not_use_http_to_localhost(
    settings: Settings, oauth_server: LocalOAuthServer
) -> None:
    production = _production(settings)
    headers = bearer(mint_token(production, sub="u", tenants=["tenant-a"], roles=["service"]))
    async with running_app(production) as (_, api):
        created = await api.post(
            "/token-management/clients", json=client_body(oauth_server), headers=headers
        )
        listed = await api.get("/token-management/clients", headers=headers)
    assert created.status_code == 422
    assert created.json()["fields"][0]["field"] == "authorization_url"
    assert listed.json()["items"] == []


async def test_outside_development_an_edit_may_not_point_a_custom_provider_at_localhost(
    settings: Settings, oauth_server: LocalOAuthServer
) -> None:
    production = _production(settings)
    headers = bearer(mint_token(production, sub="u", tenants=["tenant-a"], roles=["service"]))
    # A public address literal: registration resolves the host, and tests must not need DNS.
    https_urls = {
        "authorization_url": "https://1.1.1.1/authorize",
        "token_url": "https://1.1.1.1/token",
    }
    async with running_app(production) as (_, api):
        created = await api.post(
            "/token-management/clients",
            json=client_body(oauth_server, **https_urls, revoke_url=None, refresh_url=None),
            headers=headers,
        )
        assert created.status_code == 201, created.text
        edited = await api.patch(
            f"/token-management/clients/{created.json()['id']}",
            json={"token_url": "http://127.0.0.1:6379/"},
            headers=headers,
        )
        read = await api.get(f"/token-management/clients/{created.json()['id']}", headers=headers)
    assert edited.status_code == 422
    assert read.json()["provider_settings"]["token_url"] == https_urls["token_url"]


# --- the fresh-token read checks its own input (it runs on a DirectRoute) -------------------


async def test_a_token_read_with_a_bad_branch_id_is_a_422_naming_it(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    response = await client.get(
        "/token-management/tokens/%20bad%20branch",
        params={"provider": "local_oauth"},
        headers=bearer(make_token(roles=["service"])),
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "path.branch_id"


async def test_a_token_read_without_a_provider_is_a_422_naming_it(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    response = await client.get(
        "/token-management/tokens/branch-1", headers=bearer(make_token(roles=["service"]))
    )
    assert response.status_code == 422
    assert response.json()["fields"] == [{"field": "query.provider", "message": "field required"}]


@pytest.mark.parametrize("provider", ["Local-OAuth", "x", "a" * 41])
async def test_a_token_read_with_a_malformed_provider_is_a_422(
    client: httpx.AsyncClient, make_token: Any, provider: str
) -> None:
    response = await client.get(
        "/token-management/tokens/branch-1",
        params={"provider": provider},
        headers=bearer(make_token(roles=["service"])),
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "query.provider"


async def test_a_token_read_checks_the_caller_before_the_input(client: httpx.AsyncClient) -> None:
    response = await client.get("/token-management/tokens/%20bad%20branch")
    assert response.status_code == 401


async def test_a_token_read_needs_the_service_role(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    response = await client.get(
        "/token-management/tokens/branch-1",
        params={"provider": "local_oauth"},
        headers=bearer(make_token()),
    )
    assert response.status_code == 403


async def test_the_token_read_is_documented_with_its_parameters(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/token-management/tokens/{branch_id}"]["get"]
    names = {(p["in"], p["name"], p["required"]) for p in operation["parameters"]}
    assert names == {
        ("path", "branch_id", True),
        ("query", "provider", True),
        ("query", "tenant_id", False),
    }
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/TokenOut"
    )
