"""Sentinel secrets run through every flow must never show up in logs or the wrong responses."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from app.devtools.oauth_provider import LocalOAuthServer
from tests.conftest import bearer
from tests.oauth_fixtures import (
    LOCAL_PROVIDER,
    client_body,
    complete_login,
    connect_branch,
)
from tests.tokens.helpers import end_cooldown, read_token

SENTINEL_SECRET = "SENTINEL-client-secret-9f1c2e7d"


@pytest.fixture
def sentinel_server() -> Iterator[LocalOAuthServer]:
    server = LocalOAuthServer(client_secret=SENTINEL_SECRET).start()
    server.echo_secrets_in_errors = True  # a sloppy provider that echoes requests in errors
    try:
        yield server
    finally:
        server.stop()


async def test_secrets_never_reach_logs_or_non_token_responses(
    app,
    client: httpx.AsyncClient,
    make_token,
    sentinel_server: LocalOAuthServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = sentinel_server
    token = make_token(roles=["service"])
    other_responses: list[httpx.Response] = []
    token_responses: list[httpx.Response] = []
    base = "/token-management"

    server.token_lifetime_s = 0
    connected = await connect_branch(client, token, server)
    server.token_lifetime_s = 3600
    client_pk = connected["client_pk"]
    token_responses.append(await read_token(client, token))  # refresh + read
    token_responses.append(
        await client.post(
            f"{base}/tokens/refresh",
            json={"branch_id": "branch-1", "provider": LOCAL_PROVIDER},
            headers=bearer(token),
        )
    )
    other_responses.append(await client.get(f"{base}/clients", headers=bearer(token)))
    other_responses.append(await client.get(f"{base}/clients/{client_pk}", headers=bearer(token)))
    other_responses.append(
        await client.patch(f"{base}/clients/{client_pk}", json={"name": "n"}, headers=bearer(token))
    )
    # Failures with the provider echoing the request (refresh token, client secret) back.
    server.fail_status = 500
    other_responses.append(
        await client.post(
            f"{base}/tokens/refresh",
            json={"branch_id": "branch-1", "provider": LOCAL_PROVIDER},
            headers=bearer(token),
        )
    )
    server.fail_status = None
    server.token_lifetime_s = 0
    other_responses.append(await complete_login(client, token, client_pk, "branch-2"))
    server.token_lifetime_s = 3600
    await end_cooldown(app, "branch-2")
    server.fail_status, server.fail_error = 400, "invalid_grant"
    other_responses.append(await read_token(client, token, "branch-2"))
    server.fail_status, server.fail_error = None, None
    other_responses.append(
        await client.post(
            f"{base}/clients",
            json=client_body(server, token_url="http://example.com/x"),
            headers=bearer(token),
        )
    )
    other_responses.append(
        await client.delete(
            f"{base}/tokens/branch-1", params={"provider": LOCAL_PROVIDER}, headers=bearer(token)
        )
    )

    access_tokens = list(server.access_index)
    refresh_tokens = list(server.refresh_index)
    assert access_tokens and refresh_tokens
    assert any(r.status_code >= 400 for r in other_responses)
    logs = caplog.text
    for secret in [SENTINEL_SECRET, *access_tokens, *refresh_tokens]:
        assert secret not in logs
        for response in other_responses:
            assert secret not in response.text
    for response in token_responses:
        assert response.status_code == 200
        assert SENTINEL_SECRET not in response.text
        for refresh_token in refresh_tokens:
            assert refresh_token not in response.text
