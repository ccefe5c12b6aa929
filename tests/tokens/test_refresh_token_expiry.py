"""refresh_token_expires_in: kept, reported, and warned of once per refresh token."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
from sqlalchemy import update

from app.core.db import utcnow
from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from app.tokens import oauth, timing
from app.tokens.models import OAuthConnection
from app.tokens.providers import ProviderSpec
from tests.conftest import bearer, build_settings, running_app
from tests.monitoring.factories import list_event_rows
from tests.monitoring.test_loop import make_due, monitor_of
from tests.oauth_fixtures import LOCAL_PROVIDER, connect_branch
from tests.tokens.helpers import connection_row, read_token

DAY_S = 86400
WINDOW = timedelta(days=7)  # REFRESH_TOKEN_EXPIRY_WARNING_S's default


def _close(moment: datetime | None, expected: datetime) -> bool:
    return moment is not None and abs(moment - expected) < timedelta(minutes=1)


async def _warnings(app: Any) -> list[str | None]:
    return [e.reason for e in await list_event_rows(app) if e.type == "refresh_token_expiring"]


async def _set_row(app: Any, **values: Any) -> None:
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(update(OAuthConnection).values(**values))


async def _connect(
    client: httpx.AsyncClient, server: LocalOAuthServer, token: str, *, lifetime_s: int | None
) -> None:
    """A connection whose access token expires at once (reads refresh it)."""
    server.token_lifetime_s = 0
    await connect_branch(client, token, server)
    server.token_lifetime_s = lifetime_s


# --- stored -----------------------------------------------------------------------------------


async def test_the_code_exchanges_refresh_token_lifetime_is_kept(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    oauth_server.refresh_token_expires_in = 30 * DAY_S

    await connect_branch(client, make_token(roles=["service"]), oauth_server)

    row = await connection_row(app)
    assert _close(row.refresh_token_expires_at, utcnow() + timedelta(days=30))


async def test_a_rotated_refresh_token_without_a_lifetime_has_an_unknown_expiry(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    oauth_server.refresh_token_expires_in = 30 * DAY_S
    await _connect(client, oauth_server, token, lifetime_s=3600)
    oauth_server.refresh_token_expires_in = None

    assert (await read_token(client, token)).status_code == 200

    assert (await connection_row(app)).refresh_token_expires_at is None


async def test_a_refresh_without_a_new_refresh_token_keeps_the_expiry(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    oauth_server.rotate_refresh_tokens = False
    oauth_server.refresh_token_expires_in = 30 * DAY_S
    await _connect(client, oauth_server, token, lifetime_s=3600)
    kept = (await connection_row(app)).refresh_token_expires_at

    assert (await read_token(client, token)).status_code == 200

    assert (await connection_row(app)).refresh_token_expires_at == kept


async def test_a_rotated_refresh_token_with_a_lifetime_replaces_expiry_and_warning(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    oauth_server.refresh_token_expires_in = 30 * DAY_S
    await _connect(client, oauth_server, token, lifetime_s=3600)
    now = utcnow()
    await _set_row(
        app, refresh_token_expires_at=now + timedelta(days=2), refresh_token_warned_at=now
    )

    assert (await read_token(client, token)).status_code == 200

    row = await connection_row(app)
    assert _close(row.refresh_token_expires_at, utcnow() + timedelta(days=30))
    assert row.refresh_token_warned_at is None


def test_a_malformed_refresh_token_lifetime_is_ignored() -> None:
    spec = ProviderSpec(
        name="x", display_name="X", authorization_url="https://a", token_url="https://t"
    )
    body = {"access_token": "at", "token_type": "Bearer"}
    for value, kept in (("86400", 86400), (86400, 86400), ("soon", None), (-1, None), (True, None)):
        parsed = oauth.parse_token_response({**body, "refresh_token_expires_in": value}, spec)
        assert parsed.refresh_token_expires_in == kept


# --- warned -----------------------------------------------------------------------------------


async def test_a_refresh_keeping_a_refresh_token_inside_the_window_warns_once(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    oauth_server.rotate_refresh_tokens = False
    await _connect(client, oauth_server, token, lifetime_s=3600)
    lapses_at = utcnow() + timedelta(days=3)
    await _set_row(app, refresh_token_expires_at=lapses_at)

    for _ in range(3):  # each read finds the access token expired and refreshes it
        await _set_row(app, expires_at=utcnow() - timedelta(seconds=1))
        assert (await read_token(client, token)).status_code == 200

    assert oauth_server.refresh_calls == 3
    [reason] = await _warnings(app)
    assert reason is not None and lapses_at.isoformat() in reason
    [event] = [e for e in await list_event_rows(app) if e.type == "refresh_token_expiring"]
    assert (event.branch_id, event.provider) == ("branch-1", LOCAL_PROVIDER)
    assert (await connection_row(app)).refresh_token_warned_at is not None


async def test_a_failed_refresh_inside_the_window_warns_too(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect(client, oauth_server, token, lifetime_s=3600)
    await _set_row(app, refresh_token_expires_at=utcnow() + timedelta(days=1))
    oauth_server.fail_status = 500

    assert (await read_token(client, token)).status_code == 503

    assert len(await _warnings(app)) == 1


async def test_a_login_issuing_a_short_lived_refresh_token_does_not_warn(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # It was issued just now; a provider that rotates renews it with every refresh.
    oauth_server.refresh_token_expires_in = DAY_S
    await connect_branch(client, make_token(roles=["service"]), oauth_server)

    assert await _warnings(app) == []


async def test_the_loop_visits_as_the_window_opens_however_long_the_access_token_lives(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # Access tokens that never expire, an idle refresh a month apart, a refresh token that
    # lapses in 8 days and does not rotate: the loop is due when the 7-day window opens.
    settings = build_settings(database_url, monitor_idle_refresh_s=30 * DAY_S)
    oauth_server.token_lifetime_s = None
    oauth_server.rotate_refresh_tokens = False
    oauth_server.refresh_token_expires_in = 8 * DAY_S
    async with running_app(settings) as (app, client):
        await connect_branch(client, make_token(roles=["service"]), oauth_server)
        row = await connection_row(app)
        assert row.refresh_token_expires_at is not None
        assert row.refresh_due_at == row.refresh_token_expires_at - WINDOW

        # The clock reaches the window (the row as it would be a day later).
        await _set_row(
            app,
            last_refreshed_at=utcnow() - timedelta(days=1),
            refresh_token_expires_at=utcnow() + WINDOW - timedelta(minutes=5),
        )
        await make_due(app)
        monitor = monitor_of(app)
        visited = await monitor.run_once()
        after = await connection_row(app)
        await make_due(app)
        again = await monitor.run_once()

        assert (visited.due, visited.refreshed) == (1, 1)
        assert len(await _warnings(app)) == 1
        assert after.refresh_token_warned_at is not None
        # Warned: its next visit is the idle refresh again, not the window.
        assert after.refresh_due_at is not None
        assert after.refresh_due_at > utcnow() + timedelta(days=29)
        assert again.refreshed == 1 and len(await _warnings(app)) == 1


async def test_a_rotating_provider_renews_the_grant_at_the_window_without_a_warning(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    settings = build_settings(database_url, monitor_idle_refresh_s=30 * DAY_S)
    oauth_server.token_lifetime_s = None
    oauth_server.refresh_token_expires_in = 8 * DAY_S
    async with running_app(settings) as (app, client):
        await connect_branch(client, make_token(roles=["service"]), oauth_server)
        await _set_row(
            app,
            last_refreshed_at=utcnow() - timedelta(days=1),
            refresh_token_expires_at=utcnow() + timedelta(days=6),
        )
        await make_due(app)

        tick = await monitor_of(app).run_once()

        assert tick.refreshed == 1
        assert await _warnings(app) == []
        row = await connection_row(app)
        assert _close(row.refresh_token_expires_at, utcnow() + timedelta(days=8))


# --- reported ---------------------------------------------------------------------------------


def test_refresh_token_expiring_is_inside_the_window(settings: Any) -> None:
    now = utcnow()

    def row(expires_in: timedelta | None) -> Any:
        return SimpleNamespace(
            refresh_token_expires_at=None if expires_in is None else now + expires_in
        )

    assert timing.refresh_token_expiring(row(timedelta(days=3)), settings, now)
    assert timing.refresh_token_expiring(row(WINDOW), settings, now)
    assert timing.refresh_token_expiring(row(-timedelta(days=1)), settings, now)
    assert not timing.refresh_token_expiring(row(WINDOW + timedelta(minutes=1)), settings, now)
    assert not timing.refresh_token_expiring(row(None), settings, now)


async def test_connected_platforms_report_the_refresh_tokens_expiry(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    oauth_server.refresh_token_expires_in = 3 * DAY_S
    await connect_branch(client, token, oauth_server)

    response = await client.get(
        "/platforms/connected", params={"branch_id": "branch-1"}, headers=bearer(token)
    )

    [entry] = [p for p in response.json()["platforms"] if p["provider"] == LOCAL_PROVIDER]
    assert entry["refresh_token_expiring"] is True
    reported = datetime.fromisoformat(entry["refresh_token_expires_at"])
    assert _close(reported, utcnow() + timedelta(days=3))
