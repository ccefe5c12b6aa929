"""Short-lived tokens (shorter than their provider's margin): one refresh per crowd across
replicas, the loop alone keeping them valid at about half their lifetime, and the minimum
interval between automatic refreshes. Against the local OAuth server, which rotates refresh
tokens and revokes the grant on reuse; the 5 s cases run in real time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core.db import utcnow
from app.devtools.oauth_provider import LocalOAuthServer
from app.tokens.models import OAuthConnection
from tests.conftest import REDIS_URL, bearer, build_settings, postgres_only, running_app
from tests.oauth_fixtures import LOCAL_REFRESH_MARGIN_S, connect_branch, register_client
from tests.replica_server import ReplicaServer
from tests.tokens.helpers import connection_row, read_token

WAIT_S = 30.0  # an upper bound for background work, never a speed expectation


async def eventually(condition: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def spacing_s(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


# --- a crowd of reads over two replicas -----------------------------------------------------


@asynccontextmanager
async def two_replicas(database_url: str) -> AsyncIterator[tuple[ReplicaServer, ReplicaServer]]:
    """Two uvicorn processes on the test database and Redis, started side by side."""
    started = await asyncio.gather(
        asyncio.to_thread(ReplicaServer, database_url, REDIS_URL),
        asyncio.to_thread(ReplicaServer, database_url, REDIS_URL),
        return_exceptions=True,
    )
    replicas = [r for r in started if isinstance(r, ReplicaServer)]
    try:
        for result in started:
            if isinstance(result, BaseException):
                raise result
        yield replicas[0], replicas[1]
    finally:
        for replica in replicas:
            replica.stop()


async def _crowd(
    first: httpx.AsyncClient, second: httpx.AsyncClient, token: str, server: LocalOAuthServer
) -> list[httpx.Response]:
    """50 reads alternating between the replicas in two waves of 25: the second starts once the
    provider has answered the first wave's refresh, so its readers find the refreshed token
    (and must not refresh it again: before the fix a token shorter-lived than its provider's
    margin was due the moment it was issued)."""

    def wave(offset: int) -> asyncio.Future[list[httpx.Response]]:
        return asyncio.gather(
            *(read_token(first if i % 2 else second, token) for i in range(offset, offset + 25))
        )

    first_wave = wave(0)
    await eventually(lambda: server.refreshed_at)
    await asyncio.sleep(0.2)  # the refresh commits
    second_wave = wave(25)
    return [*await first_wave, *await second_wave]


async def _expire_stored_token(database_url: str) -> None:
    """What a minute does to a 60 s token: it has expired (issued 61 s ago)."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            now = utcnow()
            await conn.execute(
                update(OAuthConnection).values(
                    expires_at=now - timedelta(seconds=1),
                    last_refreshed_at=now - timedelta(seconds=61),
                    refresh_due_at=now - timedelta(seconds=31),
                )
            )
    finally:
        await engine.dispose()


def _assert_one_refresh(
    responses: list[httpx.Response], server: LocalOAuthServer, lifetime_s: int
) -> None:
    """One provider call for the whole crowd; a later one only once the refreshed token was
    itself due (half its lifetime on), which a 5 s token reaches while a crowd of 50 is still
    being answered only on a machine loaded many times over."""
    assert [r.status_code for r in responses] == [200] * len(responses), [
        r.text for r in responses if r.status_code != 200
    ]
    first = server.refreshed_at[0]
    assert [t for t in server.refreshed_at if t < first + lifetime_s / 2] == [first]
    if server.refresh_calls == 1:
        assert len({r.json()["access_token"] for r in responses}) == 1
    assert len(server.active_grants()) == 1  # no reuse of a rotated refresh token


