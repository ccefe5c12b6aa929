"""The provider registry: built-ins, capabilities, and settings overrides."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.core.config import ConfigurationError
from app.devtools.oauth_provider import LocalOAuthServer
from app.tokens.providers import ProviderRegistry
from tests.conftest import bearer, build_settings, running_app
from tests.oauth_fixtures import connect_branch, register_client
from tests.tokens.helpers import read_token

BUILT_IN = {
    "google_search_console",
    "google_business_profile",
    "bing_webmaster",
    "wordpress",
    "wix",
}


async def test_providers_route_lists_the_built_ins_with_capabilities(
    client: httpx.AsyncClient, make_token
) -> None:
    response = await client.get("/token-management/providers", headers=bearer(make_token()))

    assert response.status_code == 200
    providers = {p["name"]: p for p in response.json()["providers"]}
    assert set(providers) == BUILT_IN
    assert providers["wordpress"]["tokens_expire"] is False
    assert providers["wix"]["body_format"] == "json"
    assert providers["bing_webmaster"]["refresh_url"] != providers["bing_webmaster"]["token_url"]
    assert providers["google_search_console"]["extra_authorize_params"] == {
        "access_type": "offline",
        "prompt": "consent",
    }


async def test_providers_route_needs_a_bearer_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/token-management/providers")).status_code == 401


def test_override_of_an_unknown_provider_is_a_configuration_error(database_url: str) -> None:
    settings = build_settings(database_url, oauth_provider_overrides={"nope": {"token_url": "x"}})

    with pytest.raises(ConfigurationError):
        ProviderRegistry(settings)


def test_override_with_a_plain_http_remote_url_is_refused(database_url: str) -> None:
    settings = build_settings(
        database_url,
        oauth_provider_overrides={"wix": {"token_url": "http://example.com/token"}},
    )

    with pytest.raises(ConfigurationError):
        ProviderRegistry(settings)


async def test_overridden_built_in_provider_runs_the_whole_flow(
    database_url: str, make_token, oauth_server: LocalOAuthServer
) -> None:
    settings = build_settings(
        database_url,
        oauth_provider_overrides={"google_search_console": oauth_server.provider_urls()},
    )
    token = make_token(roles=["service"])
    async with running_app(settings) as (_, client):
        oauth_server.token_lifetime_s = 0
        await connect_branch(client, token, oauth_server, provider="google_search_console")
        oauth_server.token_lifetime_s = 3600

        response = await read_token(client, token, provider="google_search_console")

    assert response.status_code == 200, response.text
    assert oauth_server.refresh_calls == 1
    assert oauth_server.last_authorize_params["access_type"] == "offline"
    assert oauth_server.last_authorize_params["prompt"] == "consent"
    # Google takes the client credentials in the body.
    assert oauth_server.last_token_request["form"]["client_id"] == oauth_server.client_id


async def test_json_body_provider_sends_json_to_the_token_endpoint(
    database_url: str, make_token, oauth_server: LocalOAuthServer
) -> None:
    settings = build_settings(
        database_url, oauth_provider_overrides={"wix": oauth_server.provider_urls()}
    )
    oauth_server.require_pkce = False
    token = make_token(roles=["service"])
    async with running_app(settings) as (_, client):
        registered = await register_client(client, token, oauth_server, provider="wix")
        login = await client.get(
            f"/token-management/oauth/login/{registered['id']}",
            params={"branch_id": "site-1"},
            headers=bearer(token),
        )

    params = parse_qs(urlsplit(login.json()["authorization_url"]).query)
    assert params["appId"] == [oauth_server.client_id]
    assert "code_challenge" not in params


async def test_basic_client_auth_sends_credentials_in_the_header(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    oauth_server.client_auth = "basic"
    token = make_token(roles=["service"])
    registered = await register_client(client, token, oauth_server, client_auth="basic")

    await connect_branch(client, token, oauth_server, client_pk=registered["id"])

    assert oauth_server.last_token_request["basic_auth"] is True
    assert "client_secret" not in oauth_server.last_token_request["form"]
