"""A login for a branch that has a connection re-authorizes it in place; connected/disconnected."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from app.core.db import utcnow
from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from app.tokens.models import OAuthConnection
from tests.conftest import bearer
from tests.monitoring.factories import list_event_rows
from tests.oauth_fixtures import LOCAL_PROVIDER, connect_branch
from tests.tokens.helpers import all_connections, connection_row, read_token


async def _events(app: Any) -> list[tuple[str, str | None]]:
    return [(e.type, e.reason) for e in await list_event_rows(app)]


async def _set_row(app: Any, **values: Any) -> None:
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(update(OAuthConnection).values(**values))


async def test_a_first_login_raises_connected_new(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    await connect_branch(client, make_token(roles=["service"]), oauth_server)

    [event] = await list_event_rows(app)
    row = await connection_row(app)
    assert (event.type, event.reason, event.branch_id, event.connection_id) == (
        "connected",
        "new",
        "branch-1",
        row.id,
    )


async def test_a_login_after_needs_reauth_updates_the_same_connection(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    oauth_server.token_lifetime_s = 0
    connected = await connect_branch(client, token, oauth_server)
    oauth_server.token_lifetime_s = 3600
    before = await connection_row(app)
    oauth_server.revoke_all_grants()
    assert (await read_token(client, token)).status_code == 409

    await connect_branch(client, token, oauth_server, client_pk=connected["client_pk"])

    [after] = await all_connections(app)
    assert after.id == before.id and after.created_at == before.created_at
    assert (after.status, after.last_error, after.failure_count) == ("active", None, 0)
    assert after.next_attempt_at is None and after.refresh_due_at is not None
    assert await _events(app) == [
        ("connected", "new"),
        ("needs_reauth", "invalid_grant"),
        ("recovered", "reauthorized"),
        ("connected", "reauthorized"),
    ]
    assert (await read_token(client, token)).status_code == 200


async def test_a_login_after_refresh_failures_resets_the_failure_state(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    oauth_server.token_lifetime_s = 0
    connected = await connect_branch(client, token, oauth_server)
    oauth_server.token_lifetime_s = 3600
    oauth_server.fail_status = 500
    assert (await read_token(client, token)).status_code == 503
    oauth_server.fail_status = None
    failed = await connection_row(app)
    assert failed.failure_count == 1 and failed.next_attempt_at is not None

    await connect_branch(client, token, oauth_server, client_pk=connected["client_pk"])

    row = await connection_row(app)
    assert (row.id, row.status, row.failure_count, row.next_attempt_at, row.last_error) == (
        failed.id,
        "active",
        0,
        None,
        None,
    )
    assert [t for t, _ in await _events(app)] == [
        "connected",
        "refresh_failed",
        "recovered",
        "connected",
    ]
    # Served at once: the cooldown of the old failure does not hold up the new grant.
    assert (await read_token(client, token)).status_code == 200


async def test_a_login_over_an_active_connection_raises_connected_only(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    connected = await connect_branch(client, token, oauth_server)

    await connect_branch(client, token, oauth_server, client_pk=connected["client_pk"])

    assert len(await all_connections(app)) == 1
    assert await _events(app) == [("connected", "new"), ("connected", "reauthorized")]


async def test_a_login_clears_the_old_refresh_tokens_expiry_and_warning(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    connected = await connect_branch(client, token, oauth_server)
    now = utcnow()
    await _set_row(
        app, refresh_token_expires_at=now + timedelta(days=1), refresh_token_warned_at=now
    )

    await connect_branch(client, token, oauth_server, client_pk=connected["client_pk"])

    row = await connection_row(app)
    assert (row.refresh_token_expires_at, row.refresh_token_warned_at) == (None, None)


async def test_disconnect_raises_disconnected(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)
    connection_id = (await connection_row(app)).id

    response = await client.delete(
        "/token-management/tokens/branch-1",
        params={"provider": LOCAL_PROVIDER},
        headers=bearer(token),
    )

    assert response.status_code == 200, response.text
    assert await all_connections(app) == []
    events = await list_event_rows(app)
    assert [(e.type, e.reason, e.connection_id) for e in events] == [
        ("connected", "new", connection_id),
        ("disconnected", "revoked", connection_id),
    ]
    listed = await client.get("/monitoring/events", headers=bearer(token))
    assert [item["type"] for item in listed.json()["items"]] == ["disconnected", "connected"]
