"""The revocation list: bounded in time and size, never losing a revocation, private to its
deployment's Redis database."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import redis.asyncio as aioredis
from sqlalchemy import event, func, insert, select

from app.auth.models import RevokedToken
from app.auth.service import RevocationList
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker, utcnow
from app.core.redis_cache import build_cache
from app.state import app_state
from tests.conftest import (
    TokenFactory,
    bearer,
    build_settings,
    running_app,
)

ADMIN_ROUTE = "/api/admin/workspaces/tenant-a/usage"


async def _insert(app: Any, *rows: dict[str, Any]) -> None:
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(insert(RevokedToken), list(rows))


def _row(jti: str, expires_at: datetime, revoked_at: datetime | None = None) -> dict[str, Any]:
    return {
        "jti": jti,
        "expires_at": expires_at,
        "revoked_at": revoked_at or utcnow(),
        "revoked_by": "test",
    }


async def _stored(app: Any, jti: str) -> datetime | None:
    async with app_state(app).sessionmaker() as session:
        found: datetime | None = await session.scalar(
            select(RevokedToken.expires_at).where(RevokedToken.jti == jti)
        )
        return found


async def test_a_revocation_expiring_in_9999_is_kept_only_as_long_as_a_token_can_live(
    app: Any, client: httpx.AsyncClient, make_token: TokenFactory, settings: Settings
) -> None:
    admin = make_token(tenants=["*"], roles=["admin"])  # revoking a bare jti
    response = await client.post(
        "/auth/revoke",
        headers=bearer(admin),
        json={"jti": "far-future", "expires_at": "9999-12-31T00:00:00Z"},
    )
    assert response.status_code == 200
    latest = utcnow() + timedelta(seconds=settings.auth_max_token_lifetime_s + 5)
    assert datetime.fromisoformat(response.json()["expires_at"]) <= latest
    stored = await _stored(app, "far-future")
    assert stored is not None and stored <= latest


async def test_a_token_valid_for_longer_than_the_longest_lifetime_gets_401(
    client: httpx.AsyncClient, make_token: TokenFactory, settings: Settings
) -> None:
    token = make_token(roles=["admin"], ttl_s=settings.auth_max_token_lifetime_s + 3600)
    response = await client.get(ADMIN_ROUTE, headers=bearer(token))
    assert response.status_code == 401
    assert "AUTH_MAX_TOKEN_LIFETIME_S" in response.json()["detail"]


async def test_a_token_issued_for_longer_than_the_longest_lifetime_gets_401(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    now = int(time.time())
    claims = {
        "sub": "user-1",
        "tenants": ["tenant-a"],
        "roles": ["admin"],
        "aud": settings.auth_audience,
        "iat": now - settings.auth_max_token_lifetime_s,
        "exp": now + 600,
        "jti": "old-long-token",
    }
    token = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
    assert (await client.get(ADMIN_ROUTE, headers=bearer(token))).status_code == 401


async def test_a_revocation_arriving_while_a_sync_reads_the_table_is_kept(app: Any) -> None:
    revocations = app_state(app).revocations
    await revocations.sync()  # the first sync after start-up; the next one is incremental
    expires_at = utcnow() + timedelta(hours=1)

    # The bus delivers a revocation (committed elsewhere after the sync's read) while the sync's
    # query is running: the moment the lost update happened.
    def deliver_during_the_read(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "revoked_tokens" in statement:
            revocations.add("arrived-during-sync", expires_at)

    engine = app_state(app).engine.sync_engine
    event.listen(engine, "after_cursor_execute", deliver_during_the_read)
    try:
        await revocations.sync()
    finally:
        event.remove(engine, "after_cursor_execute", deliver_during_the_read)
    assert revocations.is_revoked("arrived-during-sync")


async def test_a_sync_reads_only_what_was_revoked_since_the_previous_one(
    app: Any, client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    revocations = app_state(app).revocations
    long_ago = utcnow() - timedelta(hours=1)
    later = utcnow() + timedelta(hours=1)
    await _insert(app, *(_row(f"old-{n}", later, revoked_at=long_ago) for n in range(20)))
    await revocations.sync()
    assert await revocations.sync() == 0
    await client.post("/auth/revoke", headers=bearer(make_token()))
    assert await revocations.sync() == 1


async def test_expired_revocations_are_purged_in_batches(settings: Settings) -> None:
    # A list on an engine of its own, without an app whose own list could purge meanwhile.
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    revocations = RevocationList(sessionmaker, build_cache(None), settings=settings, purge_batch=10)
    deletes: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM REVOKED_TOKENS"):
            deletes.append(statement)

    try:
        past, future = utcnow() - timedelta(hours=1), utcnow() + timedelta(hours=1)
        async with sessionmaker() as session, session.begin():
            rows = [_row(f"expired-{n}", past) for n in range(25)] + [_row("live", future)]
            await session.execute(insert(RevokedToken), rows)
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        assert await revocations.purge() == 25
        # Three batches of expired rows (10, 10, 5), then one that finds no outlived row.
        assert len(deletes) == 4
        async with sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(RevokedToken)) == 1
    finally:
        await engine.dispose()


async def test_a_revocation_older_than_the_longest_token_lifetime_is_purged_even_if_it_says_9999(
    app: Any, settings: Settings
) -> None:
    revocations = app_state(app).revocations
    year_9999 = datetime(9999, 12, 31, tzinfo=UTC)
    long_ago = utcnow() - timedelta(seconds=settings.auth_max_token_lifetime_s + 120)
    await _insert(app, _row("outlived", year_9999, revoked_at=long_ago), _row("recent", year_9999))
    await revocations.purge()
    assert await _stored(app, "outlived") is None
    assert await _stored(app, "recent") is not None


async def test_expired_revocations_leave_memory_at_the_next_sync(app: Any) -> None:
    revocations = app_state(app).revocations
    revocations.add("long-expired", utcnow() - timedelta(hours=2))
    revocations.add("still-valid", utcnow() + timedelta(hours=2))
    await revocations.sync()
    assert not revocations.is_revoked("long-expired")
    assert revocations.is_revoked("still-valid")


async def test_past_the_entry_limit_a_new_revocation_answers_503_and_a_repeat_still_works(
    database_url: str, make_token: TokenFactory
) -> None:
    settings = build_settings(database_url, auth_revocation_max_entries=2)
    first, second, third = (make_token(jti=f"t{n}") for n in range(3))
    admin = make_token(tenants=["*"], roles=["admin"])  # revoking a bare jti
    async with running_app(settings) as (_, client):
        for token in (first, second):
            assert (await client.post("/auth/revoke", headers=bearer(token))).status_code == 200
        refused = await client.post("/auth/revoke", headers=bearer(third))
        assert refused.status_code == 503
        assert refused.json()["error"] == "revocation_list_full"
        repeated = await client.post("/auth/revoke", headers=bearer(admin), json={"jti": "t0"})
        assert repeated.status_code == 200


async def test_an_expires_at_outside_the_calendar_in_utc_is_a_422(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    response = await client.post(
        "/auth/revoke",
        headers=bearer(make_token(roles=["admin"])),
        json={"jti": "some-token", "expires_at": "0001-01-01T00:00:00+01:00"},
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "expires_at"


async def test_a_token_with_a_300_character_sub_can_be_revoked(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    token = make_token(sub="u" * 300)
    assert (await client.post("/auth/revoke", headers=bearer(token))).status_code == 200
    response = await client.get("/monitoring/events", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == "token_revoked"


async def test_a_token_with_a_300_character_jti_can_be_revoked(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    token = make_token(jti="j" * 300)
    assert (await client.post("/auth/revoke", headers=bearer(token))).status_code == 200
    response = await client.get("/monitoring/events", headers=bearer(token))
    assert response.json()["error"] == "token_revoked"


async def test_the_revocation_channel_is_private_to_the_redis_database(
    database_url: str, redis_server: Any
) -> None:
    _, port = redis_server
    first = build_settings(database_url, redis_url=f"redis://127.0.0.1:{port}/0")
    second = build_settings(database_url, redis_url=f"redis://127.0.0.1:{port}/1")
    async with running_app(first) as (app1, _), running_app(second) as (app2, _):
        channels = [app_state(app).revocations.channel for app in (app1, app2)]
        client = aioredis.Redis(port=port)
        try:
            # Each bus subscribes once its listener runs: wait until both have.
            for _ in range(200):
                counts = dict(await client.pubsub_numsub(*channels))
                if all(counts.get(channel.encode()) for channel in channels):
                    break
                await asyncio.sleep(0.01)
        finally:
            await client.aclose()
        assert counts[channels[0].encode()] == 1
