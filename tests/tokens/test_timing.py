"""The timing rule (app/tokens/timing.py): when a token is due, the minimum interval, the status,
and the SQL twin of the status agreeing with it."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from app.core.config import Settings
from app.core.db import new_id, utcnow
from app.state import app_state
from app.tokens import timing
from app.tokens.models import OAuthClient, OAuthConnection
from app.tokens.providers import ProviderSpec

SPEC = ProviderSpec(
    name="p",
    display_name="p",
    authorization_url="https://a",
    token_url="https://t",
    refresh_margin_s=300,
)


@dataclass(frozen=True)
class Token:
    expires_at: datetime | None
    token_lifetime_s: int | None
    last_refreshed_at: datetime | None


def issued(at: datetime, lifetime_s: int | None) -> Token:
    """A token issued (or refreshed) at `at` with `lifetime_s`."""
    expires_at = None if lifetime_s is None else at + timedelta(seconds=lifetime_s)
    return Token(expires_at, lifetime_s, at)


def due_after_s(spec: ProviderSpec, lifetime_s: int, settings: Settings) -> float:
    now = utcnow()
    token = issued(now, lifetime_s)
    assert token.expires_at is not None
    return (timing.refresh_at(spec, token.expires_at, lifetime_s, settings) - now).total_seconds()


def test_a_token_shorter_lived_than_its_margin_is_due_half_way(settings: Settings) -> None:
    assert due_after_s(SPEC, 60, settings) == 30  # not at once: 300 s margin, 60 s token
    assert due_after_s(SPEC, 5, settings) == 2.5


def test_a_long_lived_token_is_due_its_providers_margin_before_expiry(settings: Settings) -> None:
    assert due_after_s(SPEC, 3600, settings) == 3600 - 300
    wix = replace(SPEC, refresh_margin_s=60)
    assert due_after_s(wix, 300, settings) == 240  # Wix's 5-minute tokens, its 60 s margin


def test_the_margin_never_goes_below_the_floor(settings: Settings) -> None:
    no_margin = replace(SPEC, refresh_margin_s=0)
    floor_s = settings.token_refresh_margin_floor_s
    assert floor_s == 2
    assert due_after_s(no_margin, 3600, settings) == 3600 - floor_s
    # Below twice the floor half the lifetime wins: never due before half its life.
    assert due_after_s(no_margin, 3, settings) == 1.5


def test_an_unknown_lifetime_uses_the_providers_margin(settings: Settings) -> None:
    expires_at = utcnow() + timedelta(seconds=60)
    assert timing.refresh_at(SPEC, expires_at, None, settings) == expires_at - timedelta(
        seconds=300
    )


def test_a_freshly_issued_token_is_never_due(settings: Settings) -> None:
    now = utcnow()
    for lifetime_s in [1, 2, 3, 4, 5, 10, 59, 60, 61, 299, 300, 301, 599, 600, 601, 3600, 86400]:
        token = issued(now, lifetime_s)
        assert not timing.needs_refresh(SPEC, token, now, settings), lifetime_s
        assert not timing.should_refresh(SPEC, token, now, settings), lifetime_s
        assert timing.serve_for_s(SPEC, token, now, settings) > 0, lifetime_s


def test_a_due_token_waits_for_the_minimum_interval(settings: Settings) -> None:
    # A 1 s token refreshed 0.6 s ago: due (at half its life), but the last refresh is recent.
    now = utcnow()
    token = issued(now - timedelta(seconds=0.6), 1)
    interval_s = settings.token_refresh_min_interval_s
    assert interval_s == 1
    assert timing.needs_refresh(SPEC, token, now, settings)
    assert not timing.should_refresh(SPEC, token, now, settings)
    # It is served until it expires (0.4 s), which comes before the end of the interval.
    assert timing.serve_for_s(SPEC, token, now, settings) == 0.4
    strict = replace(SPEC, min_refresh_interval_s=0.5)
    assert timing.should_refresh(strict, token, now, settings)


def test_an_expired_token_is_refreshed_inside_the_minimum_interval(settings: Settings) -> None:
    now = utcnow()
    token = issued(now - timedelta(seconds=0.5), 0)
    assert timing.should_refresh(SPEC, token, now, settings)


def test_the_loop_schedule_honours_the_minimum_interval(settings: Settings) -> None:
    now = utcnow()
    connection = OAuthConnection(
        status="active",
        refresh_token_enc="sealed",
        expires_at=now + timedelta(seconds=1),
        token_lifetime_s=1,
        last_refreshed_at=now,
        created_at=now,
    )
    assert timing.compute_refresh_due_at(connection, SPEC, settings) == now + timedelta(seconds=1)
    assert not timing.refresh_is_due(connection, SPEC, now + timedelta(seconds=0.6), settings)
    assert timing.refresh_is_due(connection, SPEC, now + timedelta(seconds=1), settings)


# --- the status and its SQL twin ------------------------------------------------------------

PROVIDERS = ["google_search_console", "bing_webmaster", "wordpress", "wix"]
CUSTOM_MARGINS: list[int | None] = [None, 0, 1, 2, 5, 60, 300, 1000]
STORED = ["active", "active", "active", "refresh_failed", "needs_reauth"]


async def _random_connections(app: Any, rng: random.Random, now: datetime, count: int) -> None:
    """`count` connections over built-in and custom providers (of every margin), with expiries
    and lifetimes around every boundary: whole seconds plus a quarter from now, against margins
    that are whole or half seconds, so no row sits on a boundary the two clocks could read
    differently."""
    async with app_state(app).sessionmaker() as session, session.begin():
        clients = []
        for provider in PROVIDERS:
            clients.append(_client(provider, {}))
        for i, margin in enumerate(CUSTOM_MARGINS):
            custom: dict[str, Any] = {"authorization_url": "https://a", "token_url": "https://t"}
            if margin is not None:
                custom["refresh_margin_s"] = margin
            clients.append(_client(f"custom_{i}", custom))
        session.add_all(clients)
        await session.flush()
        for i in range(count):
            client = rng.choice(clients)
            lifetime_s = rng.choice(
                [None, None, None, 0, 1, 3, 4, 5, 10, 60, 61, 300, 600, 601, 1200, 3600]
            )
            expires_at = None
            if rng.random() > 0.05:
                # Half of them near the small margins (the floor, 1 s, 5 s), half anywhere.
                offset_s = rng.randint(-5, 10) if rng.random() < 0.5 else rng.randint(-700, 1900)
                expires_at = now + timedelta(seconds=offset_s + 0.25)
            session.add(
                OAuthConnection(
                    id=new_id(),
                    tenant_id="tenant-a",
                    client_id=client.id,
                    provider=client.provider,
                    branch_id=f"branch-{i}",
                    access_token_enc="x",
                    refresh_token_enc="x",
                    expires_at=expires_at,
                    token_lifetime_s=lifetime_s,
                    status=rng.choice(STORED),
                    last_refreshed_at=now - timedelta(seconds=rng.randint(0, 5000)),
                )
            )


def _client(provider: str, provider_settings: dict[str, Any]) -> OAuthClient:
    return OAuthClient(
        id=new_id(),
        tenant_id="tenant-a",
        provider=provider,
        name=provider,
        client_id="app",
        client_secret_enc="x",
        redirect_uri="https://example.com/cb",
        scopes=[],
        return_urls=[],
        provider_settings=provider_settings,
    )


async def test_the_sql_status_agrees_with_the_python_status_over_random_rows(app: Any) -> None:
    rng = random.Random(13)
    now = utcnow()
    await _random_connections(app, rng, now, 1500)
    state = app_state(app)
    registry = state.tokens.registry
    async with state.sessionmaker() as session:
        statement = select(
            OAuthConnection,
            OAuthClient.provider_settings,
            timing.connection_status_sql(session, registry, now).label("reported"),
        ).join(OAuthClient, OAuthClient.id == OAuthConnection.client_id)
        rows = (await session.execute(statement)).all()
    assert len(rows) == 1500
    seen: set[str] = set()
    for connection, provider_settings, reported in rows:
        spec = registry.resolve(connection.provider, provider_settings)
        expected = timing.connection_status(
            connection.status, connection, spec, now, state.settings
        )
        assert reported == expected, (connection.provider, provider_settings, connection.__dict__)
        seen.add(expected)
    assert seen == {"active", "expiring", "expired", "refresh_failed", "needs_reauth"}
