"""The service API other domains use: refresh_connection, compute_refresh_due_at, TokenContext."""

from __future__ import annotations

from datetime import timedelta

import httpx

from app.core.db import utcnow
from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from app.tokens.models import OAuthConnection
from app.tokens.providers import ProviderSpec
from app.tokens.refresh import refresh_connection
from app.tokens.timing import compute_refresh_due_at
from tests.conftest import bearer
from tests.oauth_fixtures import (
    LOCAL_PROVIDER,
    LOCAL_REFRESH_MARGIN_S,
    connect_branch,
)
from tests.tokens.helpers import connection_row, read_token

SPEC = ProviderSpec(
    name="p",
    display_name="p",
    authorization_url="https://a",
    token_url="https://t",
    refresh_margin_s=300,
)


def _connection(**values) -> OAuthConnection:
    now = utcnow()
    defaults = {
        "status": "active",
        "refresh_token_enc": "sealed",
        "expires_at": now + timedelta(hours=1),
        "last_refreshed_at": now,
        "created_at": now,
        "next_attempt_at": None,
    }
    defaults.update(values)
    return OAuthConnection(**defaults)


def test_refresh_is_due_a_margin_before_expiry(settings) -> None:
    connection = _connection()

    due = compute_refresh_due_at(connection, SPEC, settings)

    assert due == connection.expires_at - timedelta(seconds=300)


def test_idle_refresh_token_is_due_after_the_idle_period(settings) -> None:
    connection = _connection(expires_at=None)

    due = compute_refresh_due_at(connection, SPEC, settings)

    assert due == connection.last_refreshed_at + timedelta(seconds=settings.monitor_idle_refresh_s)


def test_nothing_is_due_without_a_refresh_token_or_after_revocation(settings) -> None:
    assert compute_refresh_due_at(_connection(refresh_token_enc=None), SPEC, settings) is None
    assert compute_refresh_due_at(_connection(status="needs_reauth"), SPEC, settings) is None


def test_backoff_pushes_the_due_time_to_the_next_attempt(settings) -> None:
    later = utcnow() + timedelta(hours=5)
    connection = _connection(status="refresh_failed", next_attempt_at=later)

    assert compute_refresh_due_at(connection, SPEC, settings) == later


async def test_login_stores_refresh_due_at(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    await connect_branch(client, make_token(roles=["service"]), oauth_server)

    row = await connection_row(app)

    assert row.refresh_due_at == row.expires_at - timedelta(seconds=LOCAL_REFRESH_MARGIN_S)
    assert row.lease_owner is None and row.lease_expires_at is None


async def test_refresh_connection_skips_a_fresh_token(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    await connect_branch(client, make_token(roles=["service"]), oauth_server)
    row = await connection_row(app)

    outcome = await refresh_connection(app_state(app).tokens, row.id, trigger="monitor")

    assert (outcome.result, outcome.status) == ("skipped", "active")
    assert oauth_server.refresh_calls == 0


async def test_refresh_connection_with_force_refreshes(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    await connect_branch(client, make_token(roles=["service"]), oauth_server)
    row = await connection_row(app)

    outcome = await refresh_connection(app_state(app).tokens, row.id, force=True)

    assert (outcome.result, outcome.status, outcome.error) == ("refreshed", "active", None)
    assert oauth_server.refresh_calls == 1
    assert (await connection_row(app)).last_refreshed_at > row.last_refreshed_at


async def test_refresh_connection_due_for_idle_keep_alive_refreshes(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    await connect_branch(client, make_token(roles=["service"]), oauth_server)
    row = await connection_row(app)
    async with app_state(app).sessionmaker() as session, session.begin():
        stored = await session.get(OAuthConnection, row.id)
        # A day has passed since the login.
        stored.last_refreshed_at = utcnow() - timedelta(days=1)
        stored.refresh_due_at = utcnow()

    outcome = await refresh_connection(app_state(app).tokens, row.id, trigger="monitor")

    assert outcome.result == "refreshed"


async def test_refresh_connection_reports_needs_reauth(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    await connect_branch(client, make_token(roles=["service"]), oauth_server)
    row = await connection_row(app)
    oauth_server.revoke_all_grants()

    outcome = await refresh_connection(app_state(app).tokens, row.id, force=True)

    assert (outcome.result, outcome.status, outcome.error) == (
        "needs_reauth",
        "needs_reauth",
        "invalid_grant",
    )


async def test_refresh_connection_of_an_unknown_id_is_not_found(app) -> None:
    outcome = await refresh_connection(app_state(app).tokens, "0" * 32)

    assert outcome.result == "not_found"


async def test_token_without_expiry_or_refresh_token_is_served_and_cannot_be_forced(
    client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    oauth_server.token_lifetime_s = None
    oauth_server.issue_refresh_tokens = False
    await connect_branch(client, token, oauth_server)

    read = await read_token(client, token)
    forced = await client.post(
        "/token-management/tokens/refresh",
        json={"branch_id": "branch-1", "provider": LOCAL_PROVIDER},
        headers=bearer(token),
    )

    assert read.status_code == 200 and read.json()["expires_at"] is None
    assert forced.status_code == 409
    assert forced.json()["error"] == "refresh_not_supported"
    assert oauth_server.refresh_calls == 0


async def test_expired_token_without_refresh_token_needs_reauth(
    app, client: httpx.AsyncClient, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    oauth_server.token_lifetime_s = 0
    oauth_server.issue_refresh_tokens = False
    await connect_branch(client, token, oauth_server)

    response = await read_token(client, token)

    assert response.status_code == 409
    assert response.json()["error"] == "needs_reauth"
    assert (await connection_row(app)).last_error == "no_refresh_token"
