"""A provider's refusal of a refresh that is not this connection's failure: the client itself
was refused (one client problem, not one failure per connection), or `invalid_grant` for a
refresh token another writer had already replaced. Part of the refresh path (refresh.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.core.db import utcnow
from app.tokens import clients, repository
from app.tokens.context import ClientStatusChange, PreparedStatusChange, TokenContext
from app.tokens.exceptions import ProviderError
from app.tokens.models import CLIENT_ACTIVE, CLIENT_MISCONFIGURED
from app.tokens.refresh_lock import RefreshLock
from app.tokens.refresh_outcome import RefreshOutcome, RefreshResult

logger = logging.getLogger("junction.tokens")


@dataclass(frozen=True)
class ClientInfo:
    """What the failure paths need of the client, copied while its row is loaded (a rollback
    on the row lock's session expires the ORM object)."""

    id: str
    tenant_id: str
    provider: str
    status: str
    status_reason: str | None
    # The client as read: it is marked misconfigured only if not edited since.
    updated_at: datetime


class RefusedAttempt(Protocol):
    """What a refused attempt (refresh.py's `_Attempt`) tells the refusal paths."""

    client: ClientInfo
    prepared: PreparedStatusChange | None
    previous_status: str
    used_refresh_enc: str | None


async def settle_refusal(
    ctx: TokenContext,
    lock: RefreshLock,
    connection_id: str,
    attempt: RefusedAttempt,
    error: ProviderError,
) -> RefreshOutcome | None:
    """The failures that do not end as a failure of this connection: the client refused (a
    client problem), or `invalid_grant` for a refresh token already replaced. None: neither."""
    if error.rejects_client:
        return await _client_rejected(ctx, lock, connection_id, attempt, error)
    if error.code == "invalid_grant":
        return await _grant_replaced_meanwhile(ctx, lock, connection_id, attempt.used_refresh_enc)
    return None


def client_refused(connection_id: str, status: str, reason: str | None) -> RefreshOutcome:
    return RefreshOutcome(
        connection_id, RefreshResult.CLIENT_MISCONFIGURED, status, reason or CLIENT_MISCONFIGURED
    )


async def _client_rejected(
    ctx: TokenContext,
    lock: RefreshLock,
    connection_id: str,
    attempt: RefusedAttempt,
    error: ProviderError,
) -> RefreshOutcome:
    """The provider refused the client itself: mark the client misconfigured (one conditional
    UPDATE, so of many connections failing at once exactly one raises its event) and leave the
    connection as it was: one client problem, not one failure per connection."""
    client, prepared, status = attempt.client, attempt.prepared, attempt.previous_status
    now = utcnow()
    async with lock.transaction() as session:
        refused = await clients.mark_misconfigured(
            session, client.id, error.code, now, read_at_version=client.updated_at
        )
        if refused:
            if prepared is None:
                # A failure answer: nothing rotated, the listeners may look up now.
                prepared = await ctx.prepare_status_change(session, client.tenant_id)
            change = ClientStatusChange(
                tenant_id=client.tenant_id,
                provider=client.provider,
                client_id=client.id,
                previous_status=CLIENT_ACTIVE,
                new_status=CLIENT_MISCONFIGURED,
                reason=error.code,
                occurred_at=now,
            )
            prepared.emit(session, change)
            logger.warning(
                "client %s marked misconfigured: provider=%s reason=%s",
                client.id,
                client.provider,
                error.code,
            )
        if lock.row_session is not None:
            await lock.row_session.commit()
    return client_refused(connection_id, status, error.code)


async def _grant_replaced_meanwhile(
    ctx: TokenContext, lock: RefreshLock, connection_id: str, used_refresh_enc: str | None
) -> RefreshOutcome | None:
    """After `invalid_grant`, re-read the row before declaring the grant dead: when it no longer
    holds the refresh token this refresh used (a login stored a new grant meanwhile), the
    provider refused a token that is already gone, and the row's new tokens stand.

    On SQLite and under the loop's lease alone no transaction was open during the call, so a
    login may have written the row. Otherwise, on PostgreSQL, the row lock kept every writer
    out through the call: the lock's transaction
    (which wrote nothing) is ended first, so a login that was waiting on the lock goes first,
    and the row is read and locked again in a new transaction (refreshing the session's copy
    of it in place), which the caller then writes.
    Returns the outcome when the grant was replaced (or the row deleted), None otherwise.
    """
    if lock.row_session is not None:
        await lock.row_session.rollback()
        current = await repository.get_connection(lock.row_session, connection_id, for_update=True)
    else:
        async with ctx.sessionmaker() as session:
            current = await repository.get_connection(session, connection_id)
    if current is None:
        return RefreshOutcome(connection_id, RefreshResult.NOT_FOUND, "unknown", None)
    if current.refresh_token_enc == used_refresh_enc:
        return None
    logger.info(
        "invalid_grant for a refresh token already replaced: connection=%s keeps its new grant",
        connection_id,
    )
    return RefreshOutcome(connection_id, RefreshResult.SKIPPED, current.status, None)
