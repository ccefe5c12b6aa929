"""A client its provider refuses (invalid_client, unauthorized_client): misconfigured, once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from app.devtools.oauth_provider import LocalOAuthServer
from tests.conftest import REDIS_URL, bearer, build_settings, postgres_only, running_app
from tests.monitoring.factories import list_event_rows
from tests.monitoring.test_loop import make_due, monitor_of
from tests.oauth_fixtures import LOCAL_PROVIDER, connect_branch, register_client
from tests.replica_server import ReplicaServer
from tests.tokens.helpers import all_connections, expire_in, read_token

CROWD = 50
WAIT_FOR_POOL_S = 30.0  # an upper bound, never a speed expectation
LOGIN_BATCH = 5  # logins at once while setting up (SQLite has one writer)


async def _connect(
    client: httpx.AsyncClient,
    token: str,
    server: LocalOAuthServer,
    branches: list[str],
    *,
    lifetime_s: int = 0,
) -> str:
    """One client with a connection per branch, their tokens `lifetime_s` long; its id."""
    client_pk = str((await register_client(client, token, server))["id"])
    server.token_lifetime_s = lifetime_s
    for first in range(0, len(branches), LOGIN_BATCH):
        batch = branches[first : first + LOGIN_BATCH]
        await asyncio.gather(
            *(connect_branch(client, token, server, b, client_pk=client_pk) for b in batch)
        )
    server.token_lifetime_s = 3600
    return client_pk


async def _client_events(app: Any) -> list[tuple[str, str | None, str | None]]:
    return [
        (e.type, e.client_id, e.reason)
        for e in await list_event_rows(app)
        if e.type not in ("connected",)
    ]


async def test_a_secret_rotated_at_the_provider_marks_the_client_misconfigured_once(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # On PostgreSQL each refresh of a distinct connection holds a pooled connection through its
    # provider call (the row lock): of fifty at once, most queue for the pool (15) a while.
    settings = build_settings(database_url, db_pool_timeout_s=WAIT_FOR_POOL_S)
    async with running_app(settings) as (app, client):
        await _fifty_refused_at_once(app, client, make_token, oauth_server)


async def _fifty_refused_at_once(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    branches = [f"branch-{i}" for i in range(CROWD)]
    client_pk = await _connect(client, token, oauth_server, branches)
    oauth_server.client_secret = "rotated-at-the-provider-0123"

    responses = await asyncio.gather(*(read_token(client, token, b) for b in branches))

    assert {r.status_code for r in responses} == {503}
    assert {r.json()["error"] for r in responses} == {"refresh_failed"}
    assert all("misconfigured" in r.json()["detail"] for r in responses)
    assert await _client_events(app) == [("client_misconfigured", client_pk, "invalid_client")]
    [event] = [e for e in await list_event_rows(app) if e.type == "client_misconfigured"]
    assert (event.tenant_id, event.provider, event.connection_id) == (
        "tenant-a",
        LOCAL_PROVIDER,
        None,
    )
    # One client problem, not fifty connection problems.
    assert {c.status for c in await all_connections(app)} == {"active"}
    shown = await client.get(f"/token-management/clients/{client_pk}", headers=bearer(token))
    assert (shown.json()["status"], shown.json()["status_reason"]) == (
        "misconfigured",
        "invalid_client",
    )
    assert shown.json()["status_changed_at"] is not None


async def test_a_misconfigured_clients_connections_are_not_refreshed(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await _connect(client, token, oauth_server, ["branch-1", "branch-2"])
    oauth_server.client_secret = "rotated-at-the-provider-0123"
    assert (await read_token(client, token, "branch-1")).status_code == 503
    calls = oauth_server.token_calls

    read = await read_token(client, token, "branch-2")
    forced = await client.post(
        "/token-management/tokens/refresh",
        json={"branch_id": "branch-1", "provider": LOCAL_PROVIDER},
        headers=bearer(token),
    )
    await make_due(app)
    tick = await monitor_of(app).run_once()

    assert read.status_code == 503 and "misconfigured" in read.json()["detail"]
    assert forced.status_code == 503 and forced.json()["error"] == "refresh_failed"
    assert "misconfigured" in forced.json()["detail"]
    assert tick.due == 0
    assert oauth_server.token_calls == calls


async def test_unauthorized_client_is_a_client_problem_too(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    client_pk = await _connect(client, token, oauth_server, ["branch-1"])
    oauth_server.fail_status, oauth_server.fail_error = 400, "unauthorized_client"

    assert (await read_token(client, token)).status_code == 503

    assert await _client_events(app) == [("client_misconfigured", client_pk, "unauthorized_client")]


async def test_still_valid_tokens_of_a_misconfigured_client_are_served(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    client_pk = await _connect(client, token, oauth_server, ["expired"])
    oauth_server.token_lifetime_s = 3600
    await connect_branch(client, token, oauth_server, "valid", client_pk=client_pk)
    oauth_server.client_secret = "rotated-at-the-provider-0123"
    assert (await read_token(client, token, "expired")).status_code == 503

    response = await read_token(client, token, "valid")

    assert response.status_code == 200, response.text
    assert oauth_server.is_access_token_valid(response.json()["access_token"])


async def test_editing_the_client_recovers_it_and_its_connections(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    client_pk = await _connect(client, token, oauth_server, ["branch-1", "branch-2"])
    oauth_server.client_secret = "rotated-at-the-provider-0123"
    assert (await read_token(client, token, "branch-1")).status_code == 503
    for branch in ("branch-1", "branch-2"):
        # Issued a while ago, so the minimum interval between refreshes is behind them.
        await expire_in(app, -10, branch)

    edited = await client.patch(
        f"/token-management/clients/{client_pk}",
        json={"client_secret": oauth_server.client_secret},
        headers=bearer(token),
    )
    tick = await monitor_of(app).run_once()

    assert edited.status_code == 200, edited.text
    assert (edited.json()["status"], edited.json()["status_reason"]) == ("active", None)
    events = await _client_events(app)
    assert events[0] == ("client_misconfigured", client_pk, "invalid_client")
    assert events[1][:2] == ("recovered", client_pk)
    # Its connections are due again: the loop refreshes both expired tokens at once.
    assert (tick.due, tick.refreshed) == (2, 2)
    assert (await read_token(client, token, "branch-1")).status_code == 200


async def test_a_client_still_refused_after_an_edit_is_marked_again(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    client_pk = await _connect(client, token, oauth_server, ["branch-1"])
    oauth_server.client_secret = "rotated-at-the-provider-0123"
    assert (await read_token(client, token)).status_code == 503
    edited = await client.patch(
        f"/token-management/clients/{client_pk}",
        json={"name": "renamed, secret still wrong"},
        headers=bearer(token),
    )
    assert edited.json()["status"] == "active"

    assert (await read_token(client, token)).status_code == 503

    assert [e[0] for e in await _client_events(app)] == [
        "client_misconfigured",
        "recovered",
        "client_misconfigured",
    ]


async def test_a_login_with_the_client_recovers_it(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # The provider refused the app for a while (an app disabled, then enabled again); a login
    # whose code exchange succeeds proves the credentials good.
    token = make_token(roles=["service"])
    client_pk = await _connect(client, token, oauth_server, ["branch-1"])
    oauth_server.fail_status, oauth_server.fail_error = 401, "invalid_client"
    assert (await read_token(client, token)).status_code == 503
    oauth_server.fail_status = None

    await connect_branch(client, token, oauth_server, "branch-2", client_pk=client_pk)

    shown = await client.get(f"/token-management/clients/{client_pk}", headers=bearer(token))
    assert shown.json()["status"] == "active"
    assert [e[:2] for e in await _client_events(app)] == [
        ("client_misconfigured", client_pk),
        ("recovered", client_pk),
    ]


async def test_the_client_list_shows_each_clients_status(
    client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await register_client(client, token, oauth_server)

    listed = await client.get("/token-management/clients", headers=bearer(token))

    [item] = listed.json()["items"]
    assert (item["status"], item["status_reason"], item["status_changed_at"]) == (
        "active",
        None,
        None,
    )


@postgres_only
async def test_refusals_over_two_replicas_raise_one_event(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    settings = build_settings(database_url)
    async with running_app(settings) as (app, client):
        token = make_token(roles=["service"])
        branches = [f"branch-{i}" for i in range(CROWD)]
        client_pk = await _connect(client, token, oauth_server, branches)
        replicas = [
            ReplicaServer(database_url, REDIS_URL, db_pool_timeout_s=str(WAIT_FOR_POOL_S))
            for _ in range(2)
        ]
        try:
            oauth_server.client_secret = "rotated-at-the-provider-0123"
            async with httpx.AsyncClient(timeout=WAIT_FOR_POOL_S * 2) as http:
                responses = await asyncio.gather(
                    *(
                        http.get(
                            f"{replicas[i % 2].base_url}/token-management/tokens/{branch}",
                            params={"provider": LOCAL_PROVIDER},
                            headers=bearer(token),
                        )
                        for i, branch in enumerate(branches)
                    )
                )
        finally:
            for replica in replicas:
                replica.stop()

        assert {r.status_code for r in responses} == {503}
        assert await _client_events(app) == [("client_misconfigured", client_pk, "invalid_client")]
