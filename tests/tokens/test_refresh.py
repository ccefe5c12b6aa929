"""Refreshing tokens: expiry, rotation, failures, cooldown, forced refresh, disconnect."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from app.tokens.context import StatusChange, StatusRecorder, TokenChange
from tests.conftest import bearer, build_settings, running_app
from tests.oauth_fixtures import LOCAL_PROVIDER, connect_branch
from tests.tokens.helpers import (
    all_connections,
    connection_row,
    end_cooldown,
    expire_in,
    read_token,
)


async def _connect_expired(client: httpx.AsyncClient, token: str, server: LocalOAuthServer) -> None:
    """A connection whose access token has already expired (the provider gave it 0 s)."""
    server.token_lifetime_s = 0
    await connect_branch(client, token, server)
    server.token_lifetime_s = 3600


async def _connect_expiring(
    app: Any, client: httpx.AsyncClient, token: str, server: LocalOAuthServer
) -> None:
    """A connection whose token is valid but inside the provider's refresh margin: a 3600 s
    token with 30 s left (the local provider's margin is 60 s)."""
    await connect_branch(client, token, server)
    await expire_in(app, 30)


def _record_changes(app: Any) -> list[StatusChange]:
    """The connections' status changes the listeners hear (not the other notices)."""
    changes: list[StatusChange] = []

    def record(session: AsyncSession, change: TokenChange) -> None:
        assert isinstance(session, AsyncSession)
        if isinstance(change, StatusChange):
            changes.append(change)

    async def listener(session: AsyncSession, tenant_id: str) -> StatusRecorder:
        return record

    app_state(app).tokens.on_status_change(listener)
    return changes


async def test_expired_token_is_refreshed_before_it_is_returned(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect_expired(client, token, oauth_server)

    response = await read_token(client, token)

    assert response.status_code == 200, response.text
    assert oauth_server.refresh_calls == 1
    assert oauth_server.is_access_token_valid(response.json()["access_token"])


async def test_fresh_token_read_makes_no_provider_call(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)
    calls = oauth_server.token_calls

    for _ in range(3):
        assert (await read_token(client, token)).status_code == 200

    assert oauth_server.token_calls == calls


async def test_rotated_refresh_token_is_stored_and_used_next_time(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect_expired(client, token, oauth_server)
    oauth_server.token_lifetime_s = 0
    await read_token(client, token)  # rotation 1, and the new token is expired again
    oauth_server.token_lifetime_s = 3600

    response = await read_token(client, token)  # rotation 2 uses the token from rotation 1

    assert response.status_code == 200, response.text
    assert oauth_server.refresh_calls == 2
    assert len(oauth_server.active_grants()) == 1
    assert (await connection_row(app)).status == "active"


async def test_refresh_without_a_new_refresh_token_keeps_the_old_one(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    oauth_server.rotate_refresh_tokens = False
    await _connect_expired(client, token, oauth_server)
    stored_before = (await connection_row(app)).refresh_token_enc
    oauth_server.token_lifetime_s = 0
    await read_token(client, token)
    oauth_server.token_lifetime_s = 3600

    response = await read_token(client, token)

    assert response.status_code == 200
    assert oauth_server.refresh_calls == 2
    assert (await connection_row(app)).refresh_token_enc == stored_before


async def test_concurrent_reads_of_an_expired_token_make_one_provider_call(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect_expired(client, token, oauth_server)

    responses = await asyncio.gather(*(read_token(client, token) for _ in range(50)))

    assert [r.status_code for r in responses] == [200] * 50
    assert oauth_server.refresh_calls == 1
    assert len({r.json()["access_token"] for r in responses}) == 1
    assert len(oauth_server.active_grants()) == 1


async def test_revoked_grant_marks_needs_reauth_and_reads_answer_409(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect_expired(client, token, oauth_server)
    oauth_server.revoke_all_grants()

    first = await read_token(client, token)
    second = await read_token(client, token)

    assert first.status_code == 409
    assert first.json()["error"] == "needs_reauth"
    assert second.status_code == 409
    assert oauth_server.refresh_calls == 1  # the second read did not try again
    row = await connection_row(app)
    assert row.status == "needs_reauth" and row.refresh_due_at is None
    assert row.last_error == "invalid_grant"


async def test_status_change_is_reported_to_listeners(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    changes = _record_changes(app)
    await _connect_expired(client, token, oauth_server)
    oauth_server.revoke_all_grants()

    await read_token(client, token)

    assert len(changes) == 1
    change = changes[0]
    assert (change.previous_status, change.new_status) == ("active", "needs_reauth")
    assert change.reason == "invalid_grant" and change.branch_id == "branch-1"
    assert change.tenant_id == "tenant-a" and change.provider == LOCAL_PROVIDER


async def test_new_login_after_needs_reauth_reports_recovery(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect_expired(client, token, oauth_server)
    oauth_server.revoke_all_grants()
    await read_token(client, token)
    changes = _record_changes(app)
    client_pk = (await connection_row(app)).client_id

    await connect_branch(client, token, oauth_server, client_pk=client_pk)

    assert [(c.previous_status, c.new_status) for c in changes] == [("needs_reauth", "active")]
    assert (await read_token(client, token)).status_code == 200


async def test_provider_500_on_an_expired_token_answers_503_and_keeps_the_refresh_token(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect_expired(client, token, oauth_server)
    stored_refresh = (await connection_row(app)).refresh_token_enc
    oauth_server.fail_status = 500

    response = await read_token(client, token)

    assert response.status_code == 503
    assert response.json()["error"] == "refresh_failed"
    assert response.json()["reason"] == "server_error"
    row = await connection_row(app)
    assert row.status == "refresh_failed" and row.failure_count == 1
    assert row.refresh_token_enc == stored_refresh
    assert row.next_attempt_at is not None and row.refresh_due_at >= row.next_attempt_at


async def test_reads_inside_the_cooldown_do_not_call_the_provider(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect_expired(client, token, oauth_server)
    oauth_server.fail_status = 503
    await read_token(client, token)

    again = await read_token(client, token)

    assert again.status_code == 503
    assert oauth_server.refresh_calls == 1


async def test_refresh_succeeds_after_the_cooldown_with_the_kept_refresh_token(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect_expired(client, token, oauth_server)
    oauth_server.fail_status = 500
    await read_token(client, token)
    oauth_server.fail_status = None
    await end_cooldown(app)

    response = await read_token(client, token)

    assert response.status_code == 200
    row = await connection_row(app)
    assert row.status == "active" and row.failure_count == 0 and row.last_error is None


async def test_backoff_grows_with_each_consecutive_failure(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect_expired(client, token, oauth_server)
    oauth_server.fail_status = 500
    await read_token(client, token)
    first = await connection_row(app)
    await end_cooldown(app)

    await read_token(client, token)

    second = await connection_row(app)
    assert second.failure_count == 2
    assert (second.next_attempt_at - second.updated_at) > (first.next_attempt_at - first.updated_at)


async def test_failed_refresh_of_a_still_valid_token_returns_the_old_token(
    app: Any, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect_expiring(app, client, token, oauth_server)
    old = oauth_server.active_grants()[0].access_tokens[-1]
    oauth_server.fail_status = 500

    response = await read_token(client, token)

    assert response.status_code == 200
    assert response.json()["access_token"] == old
    assert oauth_server.refresh_calls == 1


async def test_provider_timeout_marks_refresh_failed(
    database_url: str, make_token, oauth_server: LocalOAuthServer
) -> None:
    settings = build_settings(database_url, http_timeout_s=0.3)
    async with running_app(settings) as (app, client):
        token = make_token(roles=["service"])
        await _connect_expired(client, token, oauth_server)
        oauth_server.delay_s = 1.0

        response = await read_token(client, token)

        assert response.status_code == 503
        assert response.json()["reason"] == "timeout"
        assert (await connection_row(app)).status == "refresh_failed"
        oauth_server.delay_s = 0


async def test_forced_refresh_calls_the_provider_even_for_a_fresh_token(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)
    before = (await read_token(client, token)).json()["access_token"]

    response = await client.post(
        "/token-management/tokens/refresh",
        json={"branch_id": "branch-1", "provider": LOCAL_PROVIDER},
        headers=bearer(token),
    )

    assert response.status_code == 200, response.text
    assert response.json()["access_token"] != before
    assert oauth_server.refresh_calls == 1


async def test_forced_refresh_of_a_revoked_grant_answers_409(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)
    oauth_server.revoke_all_grants()

    response = await client.post(
        "/token-management/tokens/refresh",
        json={"branch_id": "branch-1", "provider": LOCAL_PROVIDER},
        headers=bearer(token),
    )

    assert response.status_code == 409
    assert response.json()["error"] == "needs_reauth"


async def test_disconnect_revokes_at_the_provider_and_deletes(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)

    response = await client.delete(
        "/token-management/tokens/branch-1",
        params={"provider": LOCAL_PROVIDER},
        headers=bearer(token),
    )

    assert response.status_code == 200
    assert response.json()["revoked_at_provider"] is True
    assert oauth_server.active_grants() == []
    assert await all_connections(app) == []
    assert (await read_token(client, token)).status_code == 404


async def test_token_routes_need_the_service_role(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    await connect_branch(client, make_token(roles=["service"]), oauth_server)

    response = await read_token(client, make_token(roles=[]))

    assert response.status_code == 403


async def test_a_forced_refresh_the_provider_fails_answers_503_like_a_read(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)
    oauth_server.fail_status = 500

    response = await client.post(
        "/token-management/tokens/refresh",
        json={"branch_id": "branch-1", "provider": LOCAL_PROVIDER},
        headers=bearer(token),
    )

    # One status for `refresh_failed` on every route that answers it.
    assert response.status_code == 503, response.text
    body = response.json()
    assert (body["error"], body["reason"]) == ("refresh_failed", "server_error")
    assert body["retry_at"] is not None
