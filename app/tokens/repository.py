"""Queries of the tokens domain."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, Update, bindparam, delete, or_, select, update
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


async def load_many_for_refresh(
    session: AsyncSession, connection_ids: Sequence[str]
) -> dict[str, tuple[OAuthConnection, OAuthClient]]:
    """Connections with their clients, by id, in one query (no lock)."""
    rows = await session.execute(_LOAD_MANY_FOR_REFRESH, {"ids": list(connection_ids)})
    return {row[0].id: (row[0], row[1]) for row in rows}


# Built once: the loop reads every batch it leases with it.
_LOAD_MANY_FOR_REFRESH = (
    select(OAuthConnection, OAuthClient)
    .join(OAuthClient, OAuthClient.id == OAuthConnection.client_id)
    .where(OAuthConnection.id.in_(bindparam("ids", expanding=True)))
    .execution_options(populate_existing=True)
)


async def connection_exists(session: AsyncSession, connection_id: str) -> bool:
    statement = select(OAuthConnection.id).where(OAuthConnection.id == connection_id)
    return (await session.scalar(statement)) is not None


# --- the refresh lease -------------------------------------------------------------------------
# A connection's lease (lease_owner until lease_expires_at) says who refreshes it: the monitoring
# loop claims due rows with it (app/monitoring/repository.py), and a refresh that holds it takes
# no other lock; a read's refresh leaves a row alone while another owner's lease is live.


def lease_is_free(now: datetime) -> ColumnElement[bool]:
    """SQL: the row's lease is free at `now` (never taken, released, or expired)."""
    return or_(OAuthConnection.lease_expires_at.is_(None), OAuthConnection.lease_expires_at < now)


def holds_live_lease(connection: OAuthConnection, now: datetime) -> bool:
    """Whether someone's lease on the row is live at `now` (the Python side of `lease_is_free`)."""
    expires_at = connection.lease_expires_at
    return connection.lease_owner is not None and expires_at is not None and expires_at >= now


# What a row's lease is when it ends.
_LEASE_RELEASED: dict[str, None] = {"lease_owner": None, "lease_expires_at": None}


def release_lease(connection_ids: Sequence[str], owner: str) -> Update:
    """The one way a lease ends: an UPDATE clearing `owner`'s leases on these rows, fenced by
    owner (a lease another instance took over stays theirs). The loop's release runs it; a
    refresh under the lease stores its outcome with `fenced_write`, which releases the row the
    same way in the same statement."""
    return (
        update(OAuthConnection)
        .where(OAuthConnection.id.in_(list(connection_ids)), OAuthConnection.lease_owner == owner)
        .values(_LEASE_RELEASED)
        .execution_options(synchronize_session=False)
    )


@functools.cache
def fenced_write(columns: frozenset[str], under_lease: bool) -> Update:
    """The compare-and-set UPDATE a refresh stores what it changed with: `columns` of the row
    `:fence_id`, where its refresh token is still `:fence_refresh_enc` (the one the refresh
    presented), and, `under_lease`, where the lease is still `:fence_owner`'s: that write also
    releases it, as `release_lease` does. Parameters: `fenced_write_params`.

    Built once per set of columns (a success writes one set, a failure another), on the table
    rather than the mapped class: the ORM's bulk UPDATE path and a statement built per refresh
    were most of the loop's database CPU, and a statement built once compiles once."""
    table = cast(Table, OAuthConnection.__table__)
    statement = update(table).where(
        table.c.id == bindparam("fence_id"),
        table.c.refresh_token_enc.is_not_distinct_from(bindparam("fence_refresh_enc")),
    )
    values: dict[str, Any] = {name: bindparam(f"set_{name}") for name in sorted(columns)}
    if under_lease:
        statement = statement.where(table.c.lease_owner == bindparam("fence_owner"))
        values.update(_LEASE_RELEASED)
    return statement.values(values)


def fenced_write_params(
    connection_id: str,
    used_refresh_enc: str | None,
    lease_owner: str | None,
    changed: dict[str, Any],
) -> dict[str, Any]:
    """The parameters of `fenced_write(frozenset(changed), lease_owner is not None)`."""
    params = {f"set_{name}": value for name, value in changed.items()}
    params["fence_id"] = connection_id
    params["fence_refresh_enc"] = used_refresh_enc
    if lease_owner is not None:
        params["fence_owner"] = lease_owner
    return params


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
