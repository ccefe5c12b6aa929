"""A refresh's write when no row lock is held: one compare-and-set UPDATE of what it changed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.crypto import DecryptionError
from app.tokens import repository
from app.tokens.context import TokenContext
from app.tokens.models import OAuthConnection
from app.tokens.refresh_lock import RefreshLock, single_statement_session
from app.tokens.sealing import open_stored_refresh_token


async def store_if_unchanged(
    ctx: TokenContext,
    lock: RefreshLock,
    connection: OAuthConnection,
    used_refresh_enc: str | None,
    record: Callable[[AsyncSession], Awaitable[None]] | None,
) -> bool:
    """Without a row lock (SQLite, or the loop's lease): one compare-and-set UPDATE of what the
    refresh changed, where the stored refresh token is still the one used, and the listeners'
    rows (`record`), in one commit. Under the loop's lease the UPDATE is also fenced by the
    lease and releases it (`repository.fenced_write`); with nothing to record it is sent on
    its own in autocommit on PostgreSQL: one round trip for the whole write.

    A stored refresh token that changed only its ciphertext (`junction keys rewrap` re-encrypted
    the same token meanwhile) is still the one used: the update is tried again against it, or
    the provider's answer, perhaps a rotated refresh token, would be lost.
    """
    owner = lock.lease_owner
    changed = _changed_columns(connection)
    statement = repository.fenced_write(frozenset(changed), owner is not None)
    expected = used_refresh_enc
    for _attempt in range(3):
        async with _write_session(ctx, transactional=record is not None) as session:
            params = repository.fenced_write_params(connection.id, expected, owner, changed)
            if (await session.execute(statement, params)).rowcount == 1:  # type: ignore[attr-defined]
                if record is not None:
                    await record(session)
                return True
            current = (
                await session.execute(
                    select(OAuthConnection.refresh_token_enc, OAuthConnection.lease_owner).where(
                        OAuthConnection.id == connection.id
                    )
                )
            ).first()
        if current is None or (owner is not None and current.lease_owner != owner):
            return False  # deleted, or the lease lapsed and was taken over
        if not _same_refresh_token(ctx, connection, expected, current.refresh_token_enc):
            return False
        expected = current.refresh_token_enc
    return False


@contextlib.asynccontextmanager
async def _write_session(ctx: TokenContext, *, transactional: bool) -> AsyncIterator[AsyncSession]:
    """A transaction for a write of several statements; for a lone UPDATE on PostgreSQL a
    `single_statement_session` (it is atomic by itself: no BEGIN or COMMIT to send)."""
    if transactional or ctx.settings.is_sqlite:
        async with ctx.sessionmaker() as session, session.begin():
            yield session
        return
    async with single_statement_session(ctx) as session:
        yield session


def _same_refresh_token(
    ctx: TokenContext, connection: OAuthConnection, used: str | None, current: str | None
) -> bool:
    """Whether two ciphertexts of the connection's refresh token hold the same token."""
    if used is None or current is None:
        return False
    try:
        opened = [
            open_stored_refresh_token(ctx.keyring, connection.tenant_id, connection.id, value)
            for value in (used, current)
        ]
    except DecryptionError:
        return False
    return opened[0] == opened[1]


def _changed_columns(connection: OAuthConnection) -> dict[str, Any]:
    state = inspect(connection)
    return {attr.key: attr.value for attr in state.attrs if attr.history.has_changes()}
