"""The fresh-token read cache: reads answer from memory, and every change is seen at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any

import httpx

from app.core.config import Settings
from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from tests.conftest import (
    bearer,
    build_settings,
    free_port,
    postgres_only,
    recorded_statements,
    running_app,
    while_coherent,
)
from tests.oauth_fixtures import connect_branch
from tests.tokens.helpers import expire_in, read_token


def connection_queries(app: Any) -> AbstractContextManager[list[str]]:
    """The statements sent to the database that touch oauth_connections, while inside."""
    return recorded_statements(app, lambda sql: "oauth_connections" in sql)


async def _force_refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(
        "/token-management/tokens/refresh",
        json={"provider": "local_oauth", "branch_id": "branch-1"},
        headers=bearer(token),
    )


async def _disconnect(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.delete(
        "/token-management/tokens/branch-1",
        params={"provider": "local_oauth"},
        headers=bearer(token),
    )


@asynccontextmanager
async def _two_instances_one_cached_read(
    database_url: str, token: str, oauth_server: LocalOAuthServer
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Any, dict[str, Any]]]:
    """Two app instances on one PostgreSQL and Redis; a branch connected through the first and
    read once through the second, which now holds it in its read cache."""
    settings = build_settings(database_url)
    async with running_app(settings) as (_, first), running_app(settings) as (second_app, second):
        connected = await connect_branch(first, token, oauth_server)
        assert (await read_token(second, token)).status_code == 200
        yield first, second, second_app, connected


async def test_a_second_read_of_a_fresh_token_needs_no_database_query(
    app_and_client: tuple[Any, httpx.AsyncClient], make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    app, client = app_and_client
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)

    async def two_reads() -> None:
        hits = app_state(app).tokens.read_cache.hits
        first = await read_token(client, token)
        with connection_queries(app) as queries:
            second = await read_token(client, token)
        assert first.status_code == second.status_code == 200
        assert second.json() == first.json()
        assert queries == []
        assert app_state(app).tokens.read_cache.hits == hits + 1

    await while_coherent([app], two_reads)


async def test_with_the_cache_turned_off_every_read_queries(
    settings: Settings, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    custom = build_settings(settings.database_url, token_read_cache_ttl_s=0)
    token = make_token(roles=["service"])
    async with running_app(custom) as (app, client):
        await connect_branch(client, token, oauth_server)
        await read_token(client, token)
        with connection_queries(app) as queries:
            assert (await read_token(client, token)).status_code == 200
    assert len(queries) == 1


async def test_a_forced_refresh_is_seen_by_the_next_read(
    client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)
    before = (await read_token(client, token)).json()["access_token"]
    refreshed = await _force_refresh(client, token)
    assert refreshed.status_code == 200
    after = (await read_token(client, token)).json()["access_token"]
    assert after == refreshed.json()["access_token"] != before


async def test_a_disconnected_token_is_not_served_from_memory(
    client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)
    assert (await read_token(client, token)).status_code == 200
    gone = await _disconnect(client, token)
    assert gone.status_code == 200, gone.text
    assert (await read_token(client, token)).status_code == 404


async def test_a_new_login_replaces_the_token_a_read_answers(
    client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    connected = await connect_branch(client, token, oauth_server)
    before = (await read_token(client, token)).json()["access_token"]
    await connect_branch(client, token, oauth_server, client_pk=connected["client_pk"])
    after = (await read_token(client, token)).json()["access_token"]
    assert after != before
    assert oauth_server.is_access_token_valid(after)


async def test_a_client_edit_applies_its_refresh_margin_to_the_next_read(
    app: Any, client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    connected = await connect_branch(client, token, oauth_server)
    assert (await read_token(client, token)).status_code == 200  # now in the read cache
    # The stored token (a 3600 s one) expires in 100 s: outside the 60 s margin, inside 600 s.
    await expire_in(app, 100)
    edited = await client.patch(
        f"/token-management/clients/{connected['client_pk']}",
        json={"refresh_margin_s": 600},
        headers=bearer(token),
    )
    assert edited.status_code == 200, edited.text
    assert (await read_token(client, token)).status_code == 200
    assert oauth_server.refresh_calls == 1


async def test_a_cached_token_is_not_served_once_its_refresh_is_due(
    client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    # 3 s tokens: due half their lifetime after issue (the margin, 60 s, is longer than that).
    oauth_server.token_lifetime_s = 3
    await connect_branch(client, token, oauth_server)
    assert (await read_token(client, token)).status_code == 200
    assert oauth_server.refresh_calls == 0
    await asyncio.sleep(1.7)  # the token enters its refresh margin
    assert (await read_token(client, token)).status_code == 200
    assert oauth_server.refresh_calls == 1


@postgres_only
async def test_a_refresh_through_one_instance_is_read_through_the_other(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    async with _two_instances_one_cached_read(database_url, token, oauth_server) as instances:
        first, second, second_app, _ = instances
        stale = (await read_token(second, token)).json()["access_token"]
        assert app_state(second_app).tokens.read_cache.hits == 1

        refreshed = (await _force_refresh(first, token)).json()["access_token"]
        assert refreshed != stale
        assert (await read_token(second, token)).json()["access_token"] == refreshed

        assert (await _disconnect(first, token)).status_code == 200
        assert (await read_token(second, token)).status_code == 404


@postgres_only
async def test_with_redis_unreachable_reads_go_to_the_database(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    # Nothing listens on that port: this replica could not hear another's invalidations.
    cut_off = build_settings(database_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    token = make_token(roles=["service"])
    async with running_app(cut_off) as (app, client):
        await connect_branch(client, token, oauth_server)
        await read_token(client, token)
        with connection_queries(app) as queries:
            assert (await read_token(client, token)).status_code == 200
    # The repeated read loads the row again, exactly as an uncached read does.
    assert len(queries) == 1
    assert queries[0].lstrip().upper().startswith("SELECT")
    assert app_state(app).tokens.read_cache.hits == 0


async def test_two_tenants_with_the_same_branch_read_their_own_tokens(
    client: httpx.AsyncClient, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token_a = make_token(tenants=["tenant-a"], roles=["service"])
    token_b = make_token(tenants=["tenant-b"], roles=["service"])
    await connect_branch(client, token_a, oauth_server)
    await connect_branch(client, token_b, oauth_server)
    for _ in range(2):  # the second round answers from the cache
        a = (await read_token(client, token_a)).json()["access_token"]
        b = (await read_token(client, token_b)).json()["access_token"]
        assert a != b
        assert oauth_server.is_access_token_valid(a) and oauth_server.is_access_token_valid(b)


@postgres_only
async def test_a_revoked_grant_found_through_one_instance_stops_reads_through_the_other(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    async with _two_instances_one_cached_read(database_url, token, oauth_server) as instances:
        first, second, _, _ = instances
        oauth_server.revoke_all_grants()
        forced = await _force_refresh(first, token)
        assert forced.status_code == 409
        answer = await read_token(second, token)
    assert answer.status_code == 409
    assert answer.json()["error"] == "needs_reauth"


@postgres_only
async def test_a_client_deleted_through_one_instance_stops_reads_through_the_other(
    database_url: str, make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    token = make_token(roles=["service"])
    async with _two_instances_one_cached_read(database_url, token, oauth_server) as instances:
        first, second, _, connected = instances
        deleted = await first.delete(
            f"/token-management/clients/{connected['client_pk']}", headers=bearer(token)
        )
        assert deleted.status_code == 204
        assert (await read_token(second, token)).status_code == 404


async def test_a_cached_entry_holds_the_access_token_only_encrypted(
    app_and_client: tuple[Any, httpx.AsyncClient], make_token: Any, oauth_server: LocalOAuthServer
) -> None:
    app, client = app_and_client
    token = make_token(roles=["service"])
    await connect_branch(client, token, oauth_server)
    cache = app_state(app).tokens.read_cache

    async def cached_read() -> None:
        answer = await read_token(client, token)
        assert answer.status_code == 200
        access_token = answer.json()["access_token"]
        # The second read answers from the entry the first one kept.
        hits = cache.hits
        assert (await read_token(client, token)).json()["access_token"] == access_token
        assert cache.hits == hits + 1
        entries = [cache.get(key) for key in cache._tier]
        assert entries and all(entry is not None for entry in entries)
        for entry in entries:
            assert entry is not None
            prepared = entry.prepared
            kept = [
                *(str(value) for value in vars(entry.row).values()),
                prepared.answer.head.decode(),
                prepared.answer.tail.decode(),
                prepared.sealed.ciphertext.decode("latin-1"),
                prepared.sealed.nonce.decode("latin-1"),
            ]
            assert not any(access_token in value for value in kept)
            # Still what decrypts to it, for one read at a time.
            assert prepared.sealed.open() == access_token

    await while_coherent([app], cached_read)
