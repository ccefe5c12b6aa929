"""Single-flight refresh across two app instances sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio

import httpx

from app.core.config import Settings
from app.devtools.oauth_provider import LocalOAuthServer
from tests.conftest import build_settings, free_port, postgres_only, running_app
from tests.oauth_fixtures import connect_branch
from tests.tokens.helpers import connection_row, read_token


async def _split_expired_reads(
    settings: Settings, token: str, oauth_server: LocalOAuthServer, count: int
) -> list[httpx.Response]:
    """`count` concurrent reads of a token that expired at login, alternating between two app
    instances with `settings`, against a slow provider."""
    async with running_app(settings) as (_, first), running_app(settings) as (_, second):
        oauth_server.token_lifetime_s = 0
        await connect_branch(first, token, oauth_server)
        oauth_server.token_lifetime_s = 3600
        # A slow provider widens the window in which every reader finds the token expired.
        oauth_server.delay_s = 0.3
        return list(
            await asyncio.gather(
                *(read_token(first if i % 2 else second, token) for i in range(count))
            )
        )


@postgres_only
async def test_fifty_reads_across_two_instances_make_exactly_one_provider_call(
    database_url: str, make_token, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    responses = await _split_expired_reads(build_settings(database_url), token, oauth_server, 50)

    assert [r.status_code for r in responses] == [200] * 50
    assert oauth_server.refresh_calls == 1
    assert len({r.json()["access_token"] for r in responses}) == 1
    assert len(oauth_server.active_grants()) == 1  # no reuse of a rotated refresh token


@postgres_only
async def test_row_lock_keeps_refresh_single_flight_without_redis(
    database_url: str, make_token, oauth_server: LocalOAuthServer
) -> None:
    settings = build_settings(database_url, redis_url=None)
    token = make_token(roles=["service"])
    responses = await _split_expired_reads(settings, token, oauth_server, 20)

    assert [r.status_code for r in responses] == [200] * 20
    assert oauth_server.refresh_calls == 1
    assert len(oauth_server.active_grants()) == 1


@postgres_only
async def test_a_replica_without_redis_and_one_with_it_still_refresh_once(
    database_url: str, make_token, oauth_server: LocalOAuthServer
) -> None:
    # One replica's Redis is unreachable (nothing listens on that port) while the other's works:
    # the first can only take the row lock, so the second must take it as well.
    with_redis = build_settings(database_url)
    without_redis = build_settings(database_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    token = make_token(roles=["service"])
    async with (
        running_app(without_redis) as (cut_off_app, cut_off),
        running_app(with_redis) as (_, connected),
    ):
        oauth_server.token_lifetime_s = 0
        await connect_branch(connected, token, oauth_server)
        oauth_server.token_lifetime_s = 3600
        oauth_server.delay_s = 0.3

        responses = await asyncio.gather(
            *(read_token(cut_off if i % 2 else connected, token) for i in range(40))
        )
        row = await connection_row(cut_off_app)

    assert [r.status_code for r in responses] == [200] * 40
    assert oauth_server.refresh_calls == 1
    assert row.status == "active"  # never needs_reauth
    assert len(oauth_server.active_grants()) == 1  # no reuse of a rotated refresh token


async def test_refresh_still_works_when_redis_is_unreachable(
    database_url: str, make_token, oauth_server: LocalOAuthServer
) -> None:
    # Nothing listens on port 1: lock calls fail, and the refresh falls back to a row lock
    # (PostgreSQL) or the in-process lock (SQLite, one process).
    settings = build_settings(database_url, redis_url="redis://127.0.0.1:1/0")
    token = make_token(roles=["service"])
    async with running_app(settings) as (_, client):
        oauth_server.token_lifetime_s = 0
        await connect_branch(client, token, oauth_server)
        oauth_server.token_lifetime_s = 3600

        responses = await asyncio.gather(*(read_token(client, token) for _ in range(10)))

    assert [r.status_code for r in responses] == [200] * 10
    assert oauth_server.refresh_calls == 1
