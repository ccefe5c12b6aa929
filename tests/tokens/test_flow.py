"""Login → callback → read against the local authorization server."""

from __future__ import annotations

import httpx

from tests.conftest import bearer
from tests.oauth_fixtures import (
    LOCAL_PROVIDER,
    RETURN_URL,
    callback_params,
    complete_login,
    connect_branch,
    oauth_server,
    register_client,
)
from tests.oauth_server import LocalOAuthServer

__all__ = ["oauth_server"]


async def test_login_callback_then_read_returns_the_providers_token(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server, "branch-1")

    response = await client.get(
        "/token-management/tokens/branch-1", params={"provider": LOCAL_PROVIDER}, headers=bearer(token)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert oauth_server.is_access_token_valid(body["access_token"])
    assert body["provider"] == LOCAL_PROVIDER
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body


async def test_callback_redirects_to_return_url_without_code_or_state(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token()
    registered = await register_client(client, token, oauth_server)

    callback = await complete_login(
        client, token, registered["id"], "branch-1", return_url=RETURN_URL + "?x=1"
    )

    assert callback.status_code == 303
    location = callback.headers["location"]
    params = callback_params(location)
    assert location.startswith(RETURN_URL)
    assert params["status"] == "connected" and params["x"] == "1"
    assert "code" not in params and "state" not in params
    assert callback.headers["referrer-policy"] == "no-referrer"
    assert callback.headers["cache-control"] == "no-store"