@postgres_only
async def test_fifty_reads_of_an_expired_5s_token_over_two_replicas_refresh_once(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # 5 s tokens against a 60 s margin: before the fix the refreshed token was due at once.
    assert LOCAL_REFRESH_MARGIN_S > 5
    oauth_server.token_lifetime_s = 5
    oauth_server.delay_s = 0.2  # the first wave's readers queue behind the refresh
    token = make_token(roles=["service"])
    async with (
        two_replicas(database_url) as (one, two),
        httpx.AsyncClient(base_url=one.base_url, timeout=30) as first,
        httpx.AsyncClient(base_url=two.base_url, timeout=30) as second,
    ):
        await connect_branch(first, token, oauth_server)
        await asyncio.sleep(5.2)  # the token expires (real time)
        responses = await _crowd(first, second, token, oauth_server)
    _assert_one_refresh(responses, oauth_server, 5)


@postgres_only
async def test_fifty_reads_of_an_expired_60s_token_over_two_replicas_refresh_once(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    oauth_server.token_lifetime_s = 60
    oauth_server.delay_s = 0.2  # the first wave's readers queue behind the refresh
    token = make_token(roles=["service"])
    async with (
        two_replicas(database_url) as (one, two),
        httpx.AsyncClient(base_url=one.base_url, timeout=30) as first,
        httpx.AsyncClient(base_url=two.base_url, timeout=30) as second,
    ):
        await connect_branch(first, token, oauth_server)
        await _expire_stored_token(database_url)
        responses = await _crowd(first, second, token, oauth_server)
    _assert_one_refresh(responses, oauth_server, 60)
    assert oauth_server.refresh_calls == 1


# --- the loop alone -------------------------------------------------------------------------


async def test_the_loop_alone_keeps_a_5s_token_valid_at_about_half_its_lifetime(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # The loop's interval stays at its default (60 s): it wakes for the token's due time.
    oauth_server.token_lifetime_s = 5
    settings = build_settings(database_url, monitor_enabled=True)
    assert settings.monitor_interval_s == 60
    async with running_app(settings) as (app, client):
        await connect_branch(client, make_token(roles=["service"]), oauth_server)
        issued_at = time.time()
        await eventually(lambda: len(oauth_server.refreshed_at) >= 4)
        row = await connection_row(app)
    # Nobody read it: every refresh is the loop's, each before the token it replaced expired.
    gaps = spacing_s([issued_at, *oauth_server.refreshed_at[:4]])
    assert all(0.3 * 5 <= gap <= 0.8 * 5 for gap in gaps), gaps
    assert row.status == "active"
    assert oauth_server.calls["grant:refresh_token"] == len(oauth_server.refreshed_at)
    assert len(oauth_server.active_grants()) == 1


@postgres_only
async def test_two_loops_share_a_short_lived_token_without_refreshing_it_twice(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # Both loops wake at its due time; the lease gives it to one of them.
    oauth_server.token_lifetime_s = 4
    settings = build_settings(database_url, monitor_enabled=True)
    async with running_app(settings) as (_, client), running_app(settings):
        await connect_branch(client, make_token(roles=["service"]), oauth_server)
        await eventually(lambda: len(oauth_server.refreshed_at) >= 3)
    gaps = spacing_s(oauth_server.refreshed_at)
    assert all(gap >= 0.3 * 4 for gap in gaps), gaps
    assert len(oauth_server.active_grants()) == 1


# --- the minimum interval between automatic refreshes ---------------------------------------


async def _connect(
    client: httpx.AsyncClient, token: str, server: LocalOAuthServer, **body: Any
) -> dict[str, Any]:
    """A branch connected through a custom provider with these client options."""
    registered = await register_client(client, token, server, **body)
    return await connect_branch(client, token, server, client_pk=registered["id"])


async def test_a_read_inside_the_minimum_interval_serves_the_still_valid_token(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # 2 s tokens are due after 1 s; this provider wants 3 s between refreshes.
    oauth_server.token_lifetime_s = 2
    token = make_token(roles=["service"])
    await _connect(client, token, oauth_server, min_refresh_interval_s=3)
    issued = oauth_server.active_grants()[0].access_tokens[-1]
    await asyncio.sleep(1.2)

    response = await read_token(client, token)

    assert response.status_code == 200
    assert response.json()["access_token"] == issued
    assert oauth_server.refresh_calls == 0


async def test_a_forced_refresh_ignores_the_minimum_interval(
    client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect(client, token, oauth_server, min_refresh_interval_s=600)

    forced = await client.post(
        "/token-management/tokens/refresh",
        json={"provider": "local_oauth", "branch_id": "branch-1"},
        headers=bearer(token),
    )

    assert forced.status_code == 200, forced.text
    assert oauth_server.refresh_calls == 1
    # The token it got is not due: a read right after makes no call.
    assert (await read_token(client, token)).json()["access_token"] == forced.json()["access_token"]
    assert oauth_server.refresh_calls == 1


async def test_a_read_of_a_token_expired_inside_the_interval_refreshes_it(
    client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # Refreshing an expired token is never early: the interval does not hold it up.
    oauth_server.token_lifetime_s = 1
    token = make_token(roles=["service"])
    await _connect(client, token, oauth_server, min_refresh_interval_s=600)
    await asyncio.sleep(1.1)

    response = await read_token(client, token)

    assert response.status_code == 200, response.text
    assert oauth_server.refresh_calls == 1


async def test_the_loop_waits_out_the_minimum_interval(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # 4 s tokens are due after 2 s, but this provider wants 3 s between refreshes.
    oauth_server.token_lifetime_s = 4
    settings = build_settings(database_url, monitor_enabled=True)
    async with running_app(settings) as (app, client):
        await _connect(
            client, make_token(roles=["service"]), oauth_server, min_refresh_interval_s=3
        )
        issued_at = time.time()
        row = await connection_row(app)
        await eventually(lambda: len(oauth_server.refreshed_at) >= 2)
    assert row.last_refreshed_at is not None and row.refresh_due_at is not None
    assert row.refresh_due_at == row.last_refreshed_at + timedelta(seconds=3)
    gaps = spacing_s([issued_at, *oauth_server.refreshed_at[:2]])
    assert all(gap >= 2.9 for gap in gaps), gaps
