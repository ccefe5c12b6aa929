"""Queries of the tokens domain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.tokens.models import OAuthClient, OAuthConnection, OAuthState


async def get_client(session: AsyncSession, client_pk: str) -> OAuthClient | None:
    return await session.get(OAuthClient, client_pk)


async def list_clients(
    session: AsyncSession, tenant_id: str, provider: str | None = None
) -> list[OAuthClient]:
    statement = select(OAuthClient).where(OAuthClient.tenant_id == tenant_id)
    if provider:
        statement = statement.where(OAuthClient.provider == provider)
    result = await session.scalars(statement.order_by(OAuthClient.created_at, OAuthClient.id))
    return list(result)


async def get_connection(
    session: AsyncSession, connection_id: str, *, for_update: bool = False
) -> OAuthConnection | None:
    statement = select(OAuthConnection).where(OAuthConnection.id == connection_id)
    if for_update:
        statement = statement.with_for_update()
    # populate_existing: a re-read after another worker's commit must not return the cached copy.
    return await session.scalar(statement.execution_options(populate_existing=True))


async def load_for_refresh(
    session: AsyncSession, connection_id: str, *, lock: bool = False
) -> tuple[OAuthConnection, OAuthClient] | None:
    """The connection with its client, in one query. With `lock` (PostgreSQL), the connection's
    row is locked `FOR UPDATE SKIP LOCKED` (its client's is not: many connections share it), so
    a row another transaction holds reads as missing (`connection_exists` tells the two apart)."""
    statement = (
        select(OAuthConnection, OAuthClient)
        .join(OAuthClient, OAuthClient.id == OAuthConnection.client_id)
        .where(OAuthConnection.id == connection_id)
    )
    if lock:
        statement = statement.with_for_update(of=OAuthConnection, skip_locked=True)
    # populate_existing: a re-read after another worker's commit must not return the cached copy.
    row = (await session.execute(statement.execution_options(populate_existing=True))).first()
    return None if row is None else (row[0], row[1])


async def connection_exists(session: AsyncSession, connection_id: str) -> bool:
    statement = select(OAuthConnection.id).where(OAuthConnection.id == connection_id)
    return (await session.scalar(statement)) is not None


async def find_connection(
    session: AsyncSession, tenant_id: str, provider: str, branch_id: str
) -> OAuthConnection | None:
    statement = select(OAuthConnection).where(
        OAuthConnection.tenant_id == tenant_id,
        OAuthConnection.provider == provider,
        OAuthConnection.branch_id == branch_id,
    )
    return await session.scalar(statement.execution_options(populate_existing=True))


async def consume_state(session: AsyncSession, key: str) -> OAuthState | None:
    """Delete the state and return it, in one statement: of two concurrent callbacks with the same
    state exactly one gets the row."""
    statement = delete(OAuthState).where(OAuthState.id == key).returning(OAuthState)
    return (await session.execute(statement)).scalars().first()


async def delete_expired_states(session: AsyncSession, now: Any) -> None:
    await session.execute(delete(OAuthState).where(OAuthState.expires_at < now))


# Built once: constructing the statement per request costs more than running it.
_TOKEN_READ = (
    select(
        OAuthConnection.id,
        OAuthConnection.tenant_id,
        OAuthConnection.provider,
        OAuthConnection.branch_id,
        OAuthConnection.access_token_enc,
        OAuthConnection.token_type,
        OAuthConnection.scope,
        OAuthConnection.expires_at,
        OAuthConnection.token_lifetime_s,
        OAuthConnection.last_refreshed_at,
        OAuthConnection.status,
        OAuthConnection.last_error,
        OAuthConnection.last_used_at,
        OAuthConnection.next_attempt_at,
        OAuthClient.provider_settings,
    )
    .join(OAuthClient, OAuthClient.id == OAuthConnection.client_id)
    .where(
        OAuthConnection.tenant_id == bindparam("tenant_id"),
        OAuthConnection.provider == bindparam("provider"),
        OAuthConnection.branch_id == bindparam("branch_id"),
    )
)


async def read_token_row(
    conn: AsyncConnection, tenant_id: str, provider: str, branch_id: str
) -> Any | None:
    """The columns a token read needs, as a plain row on a bare connection: the hot path skips
    the ORM session and its identity map."""
    params = {"tenant_id": tenant_id, "provider": provider, "branch_id": branch_id}
    return (await conn.execute(_TOKEN_READ, params)).first()
