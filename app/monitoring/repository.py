"""Queries of the monitoring loop: leasing due connections, releasing them, counting statuses."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import is_postgres
from app.tokens import models as token_models
from app.tokens import repository as token_repository

Connection = token_models.OAuthConnection
Client = token_models.OAuthClient


@dataclass(frozen=True)
class LeasedConnection:
    id: str
    provider: str


def due_connections_query(
    now: datetime, limit: int, exclude_providers: Collection[str] = ()
) -> Select[str]:
    """The due connections, oldest due first: a range scan of the refresh_due_at index.

    Rows in backoff or without a refresh token have refresh_due_at in the future or NULL (kept by
    app/tokens), so they never match; a lease is skipped until it has expired. Connections of a
    misconfigured client wait for the client to be edited: a subquery over the few such clients
    (no join, so PostgreSQL's SKIP LOCKED locks connection rows only).
    """
    misconfigured = select(Client.id).where(Client.status == token_models.CLIENT_MISCONFIGURED)
    query = (
        select(Connection.id)
        .where(
            Connection.refresh_due_at <= now,
            token_repository.lease_is_free(now),
            Connection.client_id.not_in(misconfigured),
        )
        .order_by(Connection.refresh_due_at)
        .limit(limit)
    )
    if exclude_providers:
        query = query.where(Connection.provider.not_in(list(exclude_providers)))
    return query


async def next_due_at(session: AsyncSession, now: datetime) -> datetime | None:
    """The earliest refresh_due_at after `now` (the loop's next wake): one index probe."""
    statement = select(func.min(Connection.refresh_due_at)).where(Connection.refresh_due_at > now)
    due: datetime | None = await session.scalar(statement)
    return due


async def lease_due_connections(
    session: AsyncSession,
    *,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    exclude_providers: Collection[str] = (),
) -> list[LeasedConnection]:
    """Claim up to `limit` due connections for `owner` until `lease_until`, in one statement.

    On PostgreSQL the candidate rows are locked with SKIP LOCKED, so concurrent replicas each
    claim different rows without waiting on one another; on SQLite the single UPDATE is atomic.
    """
    due = due_connections_query(now, limit, exclude_providers)
    if is_postgres(session):
        due = due.with_for_update(skip_locked=True)
    candidates = due.cte("due_connections")
    statement = (
        update(Connection)
        .where(Connection.id.in_(select(candidates.c.id)))
        .values(lease_owner=owner, lease_expires_at=lease_until)
        .returning(Connection.id, Connection.provider)
        .execution_options(synchronize_session=False)
    )
    rows = (await session.execute(statement)).all()
    return [LeasedConnection(id=row.id, provider=row.provider) for row in rows]


async def release_leases(session: AsyncSession, connection_ids: Sequence[str], owner: str) -> int:
    """Clear our leases; fenced by owner, so a lease another instance took over stays theirs."""
    if not connection_ids:
        return 0
    result = await session.execute(token_repository.release_lease(connection_ids, owner))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def extend_leases(
    session: AsyncSession, connection_ids: Sequence[str], owner: str, lease_until: datetime
) -> set[str]:
    """Extend our leases to `lease_until`; the ids extended (fenced by owner, like a release).

    On PostgreSQL a row locked by a read's refresh is skipped rather than waited for: that
    refresh holds it through its provider call, and a lease claim skips locked rows anyway.
    """
    if not connection_ids:
        return set()
    ours = select(Connection.id).where(
        Connection.id.in_(list(connection_ids)), Connection.lease_owner == owner
    )
    if is_postgres(session):
        ours = ours.with_for_update(skip_locked=True)
    candidates = ours.cte("our_leases")
    statement = (
        update(Connection)
        .where(Connection.id.in_(select(candidates.c.id)))
        .values(lease_expires_at=lease_until)
        .returning(Connection.id)
        .execution_options(synchronize_session=False)
    )
    return set((await session.scalars(statement)).all())


async def status_counts_by_provider(session: AsyncSession) -> dict[str, dict[str, int]]:
    """Stored statuses per provider, across tenants: one GROUP BY."""
    statement = select(Connection.provider, Connection.status, func.count()).group_by(
        Connection.provider, Connection.status
    )
    counts: dict[str, dict[str, int]] = {}
    for provider, status, count in (await session.execute(statement)).all():
        counts.setdefault(provider, {})[status] = int(count)
    return counts
