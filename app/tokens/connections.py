"""A tenant's connections: listing them with their status, and disconnecting one (revoke its
grant at the provider where it can, then delete it)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.crypto import DecryptionError
from app.core.db import utcnow
from app.core.pagination import KeyCursor
from app.tokens import oauth, repository, timing
from app.tokens.context import NOTICE_DISCONNECTED, ConnectionNotice, TokenContext
from app.tokens.exceptions import ProviderError
from app.tokens.models import OAuthClient, OAuthConnection
from app.tokens.providers import ProviderRegistry, ProviderSpec
from app.tokens.reads import find_token_row
from app.tokens.sealing import open_access_token, open_client_secret, open_refresh_token

logger = logging.getLogger("junction.tokens")


@dataclass(frozen=True)
class ConnectionFilter:
    tenant_id: str
    provider: str | None = None
    branch_id: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class ConnectionListing:
    rows: list[Row[Any]]
    next_cursor: str | None
    counts: dict[str, int]


async def list_connections(
    session: AsyncSession,
    registry: ProviderRegistry,
    wanted: ConnectionFilter,
    *,
    now: datetime,
    limit: int,
    cursor: str | None,
) -> ConnectionListing:
    """A page of the tenant's connections in (provider, branch_id) order, keyset-paginated on
    that unique key, with their status (the one rule, in SQL), and the counts per status of every
    connection the other filters match: two queries however many connections there are."""
    status = timing.connection_status_sql(session, registry, now)
    scope = [OAuthConnection.tenant_id == wanted.tenant_id]
    if wanted.provider is not None:
        scope.append(OAuthConnection.provider == wanted.provider)
    if wanted.branch_id is not None:
        scope.append(OAuthConnection.branch_id == wanted.branch_id)

    page = (
        select(
            OAuthConnection,
            OAuthClient.status.label("client_status"),
            status.label("reported_status"),
        )
        .join(OAuthClient, OAuthClient.id == OAuthConnection.client_id)
        .where(*scope)
        .order_by(OAuthConnection.provider, OAuthConnection.branch_id)
        .limit(limit + 1)
    )
    if wanted.status is not None:
        page = page.where(status == wanted.status)
    if cursor:
        after = KeyCursor.decode_keys(cursor, 2)
        page = page.where(tuple_(OAuthConnection.provider, OAuthConnection.branch_id) > after)
    rows = list((await session.execute(page)).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1].OAuthConnection
        next_cursor = KeyCursor((last.provider, last.branch_id)).encode()

    counting = (
        select(status, func.count())
        .select_from(OAuthConnection)
        .join(OAuthClient, OAuthClient.id == OAuthConnection.client_id)
        .where(*scope)
        .group_by(status)
    )
    counts = dict.fromkeys(timing.CONNECTION_STATUSES, 0)
    for name, count in (await session.execute(counting)).all():
        counts[name] = int(count)
    return ConnectionListing(rows=rows, next_cursor=next_cursor, counts=counts)


# Revocations of one tenant's connections run this many at a time.
REVOKE_CONCURRENCY = 8


async def disconnect(ctx: TokenContext, tenant_id: str, provider: str, branch_id: str) -> bool:
    """Revoke at the provider where it can, then delete; True when the provider revoked it."""
    found = await find_token_row(ctx, tenant_id, provider, branch_id)
    revoked = False
    if found.spec.revoke_url is not None:
        async with ctx.sessionmaker() as session:
            connection = await repository.get_connection(session, found.id)
        if connection is not None:
            revoked = await _revoke(ctx, connection, found.spec)
    async with ctx.sessionmaker() as session, session.begin():
        deleted = await session.execute(
            delete(OAuthConnection).where(OAuthConnection.id == found.id)
        )
        if deleted.rowcount:  # type: ignore[attr-defined]
            # In the transaction of the delete; not when a concurrent disconnect deleted it.
            prepared = await ctx.prepare_status_change(session, tenant_id)
            prepared.emit(
                session,
                ConnectionNotice(
                    kind=NOTICE_DISCONNECTED,
                    tenant_id=found.tenant_id,
                    provider=found.provider,
                    branch_id=found.branch_id,
                    connection_id=found.id,
                    reason="revoked" if revoked else "deleted",
                    occurred_at=utcnow(),
                ),
            )
    await ctx.invalidate([found.id])
    return revoked


async def _revoke(ctx: TokenContext, connection: OAuthConnection, spec: ProviderSpec) -> bool:
    async with ctx.sessionmaker() as session:
        client = await repository.get_client(session, connection.client_id)
    if client is None:
        return False
    try:
        refresh_token = open_refresh_token(ctx.keyring, connection)
        token, hint = (
            (refresh_token, "refresh_token")
            if refresh_token
            else (open_access_token(ctx.keyring, connection), "access_token")
        )
        credentials = oauth.ClientCredentials(
            client.client_id, open_client_secret(ctx.keyring, client)
        )
        await oauth.revoke_token(
            ctx.http,
            spec,
            credentials,
            token=token,
            token_type_hint=hint,
            allow_private=ctx.settings.is_dev,
        )
    except DecryptionError:
        return False
    except ProviderError as exc:
        # The local copy is deleted regardless; the grant may outlive it at the provider.
        logger.warning("revocation failed: provider=%s reason=%s", connection.provider, exc.code)
        return False
    return True


@dataclass(frozen=True)
class TenantRevocations:
    """What revoking every connection of a tenant achieved (best effort, bounded in time)."""

    connections: int
    attempted: int  # connections whose provider has a revoke URL
    revoked: int
    failed: int  # the provider refused or failed, or a secret did not decrypt
    timed_out: int  # still running when the time budget ran out

    def as_dict(self) -> dict[str, int]:
        return {
            "connections": self.connections,
            "attempted": self.attempted,
            "revoked": self.revoked,
            "failed": self.failed,
            "timed_out": self.timed_out,
        }


async def revoke_tenant_connections(
    ctx: TokenContext, tenant_id: str, *, budget_s: float
) -> TenantRevocations:
    """Revoke each of the tenant's connections at its provider, concurrently, all within
    `budget_s` seconds; deletes nothing (the caller deletes the tenant's rows afterwards)."""
    async with ctx.sessionmaker() as session:
        rows = (
            await session.execute(
                select(OAuthConnection, OAuthClient)
                .join(OAuthClient, OAuthClient.id == OAuthConnection.client_id)
                .where(OAuthConnection.tenant_id == tenant_id)
            )
        ).all()
    pending = [(conn, spec) for conn, client in rows if (spec := ctx.spec_for(client)).revoke_url]
    if not pending:
        return TenantRevocations(len(rows), 0, 0, 0, 0)
    limit = asyncio.Semaphore(REVOKE_CONCURRENCY)

    async def revoke_one(connection: OAuthConnection, spec: ProviderSpec) -> bool:
        async with limit:
            return await _revoke(ctx, connection, spec)

    tasks = [asyncio.create_task(revoke_one(conn, spec)) for conn, spec in pending]
    done, running = await asyncio.wait(tasks, timeout=budget_s)
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    revoked = sum(1 for task in done if task.exception() is None and task.result())
    if running:
        logger.warning(
            "offboarding: %d revocations still running after %.1f s were abandoned",
            len(running),
            budget_s,
        )
    return TenantRevocations(
        connections=len(rows),
        attempted=len(pending),
        revoked=revoked,
        failed=len(done) - revoked,
        timed_out=len(running),
    )
