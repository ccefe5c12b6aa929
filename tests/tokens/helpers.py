"""Small helpers shared by the tokens tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from app.core.db import utcnow
from app.devtools.oauth_provider import LocalOAuthServer
from app.state import app_state
from app.tokens.models import OAuthConnection
from tests.conftest import bearer
from tests.oauth_fixtures import LOCAL_PROVIDER, connect_branch


async def read_token(
    client: httpx.AsyncClient,
    token: str,
    branch_id: str = "branch-1",
    provider: str = LOCAL_PROVIDER,
    **params: str,
) -> httpx.Response:
    return await client.get(
        f"/token-management/tokens/{branch_id}",
        params={"provider": provider, **params},
        headers=bearer(token),
    )


async def connection_row(app: Any, branch_id: str = "branch-1") -> OAuthConnection:
    async with app_state(app).sessionmaker() as session:
        row = await session.scalar(
            select(OAuthConnection).where(OAuthConnection.branch_id == branch_id)
        )
    assert row is not None
    return row


async def all_connections(app: Any) -> list[OAuthConnection]:
    async with app_state(app).sessionmaker() as session:
        return list(await session.scalars(select(OAuthConnection)))


async def end_cooldown(app: Any, branch_id: str = "branch-1") -> None:
    """Move the failure cooldown into the past (instead of sleeping through it)."""
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(OAuthConnection)
            .where(OAuthConnection.branch_id == branch_id)
            .values(next_attempt_at=utcnow(), refresh_due_at=utcnow())
        )


async def expire_in(app: Any, seconds: float, branch_id: str = "branch-1") -> None:
    """What the clock does to a stored token: it now expires `seconds` from now (negative: it
    expired that long ago), as if it had been issued its lifetime before that."""
    async with app_state(app).sessionmaker() as session, session.begin():
        connection = await session.scalar(
            select(OAuthConnection).where(OAuthConnection.branch_id == branch_id)
        )
        assert connection is not None and connection.token_lifetime_s is not None
        connection.expires_at = utcnow() + timedelta(seconds=seconds)
        connection.last_refreshed_at = connection.expires_at - timedelta(
            seconds=connection.token_lifetime_s
        )


async def connect_expired(
    client: httpx.AsyncClient, token: str, server: LocalOAuthServer
) -> dict[str, Any]:
    """Connect branch-1 with an access token that expired as it was issued."""
    server.token_lifetime_s = 0
    connected = await connect_branch(client, token, server)
    server.token_lifetime_s = 3600
    return connected
