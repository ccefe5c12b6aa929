"""Outside development Junction never calls a custom provider on a private or loopback address."""

from __future__ import annotations

from typing import Any

import httpx

from app.core.auth import mint_token
from app.core.config import Settings
from app.core.crypto import Keyring
from app.devtools.oauth_provider import LocalOAuthServer
from tests.conftest import bearer, build_settings, running_app
from tests.oauth_fixtures import (
    LOCAL_PROVIDER,
    RETURN_URL,
    callback_params,
    client_body,
    connect_branch,
    follow_authorization,
    register_client,
)
from tests.tokens.helpers import all_connections, connection_row, read_token

_STAGING_SECRET = "staging-secret-0123456789abcdef0123456789abcdef"


def _settings_pair(database_url: str) -> tuple[Settings, Settings]:
    """Test (development) and staging settings sharing one encryption key, so a connection made
    under the first (where a loopback provider is allowed) can be used under the second."""
    key = Keyring.generate_key()
    development = build_settings(database_url, encryption_keys=key)
    staging = build_settings(
        database_url, environment="staging", auth_jwt_secret=_STAGING_SECRET, encryption_keys=key
    )
    return development, staging


def _headers(settings: Settings) -> dict[str, str]:
    # Registering and editing clients, like reading tokens, needs the service role.
    return bearer(mint_token(settings, sub="u", tenants=["tenant-a"], roles=["service"]))


def _https_loopback_urls(server: LocalOAuthServer) -> dict[str, Any]:
    port = server.base_url.rsplit(":", 1)[1]
    return {
        "authorization_url": f"https://127.0.0.1:{port}/authorize",
        "token_url": f"https://127.0.0.1:{port}/token",
        "revoke_url": None,
    }


async def test_outside_development_registering_a_loopback_https_token_url_is_a_422(
    database_url: str, oauth_server: LocalOAuthServer
) -> None:
    _, staging = _settings_pair(database_url)
    headers = _headers(staging)
    async with running_app(staging) as (_, api):
        created = await api.post(
            "/token-management/clients",
            json=client_body(oauth_server, **_https_loopback_urls(oauth_server)),
            headers=headers,
        )
        listed = await api.get("/token-management/clients", headers=headers)
    assert created.status_code == 422
    assert created.json()["error"] == "unsafe_destination"
    assert created.json()["fields"][0]["field"] == "token_url"
    assert listed.json()["items"] == []


async def test_outside_development_editing_a_token_url_to_loopback_https_is_a_422(
    database_url: str, oauth_server: LocalOAuthServer
) -> None:
    _, staging = _settings_pair(database_url)
    headers = _headers(staging)
    public = {"authorization_url": "https://1.1.1.1/authorize", "token_url": "https://1.1.1.1/t"}
    async with running_app(staging) as (_, api):
        created = await api.post(
            "/token-management/clients",
            json=client_body(oauth_server, **public, revoke_url=None),
            headers=headers,
        )
        assert created.status_code == 201, created.text
        edited = await api.patch(
            f"/token-management/clients/{created.json()['id']}",
            json={"revoke_url": _https_loopback_urls(oauth_server)["token_url"]},
            headers=headers,
        )
    assert edited.status_code == 422
    assert edited.json()["error"] == "unsafe_destination"


async def test_outside_development_a_refresh_towards_loopback_fails_without_calling_it(
    database_url: str, oauth_server: LocalOAuthServer
) -> None:
    development, staging = _settings_pair(database_url)
    oauth_server.token_lifetime_s = 0
    async with running_app(development) as (_, dev_api):
        await connect_branch(
            dev_api,
            mint_token(development, sub="u", tenants=["tenant-a"], roles=["service"]),
            oauth_server,
        )
    async with running_app(staging) as (staging_app, api):
        response = await read_token(
            api, mint_token(staging, sub="u", tenants=["tenant-a"], roles=["service"])
        )
        row = await connection_row(staging_app)
    assert response.status_code == 503
    assert response.json()["reason"] == "unsafe_destination"
    assert (row.status, row.last_error) == ("refresh_failed", "unsafe_destination")
    assert oauth_server.token_calls == 1  # the login's code exchange, made in development
    assert oauth_server.refresh_calls == 0


async def test_outside_development_a_callback_towards_loopback_redirects_with_the_reason(
    database_url: str, oauth_server: LocalOAuthServer
) -> None:
    development, staging = _settings_pair(database_url)
    async with running_app(development) as (_, dev_api):
        headers = _headers(development)
        created = await register_client(
            dev_api,
            mint_token(development, sub="u", tenants=["tenant-a"], roles=["service"]),
            oauth_server,
        )
        login = await dev_api.get(
            f"/token-management/oauth/login/{created['id']}",
            params={"branch_id": "branch-1", "return_url": RETURN_URL},
            headers=headers,
        )
    callback_url = await follow_authorization(login.json()["authorization_url"])
    parts = httpx.URL(callback_url)
    async with running_app(staging) as (staging_app, api):
        callback = await api.get(f"{parts.path}?{parts.query.decode()}")
        connections = await all_connections(staging_app)
    assert callback.status_code == 303
    redirect = callback_params(callback.headers["location"])
    assert (redirect["status"], redirect["reason"]) == ("error", "unsafe_destination")
    assert oauth_server.token_calls == 0
    assert connections == []


async def test_outside_development_disconnect_skips_revocation_at_a_loopback_provider(
    database_url: str, oauth_server: LocalOAuthServer
) -> None:
    development, staging = _settings_pair(database_url)
    async with running_app(development) as (_, dev_api):
        await connect_branch(
            dev_api,
            mint_token(development, sub="u", tenants=["tenant-a"], roles=["service"]),
            oauth_server,
        )
    async with running_app(staging) as (staging_app, api):
        response = await api.delete(
            "/token-management/tokens/branch-1",
            params={"provider": LOCAL_PROVIDER},
            headers=_headers(staging),
        )
        connections = await all_connections(staging_app)
    assert response.status_code == 200
    assert response.json()["revoked_at_provider"] is False
    assert oauth_server.calls["revoke"] == 0
    assert connections == []
