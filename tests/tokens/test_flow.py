"""Login → callback → read against the local authorization server."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import update

from app.core.db import utcnow
from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from app.tokens.models import OAuthConnection, OAuthState
from tests.conftest import bearer
from tests.oauth_fixtures import (
    LOCAL_PROVIDER,
    REDIRECT_URI,
    RETURN_URL,
    callback_params,
    complete_login,
    connect_branch,
    follow_authorization,
    register_client,
)
from tests.tokens.helpers import all_connections, connection_row, read_token


async def _login(
    client: httpx.AsyncClient, token: str, client_pk: str, **params: str
) -> httpx.Response:
    return await client.get(
        f"/token-management/oauth/login/{client_pk}",
        params={"branch_id": "branch-1", **params},
        headers=bearer(token),
    )


async def test_login_callback_then_read_returns_the_providers_token(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server, "branch-1")

    response = await read_token(client, token)

    assert response.status_code == 200, response.text
    body = response.json()
    assert oauth_server.is_access_token_valid(body["access_token"])
    assert body["provider"] == LOCAL_PROVIDER
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "read write"
    assert "refresh_token" not in body
    assert oauth_server.refresh_calls == 0


async def test_callback_redirects_to_return_url_without_code_or_state(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
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


async def test_login_url_carries_pkce_s256_state_and_the_clients_parameters(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    registered = await register_client(client, token, oauth_server)

    response = await _login(client, token, registered["id"])

    assert response.status_code == 200
    body = response.json()
    url = urlsplit(body["authorization_url"])
    params = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert (
        f"{url.scheme}://{url.netloc}{url.path}"
        == oauth_server.provider_urls()["authorization_url"]
    )
    assert set(params) == {
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
    }
    assert params["code_challenge_method"] == "S256"
    assert params["redirect_uri"] == REDIRECT_URI
    assert params["state"] == body["state"]
    assert len(body["state"]) >= 43  # 256 random bits, base64url


async def test_login_with_redirect_true_answers_307_to_the_provider(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    registered = await register_client(client, token, oauth_server)

    response = await _login(client, token, registered["id"], redirect="true")

    assert response.status_code == 307
    assert response.headers["location"].startswith(
        oauth_server.provider_urls()["authorization_url"]
    )


async def test_return_url_outside_the_allowlist_is_refused_at_login(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    registered = await register_client(client, token, oauth_server)

    response = await _login(client, token, registered["id"], return_url="https://evil.example/x")

    assert response.status_code == 422
    assert response.json()["error"] == "return_url_not_allowed"


async def test_replayed_state_gets_400_and_changes_nothing(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    registered = await register_client(client, token, oauth_server)
    login = await _login(client, token, registered["id"])
    callback_url = await follow_authorization(login.json()["authorization_url"])
    parts = urlsplit(callback_url)
    first = await client.get(f"{parts.path}?{parts.query}")
    before = await read_token(client, token)

    replay = await client.get(f"{parts.path}?{parts.query}")

    assert first.status_code == 200
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_state"
    after = await read_token(client, token)
    assert after.json()["access_token"] == before.json()["access_token"]
    assert oauth_server.calls["grant:authorization_code"] == 1


async def test_unknown_state_gets_400(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/token-management/auth/callback", params={"code": "abc", "state": "not-a-state"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_state"


async def test_expired_state_gets_400_and_no_code_exchange(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    registered = await register_client(client, token, oauth_server)
    login = await _login(client, token, registered["id"])
    callback_url = await follow_authorization(login.json()["authorization_url"])
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(update(OAuthState).values(expires_at=utcnow()))
    parts = urlsplit(callback_url)

    response = await client.get(f"{parts.path}?{parts.query}")

    assert response.status_code == 400
    assert response.json()["error"] == "state_expired"
    assert oauth_server.calls["grant:authorization_code"] == 0
    assert await all_connections(app) == []


async def test_provider_error_redirects_with_its_error_code(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    registered = await register_client(client, token, oauth_server)
    oauth_server.deny_authorization = True

    callback = await complete_login(
        client, token, registered["id"], "branch-1", return_url=RETURN_URL
    )

    assert callback.status_code == 303
    params = callback_params(callback.headers["location"])
    assert params["status"] == "error" and params["reason"] == "access_denied"


async def test_provider_error_without_return_url_answers_json_400(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    registered = await register_client(client, token, oauth_server)
    oauth_server.deny_authorization = True

    callback = await complete_login(client, token, registered["id"], "branch-1")

    assert callback.status_code == 400
    assert callback.json()["error"] == "authorization_denied"
    assert callback.json()["reason"] == "access_denied"
    assert await all_connections(app) == []


async def test_a_provider_error_with_a_trailing_newline_is_not_passed_on(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    registered = await register_client(client, token, oauth_server)
    login = await client.get(
        f"/token-management/oauth/login/{registered['id']}",
        params={"branch_id": "branch-1", "return_url": RETURN_URL},
        headers=bearer(token),
    )
    state = login.json()["state"]

    callback = await client.get(
        "/token-management/auth/callback", params={"state": state, "error": "access_denied\n"}
    )

    assert callback.status_code == 303
    params = callback_params(callback.headers["location"])
    assert params["status"] == "error" and params["reason"] == "authorization_error"


async def test_failed_code_exchange_answers_502_with_the_providers_code(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    registered = await register_client(client, token, oauth_server)
    oauth_server.fail_status = 500

    callback = await complete_login(client, token, registered["id"], "branch-1")

    assert callback.status_code == 502
    assert callback.json()["error"] == "token_exchange_failed"
    assert callback.json()["reason"] == "server_error"
    assert await all_connections(app) == []


async def test_wrong_pkce_verifier_is_refused_by_the_provider(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    registered = await register_client(client, token, oauth_server)
    login = await _login(client, token, registered["id"])
    url = login.json()["authorization_url"].replace("code_challenge=", "code_challenge=X")
    callback_url = await follow_authorization(url)
    parts = urlsplit(callback_url)

    response = await client.get(f"{parts.path}?{parts.query}")

    assert response.status_code == 502
    assert response.json()["reason"] == "invalid_grant"
    assert await all_connections(app) == []


async def test_second_login_for_the_same_branch_replaces_its_tokens(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    connected = await connect_branch(client, token, oauth_server)
    first = (await read_token(client, token)).json()["access_token"]

    await connect_branch(client, token, oauth_server, client_pk=connected["client_pk"])

    second = (await read_token(client, token)).json()["access_token"]
    assert second != first
    assert len(await all_connections(app)) == 1


async def test_a_token_read_records_when_the_connection_was_last_used(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)

    response = await read_token(client, token)

    assert response.status_code == 200
    assert (await connection_row(app)).last_used_at is not None


async def test_a_cached_read_writes_last_used_at_once_the_minute_since_the_recorded_one_passes(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)
    # Recorded 59.5 s ago: the read that loads the row leaves it (under a minute) and caches
    # the row; a cached read a second later is past the minute and writes it.
    almost_a_minute_ago = utcnow() - timedelta(seconds=59.5)
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(update(OAuthConnection).values(last_used_at=almost_a_minute_ago))
    assert (await read_token(client, token)).status_code == 200
    hits = app_state(app).tokens.read_cache.hits
    assert (await connection_row(app)).last_used_at == almost_a_minute_ago

    await asyncio.sleep(1.0)
    assert (await read_token(client, token)).status_code == 200

    assert app_state(app).tokens.read_cache.hits == hits + 1  # answered from the read cache
    written = (await connection_row(app)).last_used_at
    assert written is not None and written >= almost_a_minute_ago + timedelta(seconds=59)
    # ... and the next cached read, within the minute, does not write again.
    assert (await read_token(client, token)).status_code == 200
    assert (await connection_row(app)).last_used_at == written
