"""Refresh failures, classified: invalid_grant re-read before needs_reauth, 429 Retry-After."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import httpx
from sqlalchemy import text

from app.core.db import utcnow
from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from app.tokens import oauth
from app.tokens.sealing import open_refresh_token
from tests.conftest import IS_POSTGRES, bearer
from tests.monitoring.factories import list_event_rows
from tests.monitoring.test_loop import make_due, monitor_of
from tests.oauth_fixtures import LOCAL_PROVIDER, complete_login
from tests.tokens.helpers import connect_expired, connection_row, read_token

WAIT_S = 15.0  # an upper bound for background work, never a speed expectation


async def _until_a_statement_waits_for_a_lock(app: Any) -> None:
    """PostgreSQL: until some session of this database waits on a lock (the login's UPDATE
    queued behind the refresh's row lock)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        async with app_state(app).engine.connect() as conn:
            if (await conn.scalar(query)) > 0:
                return
        assert asyncio.get_running_loop().time() < deadline, "nothing waited for the row lock"
        await asyncio.sleep(0.02)


# --- invalid_grant ----------------------------------------------------------------------------


async def test_invalid_grant_for_a_token_a_login_replaced_during_the_call_keeps_the_new_grant(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # A read refreshes an expired token; while the provider holds its answer a new login for the
    # branch stores a new grant (on SQLite at once; on PostgreSQL it queues behind the row
    # lock); then the provider refuses the refresh token the read presented. The grant is not
    # dead: the re-read row holds the login's tokens, and those are served.
    token = make_token(roles=["service"])
    connected = await connect_expired(client, token, oauth_server)
    gate = threading.Event()
    oauth_server.refresh_gate = gate
    reading = asyncio.create_task(read_token(client, token))
    assert await asyncio.to_thread(oauth_server.refresh_waiting.wait, WAIT_S)
    login = asyncio.create_task(complete_login(client, token, connected["client_pk"], "branch-1"))
    if IS_POSTGRES:
        await _until_a_statement_waits_for_a_lock(app)
    else:
        assert (await login).status_code == 200
    oauth_server.fail_status, oauth_server.fail_error = 400, "invalid_grant"
    gate.set()

    response = await reading
    assert (await login).status_code == 200
    oauth_server.fail_status = None

    assert response.status_code == 200, response.text
    assert oauth_server.is_access_token_valid(response.json()["access_token"])
    row = await connection_row(app)
    assert row.status == "active" and row.last_error is None
    newest_grant = list(oauth_server.grants.values())[-1]
    assert open_refresh_token(app_state(app).tokens.keyring, row) == newest_grant.refresh_token
    events = [(e.type, e.reason) for e in await list_event_rows(app)]
    assert events == [("connected", "new"), ("connected", "reauthorized")]


async def test_invalid_grant_for_the_token_the_row_still_holds_needs_reauth(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_expired(client, token, oauth_server)
    oauth_server.revoke_all_grants()

    response = await read_token(client, token)

    assert response.status_code == 409
    assert response.json()["error"] == "needs_reauth"
    assert (await connection_row(app)).status == "needs_reauth"
    assert [e.type for e in await list_event_rows(app)] == ["connected", "needs_reauth"]


# --- 429 and Retry-After ----------------------------------------------------------------------


async def _rate_limited_read(
    client: httpx.AsyncClient, token: str, server: LocalOAuthServer, retry_after: str
) -> httpx.Response:
    server.fail_status, server.fail_error = 429, "rate_limited"
    server.fail_headers = {"Retry-After": retry_after}
    return await read_token(client, token)


async def test_a_429_with_retry_after_in_seconds_holds_every_call_until_then(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_expired(client, token, oauth_server)

    response = await _rate_limited_read(client, token, oauth_server, "600")

    assert response.status_code == 503
    assert response.json()["error"] == "refresh_failed"
    assert response.json()["reason"] == "rate_limited"
    assert 590 <= int(response.headers["Retry-After"]) <= 600
    row = await connection_row(app)
    assert row.next_attempt_at is not None
    # Longer than the 30 s cooldown a failure gets by itself: the provider's word holds.
    assert row.next_attempt_at - utcnow() > timedelta(seconds=590)
    assert row.refresh_due_at is not None and row.refresh_due_at >= row.next_attempt_at

    calls = oauth_server.refresh_calls
    oauth_server.fail_status = None
    again = await read_token(client, token)
    await make_due(app)  # even a loop that found it due calls nobody before then
    tick = await monitor_of(app).run_once()

    assert again.status_code == 503 and "Retry-After" in again.headers
    assert tick.due == 1 and tick.refreshed == 0
    assert oauth_server.refresh_calls == calls


async def test_a_forced_refresh_still_reaches_a_provider_that_asked_to_wait(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # A forced refresh is the operator's explicit request, as with the failure cooldown.
    token = make_token(roles=["service"])
    await connect_expired(client, token, oauth_server)
    await _rate_limited_read(client, token, oauth_server, "600")
    oauth_server.fail_status = None

    forced = await client.post(
        "/token-management/tokens/refresh",
        json={"branch_id": "branch-1", "provider": LOCAL_PROVIDER},
        headers=bearer(token),
    )

    assert forced.status_code == 200, forced.text


async def test_a_429_with_an_http_date_retry_after_is_honoured(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_expired(client, token, oauth_server)
    when = format_datetime(utcnow() + timedelta(seconds=900), usegmt=True)

    response = await _rate_limited_read(client, token, oauth_server, when)

    assert response.status_code == 503
    assert 880 <= int(response.headers["Retry-After"]) <= 900
    row = await connection_row(app)
    assert row.next_attempt_at is not None
    assert timedelta(seconds=880) < row.next_attempt_at - utcnow() <= timedelta(seconds=900)


async def test_a_retry_after_of_days_is_bounded(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_expired(client, token, oauth_server)

    response = await _rate_limited_read(client, token, oauth_server, str(30 * 86400))

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) <= oauth.MAX_RETRY_AFTER_S


def test_retry_after_values_are_read_and_bounded() -> None:
    now = 1_800_000_000.0
    assert oauth.retry_after_seconds("120", now) == 120
    assert oauth.retry_after_seconds("0", now) == oauth.MIN_RETRY_AFTER_S
    assert oauth.retry_after_seconds("9" * 40, now) == oauth.MAX_RETRY_AFTER_S
    assert oauth.retry_after_seconds("Wed, 15 Jan 2027 08:00:00 GMT", now) is not None
    past = "Sun, 06 Nov 1994 08:49:37 GMT"
    assert oauth.retry_after_seconds(past, now) == oauth.MIN_RETRY_AFTER_S
    for unreadable in (None, "", "soon", "-5", "1.5", "²"):
        assert oauth.retry_after_seconds(unreadable, now) is None


async def test_a_503_without_retry_after_backs_off_as_before(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_expired(client, token, oauth_server)
    oauth_server.fail_status = 503

    response = await read_token(client, token)

    assert response.status_code == 503
    row = await connection_row(app)
    assert row.next_attempt_at is not None
    cooldown_s = app_state(app).settings.token_refresh_cooldown_s
    assert row.next_attempt_at - utcnow() <= timedelta(seconds=cooldown_s)
