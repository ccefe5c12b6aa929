"""The monitoring loop against the local authorization server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from app.core.db import utcnow
from app.devtools.oauth_provider import LocalOAuthServer
from app.monitoring.lifecycle import build_monitor
from app.monitoring.loop import MonitorLoop
from app.state import app_state
from app.tokens.models import OAuthConnection
from tests.conftest import bearer, build_settings, postgres_only, running_app
from tests.monitoring.factories import list_event_rows
from tests.oauth_fixtures import connect_branch, register_client

WAIT_S = 15.0  # an upper bound for background work, never a speed expectation


async def eventually(condition: Callable[[], Awaitable[bool] | bool]) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def connections(app: Any) -> list[OAuthConnection]:
    async with app_state(app).sessionmaker() as session:
        result = await session.scalars(select(OAuthConnection).order_by(OAuthConnection.branch_id))
        return list(result)


async def make_due(app: Any, **values: Any) -> None:
    """What the clock does to a connection: its refresh time has come, its last refresh is an
    hour old (plus any other columns)."""
    now = utcnow()
    values = {"last_refreshed_at": now - timedelta(hours=1), **values}
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(OAuthConnection).values(refresh_due_at=now - timedelta(seconds=1), **values)
        )


def monitor_of(app: Any) -> MonitorLoop:
    state = app_state(app)
    return build_monitor(state.settings, state.sessionmaker, state.tokens)


async def test_a_short_lived_token_is_refreshed_before_it_expires(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # 4 s tokens with a 60 s margin: due half their lifetime after issue, long before expiry.
    oauth_server.token_lifetime_s = 4
    settings = build_settings(database_url, monitor_enabled=True, monitor_interval_s=0.1)
    async with running_app(settings) as (app, client):
        await connect_branch(client, make_token(roles=["service"]), oauth_server, "branch-1")
        [before] = await connections(app)
        await eventually(lambda: app_state(app).monitoring.loop.totals["refreshed"] >= 1)
        [after] = await connections(app)
        await eventually(lambda: _lease_released(app))
    assert before.expires_at is not None and after.expires_at is not None
    assert oauth_server.refreshed_at[0] < before.expires_at.timestamp()
    assert after.expires_at > before.expires_at
    assert after.status == "active"


async def _lease_released(app: Any) -> bool:
    [connection] = await connections(app)
    return connection.lease_owner is None


async def test_a_revoked_grant_becomes_needs_reauth_with_one_event(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    await connect_branch(client, make_token(roles=["service"]), oauth_server, "branch-1")
    oauth_server.revoke_all_grants()
    await make_due(app)
    monitor = monitor_of(app)
    first = await monitor.run_once()
    second = await monitor.run_once()
    [connection] = await connections(app)
    assert (first.due, first.failed, second.due) == (1, 1, 0)
    assert connection.status == "needs_reauth"
    events = (
        await client.get("/monitoring/events", headers=bearer(make_token(roles=["service"])))
    ).json()
    assert [(e["type"], e["branch_id"], e["reason"]) for e in events["items"]] == [
        ("needs_reauth", "branch-1", "invalid_grant"),
        ("connected", "branch-1", "new"),
    ]


async def test_an_outage_gives_refresh_failed_then_backoff_then_recovered(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    settings = build_settings(database_url, token_refresh_cooldown_s=0.5)
    async with running_app(settings) as (app, client):
        await connect_branch(client, make_token(roles=["service"]), oauth_server, "branch-1")
        await make_due(app, expires_at=utcnow() + timedelta(seconds=30))
        monitor = monitor_of(app)
        oauth_server.fail_status = 503
        failed = await monitor.run_once()
        [connection] = await connections(app)
        assert (failed.failed, connection.status) == (1, "refresh_failed")
        assert connection.next_attempt_at is not None
        assert connection.refresh_due_at == connection.next_attempt_at

        calls = oauth_server.refresh_calls
        in_backoff = await monitor.run_once()
        assert (in_backoff.due, oauth_server.refresh_calls) == (0, calls)

        oauth_server.fail_status = None
        await eventually(lambda: _refreshed_once_due(monitor))
        [connection] = await connections(app)
        assert connection.status == "active"
        assert connection.last_error is None
        events = [e.type for e in await list_event_rows(app)]
    assert events == ["connected", "refresh_failed", "recovered"]


async def _refreshed_once_due(monitor: MonitorLoop) -> bool:
    tick = await monitor.run_once()
    return tick.refreshed == 1


async def test_failed_retries_during_an_outage_raise_only_one_event(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    settings = build_settings(database_url, token_refresh_cooldown_s=0.05)
    async with running_app(settings) as (app, client):
        await connect_branch(client, make_token(roles=["service"]), oauth_server, "branch-1")
        monitor = monitor_of(app)
        oauth_server.fail_status = 500
        await make_due(app)
        for _ in range(3):
            await make_due(app, next_attempt_at=None)
            await monitor.run_once()
        [connection] = await connections(app)
        events = [e.type for e in await list_event_rows(app)]
    assert connection.failure_count == 3
    assert events == ["connected", "refresh_failed"]


async def test_a_lease_left_by_a_killed_instance_is_taken_over(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    await connect_branch(client, make_token(roles=["service"]), oauth_server, "branch-1")
    await make_due(
        app, lease_owner="killed-instance", lease_expires_at=utcnow() - timedelta(seconds=1)
    )
    tick = await monitor_of(app).run_once()
    [connection] = await connections(app)
    assert (tick.refreshed, oauth_server.refresh_calls) == (1, 1)
    assert connection.lease_owner is None


async def test_a_live_lease_of_another_instance_is_left_alone(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    await connect_branch(client, make_token(roles=["service"]), oauth_server, "branch-1")
    await make_due(
        app, lease_owner="busy-instance", lease_expires_at=utcnow() + timedelta(minutes=1)
    )
    tick = await monitor_of(app).run_once()
    assert (tick.due, oauth_server.refresh_calls) == (0, 0)


async def _stop_during_a_refresh(
    database_url: str,
    token: str,
    oauth_server: LocalOAuthServer,
    *,
    grace_s: float,
    provider_delay_s: float,
) -> tuple[Any, Any, Any]:
    """Stop the running monitor while it refreshes one connection against a slow provider:
    the monitor, and the connection row before and after."""
    settings = build_settings(
        database_url, monitor_interval_s=0.05, monitor_shutdown_grace_s=grace_s
    )
    async with running_app(settings) as (app, client):
        await connect_branch(client, token, oauth_server, "branch-1")
        [before] = await connections(app)
        oauth_server.delay_s = provider_delay_s
        monitor = monitor_of(app)
        await make_due(app)
        await monitor.start()
        await eventually(lambda: oauth_server.refresh_calls == 1)
        await monitor.stop()
        [after] = await connections(app)
    return monitor, before, after


async def test_shutdown_lets_an_in_flight_refresh_finish_within_the_grace_period(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    monitor, before, after = await _stop_during_a_refresh(
        database_url,
        make_token(roles=["service"]),
        oauth_server,
        grace_s=10.0,
        provider_delay_s=0.5,
    )
    assert monitor.totals["refreshed"] == 1
    assert after.access_token_enc != before.access_token_enc
    assert after.lease_owner is None


async def test_shutdown_past_the_grace_period_leaves_the_previous_token_set_whole(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    monitor, before, after = await _stop_during_a_refresh(
        database_url, make_token(roles=["service"]), oauth_server, grace_s=0, provider_delay_s=2.0
    )
    assert monitor.totals["abandoned"] == 1
    assert (after.access_token_enc, after.refresh_token_enc, after.expires_at) == (
        before.access_token_enc,
        before.refresh_token_enc,
        before.expires_at,
    )
    assert after.status == "active"
    assert after.lease_owner is None


async def test_a_slow_provider_does_not_hold_back_another_providers_refreshes(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    slow_server = LocalOAuthServer().start()
    try:
        settings = build_settings(
            database_url,
            monitor_interval_s=0.05,
            monitor_concurrency=2,
            monitor_per_provider_concurrency=1,
            monitor_shutdown_grace_s=0,
        )
        async with running_app(settings) as (app, client):
            token = make_token(roles=["service"])
            slow = await register_client(
                client, token, slow_server, provider="slow_oauth", **slow_server.provider_urls()
            )
            for i in range(4):
                await connect_branch(client, token, oauth_server, f"fast-{i}")
                await connect_branch(client, token, slow_server, f"slow-{i}", client_pk=slow["id"])
            slow_server.delay_s = 1.0
            await make_due(app)
            monitor = monitor_of(app)
            await monitor.start()
            await eventually(lambda: oauth_server.refresh_calls == 4)
            slow_done = slow_server.refresh_calls
            await monitor.stop()
    finally:
        slow_server.stop()
    # One slot per provider: the slow one works through its four one at a time.
    assert slow_done < 4


@postgres_only
async def test_two_instances_refresh_each_due_connection_exactly_once(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    settings = build_settings(database_url, monitor_interval_s=0.02, monitor_batch_size=5)
    async with running_app(settings) as (app_a, client), running_app(settings) as (app_b, _):
        token = make_token(roles=["service"])
        first = await connect_branch(client, token, oauth_server, "branch-0")
        for i in range(1, 30):
            await connect_branch(
                client, token, oauth_server, f"branch-{i}", client_pk=first["client_pk"]
            )
        await make_due(app_a)
        monitors = [monitor_of(app_a), monitor_of(app_b)]
        for monitor in monitors:
            await monitor.start()
        await eventually(lambda: oauth_server.refresh_calls >= 30)
        # A few more passes each, so a second refresh would have had its chance.
        ticks = [m.ticks for m in monitors]
        await eventually(
            lambda: all(m.ticks >= t + 3 for m, t in zip(monitors, ticks, strict=True))
        )
        for monitor in monitors:
            await monitor.stop()
        rows = await connections(app_a)
    assert oauth_server.refresh_calls == 30
    assert sum(m.totals["refreshed"] for m in monitors) == 30
    assert all(m.totals["skipped"] == 0 for m in monitors)
    assert all(m.totals["refreshed"] > 0 for m in monitors)
    assert all(row.status == "active" and row.lease_owner is None for row in rows)


async def test_one_pass_leases_no_more_than_a_providers_share(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # One refresh at a time per provider, four rounds queued at most: a share of four.
    settings = build_settings(database_url, monitor_per_provider_concurrency=1)
    async with running_app(settings) as (app, client):
        token = make_token(roles=["service"])
        first = await connect_branch(client, token, oauth_server, "branch-0")
        for i in range(1, 10):
            await connect_branch(
                client, token, oauth_server, f"branch-{i}", client_pk=first["client_pk"]
            )
        await make_due(app)
        tick = await monitor_of(app).run_once()
        rows = await connections(app)
    assert (tick.due, tick.refreshed, oauth_server.refresh_calls) == (4, 4, 4)
    assert all(row.lease_owner is None for row in rows)
    assert (
        sum(row.refresh_due_at is not None and row.refresh_due_at < utcnow() for row in rows) == 6
    )


async def test_a_backlog_beyond_a_providers_share_is_worked_off_without_waiting_an_interval(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # A share of four per pass and a one-minute interval: twelve due need three passes, which
    # must follow one another as room frees, not a minute apart.
    settings = build_settings(
        database_url, monitor_per_provider_concurrency=1, monitor_interval_s=60
    )
    async with running_app(settings) as (app, client):
        token = make_token(roles=["service"])
        first = await connect_branch(client, token, oauth_server, "branch-0")
        for i in range(1, 12):
            await connect_branch(
                client, token, oauth_server, f"branch-{i}", client_pk=first["client_pk"]
            )
        await make_due(app)
        monitor = monitor_of(app)
        await monitor.start()
        await eventually(lambda: monitor.totals["refreshed"] == 12)
        await monitor.stop()
    assert oauth_server.refresh_calls == 12
