"""The single-flight refresh path shared by token reads, forced refreshes and the monitor."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import maintenance
from app.core.config import Settings
from app.core.crypto import DecryptionError
from app.core.db import utcnow
from app.tokens import clients, metrics, oauth, repository, timing
from app.tokens.context import (
    NOTICE_REFRESH_TOKEN_EXPIRING,
    ClientStatusChange,
    PreparedStatusChange,
    TokenContext,
)
from app.tokens.exceptions import ProviderError
from app.tokens.models import (
    CLIENT_ACTIVE,
    CLIENT_MISCONFIGURED,
    STATUS_ACTIVE,
    STATUS_NEEDS_REAUTH,
    STATUS_REFRESH_FAILED,
    OAuthClient,
    OAuthConnection,
)
from app.tokens.providers import ProviderSpec
from app.tokens.refresh_lock import RefreshLock, refresh_lock
from app.tokens.sealing import (
    open_client_secret,
    open_refresh_token,
    open_stored_refresh_token,
    seal_access_token,
    seal_refresh_token,
)

logger = logging.getLogger("junction.tokens")


class RefreshResult(StrEnum):
    """How a refresh ended: `RefreshOutcome.result`, and the monitoring loop's count per result.

    ERROR and ABANDONED are the loop's own (its refresher raised; shutdown came first); the
    refresh path never returns them. CLIENT_MISCONFIGURED: the connection's client is (or was
    just found) refused by its provider; the connection row is left as it was.
    """

    REFRESHED = "refreshed"
    NEEDS_REAUTH = "needs_reauth"
    REFRESH_FAILED = "refresh_failed"
    CLIENT_MISCONFIGURED = "client_misconfigured"
    SKIPPED = "skipped"
    NOT_FOUND = "not_found"
    ERROR = "error"
    ABANDONED = "abandoned"


# Results that wrote the row (and so change what a token read answers).
_WRITTEN = frozenset(
    {RefreshResult.REFRESHED, RefreshResult.REFRESH_FAILED, RefreshResult.NEEDS_REAUTH}
)


@dataclass
class RefreshOutcome:
    connection_id: str
    result: RefreshResult
    status: str
    error: str | None
    # When the connection is next due, as written, or as found by a refresh that skipped.
    refresh_due_at: datetime | None = None
    # The monitoring lease of `lease_owner` was cleared in the write that stored the outcome.
    lease_released: bool = False


async def refresh_connection(
    ctx: TokenContext,
    connection_id: str,
    *,
    force: bool = False,
    trigger: str = "read",
    lease_owner: str | None = None,
) -> RefreshOutcome:
    """Refresh one connection, at most once at a time across every replica.

    Waiters that get the lock after someone else refreshed find the fresh token and skip, so many
    concurrent callers cause one provider call. `force` ignores freshness, the failure cooldown
    and the minimum interval. `lease_owner` (the monitoring loop) has its lease on the row
    cleared by the write that stores the outcome, where that write holds the row lock.
    """
    # Before the provider is called: a refresh token it rotates could not be stored.
    maintenance.refuse_writes(ctx.settings)
    started_at = utcnow()
    async with refresh_lock(ctx, connection_id) as lock:
        if lock is None:
            return _busy(connection_id)
        outcome = await _refresh_locked(
            ctx, connection_id, lock, force, started_at, trigger, lease_owner
        )
    # Committed by now (the row lock's transaction ends with its block), and no lock held while
    # the replicas acknowledge.
    if outcome.result in _WRITTEN:
        ctx.refresh_scheduled(outcome.refresh_due_at)
        await ctx.invalidate([connection_id])
    return outcome


# The reasons a refresh gives when the stored secrets do not decrypt (the provider is not called).
UNKNOWN_ENCRYPTION_KEY = "unknown_encryption_key"
UNDECRYPTABLE = "undecryptable"
SECRET_REASONS = (UNKNOWN_ENCRYPTION_KEY, UNDECRYPTABLE)


def undecryptable_reason(
    ctx: TokenContext, connection: OAuthConnection, client: OAuthClient
) -> str:
    """`unknown_encryption_key` when a secret was written under a key not in ENCRYPTION_KEYS;
    `undecryptable` when the key is there and the value still fails (tampered or moved)."""
    stored = (connection.refresh_token_enc, client.client_secret_enc)
    if any(value is not None and not ctx.keyring.knows(value) for value in stored):
        return UNKNOWN_ENCRYPTION_KEY
    return UNDECRYPTABLE


def _busy(connection_id: str) -> RefreshOutcome:
    return RefreshOutcome(connection_id, RefreshResult.SKIPPED, "unknown", "refresh_in_progress")


@dataclass(frozen=True)
class _ClientInfo:
    """What the failure paths need of the client, copied while its row is loaded (a rollback
    on the row lock's session expires the ORM object)."""

    id: str
    tenant_id: str
    provider: str
    status: str
    status_reason: str | None


async def _refresh_locked(
    ctx: TokenContext,
    connection_id: str,
    lock: RefreshLock,
    force: bool,
    started_at: datetime,
    trigger: str,
    lease_owner: str | None,
) -> RefreshOutcome:
    now = utcnow()
    async with lock.transaction() as session:
        if lock.row_session is not None:
            loaded = lock.row  # read with the row lock
        else:
            loaded = await repository.load_for_refresh(session, connection_id)
        if loaded is None:
            return RefreshOutcome(connection_id, RefreshResult.NOT_FOUND, "unknown", None)
        connection, client = loaded
        status, last_error = connection.status, connection.last_error
        spec = ctx.spec_for(client)
        if status == STATUS_NEEDS_REAUTH:
            return RefreshOutcome(connection_id, RefreshResult.NEEDS_REAUTH, status, last_error)
        client_info = _ClientInfo(
            client.id, client.tenant_id, client.provider, client.status, client.status_reason
        )
        if client_info.status == CLIENT_MISCONFIGURED:
            # Its provider refused the app itself: no call until the client is edited.
            return _client_refused(connection_id, status, client_info.status_reason)
        if not force and _not_due(connection, spec, now, started_at, ctx.settings):
            # Refreshed meanwhile, or not due: when it is (the loop hands its lease back).
            return RefreshOutcome(
                connection_id,
                RefreshResult.SKIPPED,
                status,
                last_error,
                refresh_due_at=connection.refresh_due_at,
            )
        if connection.refresh_token_enc is None:
            expired = connection.expires_at is not None and connection.expires_at <= now
            if not expired:
                return RefreshOutcome(
                    connection_id, RefreshResult.SKIPPED, status, "no_refresh_token"
                )
        try:
            refresh_token = open_refresh_token(ctx.keyring, connection)
            credentials = oauth.ClientCredentials(
                client.client_id, open_client_secret(ctx.keyring, client)
            )
        except DecryptionError:
            # A missing or rotated-away key is an operator problem; leave the row as it is and
            # do not call the provider.
            reason = undecryptable_reason(ctx, connection, client)
            logger.error(
                "stored secrets of connection %s do not decrypt (%s)", connection_id, reason
            )
            return RefreshOutcome(connection_id, RefreshResult.REFRESH_FAILED, status, reason)
        used_refresh_enc = connection.refresh_token_enc
        previous = status
        # Whatever the listeners must look up is looked up now, before the provider is called,
        # when a success would change the status (a success leaves it active): a failure stores
        # no new refresh token, so for one the listeners may look up after the answer.
        prepared: PreparedStatusChange | None = None
        may_warn = connection.refresh_token_warned_at is None and timing.refresh_token_expiring(
            connection, ctx.settings, now
        )
        if previous != STATUS_ACTIVE or may_warn:
            prepared = await ctx.prepare_status_change(session, connection.tenant_id)

    tokens: oauth.TokenSet | None = None
    error: ProviderError | None = None
    answered_at: float | None = None
    if refresh_token is None:
        # Expired and nothing to refresh it with: only a new login helps.
        error = ProviderError("no_refresh_token")
    else:
        # On SQLite no transaction is open during the provider call; on PostgreSQL only the row
        # lock's, which has read and will write nothing else.
        try:
            tokens = await oauth.refresh_grant(
                ctx.http,
                spec,
                credentials,
                refresh_token=refresh_token,
                allow_private=ctx.settings.is_dev,
            )
        except ProviderError as exc:
            error = exc
        answered_at = time.perf_counter()

    if error is not None:
        # A failure answer carries no new refresh token to lose: these paths may do I/O before
        # their commit.
        if error.rejects_client:
            return await _client_rejected(
                ctx, lock, connection_id, status, client_info, error, prepared
            )
        if error.code == "invalid_grant":
            replaced = await _grant_replaced_meanwhile(ctx, lock, connection_id, used_refresh_enc)
            if replaced is not None:
                return replaced

    # From the provider's answer to the commit nothing is awaited but the commit: a replica
    # killed in between loses a rotated refresh token, and its next refresh would be reuse.
    done = utcnow()
    if tokens is not None:
        apply_token_set(ctx, connection, spec, tokens, done)
        result, reason = RefreshResult.REFRESHED, "refreshed"
    else:
        assert error is not None
        result = _apply_failure(ctx, connection, spec, error, done)
        reason = error.code
    issued = tokens is not None and tokens.refresh_token is not None
    # A success warns only where the listeners were prepared before the call (no I/O between a
    # rotated refresh token and its commit); a failure may prepare them now.
    warn = (prepared is not None or tokens is None) and _mark_refresh_token_warning(
        ctx, connection, issued_now=issued, now=done
    )

    async def record(session: AsyncSession) -> None:
        nonlocal prepared
        if prepared is None and (previous != connection.status or warn):
            # Only after a failure (a success that could change the status or warn was
            # prepared beforehand): nothing rotated.
            prepared = await ctx.prepare_status_change(session, connection.tenant_id)
        if prepared is None:
            return
        prepared.record(session, connection, previous, reason)
        if warn:
            expires_at = connection.refresh_token_expires_at
            assert expires_at is not None
            prepared.notify(
                session,
                NOTICE_REFRESH_TOKEN_EXPIRING,
                connection,
                f"refresh token expires at {expires_at.isoformat()}",
            )

    lease_released = False
    if lock.row_session is not None:
        # The row has been locked since it was read: nobody changed it; the commit writes it,
        # with the loop's lease cleared (no release of its own to follow).
        if lease_owner is not None and connection.lease_owner == lease_owner:
            connection.lease_owner = None
            connection.lease_expires_at = None
            lease_released = True
        await record(lock.row_session)
        await lock.row_session.commit()
        stored = True
    else:
        stored = await _store_if_unchanged(ctx, connection, used_refresh_enc, record)
    window_s = None if answered_at is None else time.perf_counter() - answered_at
    if window_s is not None:
        metrics.REFRESH_COMMIT_WINDOW.observe(window_s)
    if not stored:
        return await _lost_race(ctx, connection_id)
    _log_outcome(connection, result, reason, trigger, window_s)
    return RefreshOutcome(
        connection_id,
        result,
        connection.status,
        None if tokens is not None else connection.last_error,
        refresh_due_at=connection.refresh_due_at,
        lease_released=lease_released,
    )


def _client_refused(connection_id: str, status: str, reason: str | None) -> RefreshOutcome:
    return RefreshOutcome(
        connection_id, RefreshResult.CLIENT_MISCONFIGURED, status, reason or CLIENT_MISCONFIGURED
    )


async def _client_rejected(
    ctx: TokenContext,
    lock: RefreshLock,
    connection_id: str,
    status: str,
    client: _ClientInfo,
    error: ProviderError,
    prepared: PreparedStatusChange | None,
) -> RefreshOutcome:
    """The provider refused the client itself: mark the client misconfigured (one conditional
    UPDATE, so of many connections failing at once exactly one raises its event) and leave the
    connection as it was: one client problem, not one failure per connection."""
    now = utcnow()
    async with lock.transaction() as session:
        if await clients.mark_misconfigured(session, client.id, error.code, now):
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
    return _client_refused(connection_id, status, error.code)


async def _grant_replaced_meanwhile(
    ctx: TokenContext, lock: RefreshLock, connection_id: str, used_refresh_enc: str | None
) -> RefreshOutcome | None:
    """After `invalid_grant`, re-read the row before declaring the grant dead: when it no longer
    holds the refresh token this refresh used (a login stored a new grant meanwhile), the
    provider refused a token that is already gone, and the row's new tokens stand.

    On SQLite no transaction was open during the call, so a login may have written the row. On
    PostgreSQL the row lock kept every writer out through the call: the lock's transaction
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


def _mark_refresh_token_warning(
    ctx: TokenContext, connection: OAuthConnection, *, issued_now: bool, now: datetime
) -> bool:
    """Whether this change raises `refresh_token_expiring` (and marks the row warned): once per
    refresh token, when it lapses within the warning window and this change did not just issue
    it (a provider that rotates refresh tokens renews the grant with each refresh)."""
    if issued_now or connection.refresh_token_warned_at is not None:
        return False
    if connection.status == STATUS_NEEDS_REAUTH:
        return False  # the grant is gone already; needs_reauth says so
    if not timing.refresh_token_expiring(connection, ctx.settings, now):
        return False
    connection.refresh_token_warned_at = now
    return True


async def _store_if_unchanged(
    ctx: TokenContext,
    connection: OAuthConnection,
    used_refresh_enc: str | None,
    record: Callable[[AsyncSession], Awaitable[None]],
) -> bool:
    """Without a row lock (SQLite): one compare-and-set UPDATE of what the refresh changed, where
    the stored refresh token is still the one used, and the listeners' rows, in one commit.

    A stored refresh token that changed only its ciphertext (`junction keys rewrap` re-encrypted
    the same token meanwhile) is still the one used: the update is tried again against it, or
    the provider's answer, perhaps a rotated refresh token, would be lost.
    """
    changed = _changed_columns(connection)
    expected = used_refresh_enc
    for _attempt in range(3):
        async with ctx.sessionmaker() as session, session.begin():
            statement = (
                update(OAuthConnection)
                .where(
                    OAuthConnection.id == connection.id,
                    OAuthConnection.refresh_token_enc.is_not_distinct_from(expected),
                )
                .values(changed)
                .execution_options(synchronize_session=False)
            )
            if (await session.execute(statement)).rowcount == 1:  # type: ignore[attr-defined]
                await record(session)
                return True
            current = await session.scalar(
                select(OAuthConnection.refresh_token_enc).where(OAuthConnection.id == connection.id)
            )
        if not _same_refresh_token(ctx, connection, expected, current):
            return False
        expected = current
    return False


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


async def _lost_race(ctx: TokenContext, connection_id: str) -> RefreshOutcome:
    """The row changed under a refresh that held no row lock: deleted, or a new login replaced
    the grant while we were refreshing (its tokens win)."""
    async with ctx.sessionmaker() as session:
        current = await repository.get_connection(session, connection_id)
    if current is None:
        return RefreshOutcome(connection_id, RefreshResult.NOT_FOUND, "unknown", None)
    return RefreshOutcome(connection_id, RefreshResult.SKIPPED, current.status, None)


def _not_due(
    connection: OAuthConnection,
    spec: ProviderSpec,
    now: datetime,
    started_at: datetime,
    settings: Settings,
) -> bool:
    if connection.last_refreshed_at is not None and connection.last_refreshed_at >= started_at:
        return True  # another worker refreshed it while this one waited for the lock
    return not timing.refresh_is_due(connection, spec, now, settings)


def apply_token_set(
    ctx: TokenContext,
    connection: OAuthConnection,
    spec: ProviderSpec,
    tokens: oauth.TokenSet,
    now: datetime,
) -> None:
    """Store a new token set on the row; a response without a refresh token keeps the old one."""
    seal_access_token(ctx.keyring, connection, tokens.access_token)
    if tokens.refresh_token is not None:
        seal_refresh_token(ctx.keyring, connection, tokens.refresh_token)
    _apply_refresh_token_expiry(connection, tokens, now)
    connection.token_type = tokens.token_type
    if tokens.scope is not None:
        connection.scope = tokens.scope
    connection.expires_at = (
        now + timedelta(seconds=tokens.expires_in) if tokens.expires_in is not None else None
    )
    # The lifetime bounds the token's refresh margin (app/tokens/timing.py).
    connection.token_lifetime_s = tokens.expires_in
    connection.status = STATUS_ACTIVE
    connection.last_refreshed_at = now
    connection.last_error = None
    connection.failure_count = 0
    connection.next_attempt_at = None
    connection.updated_at = now
    connection.refresh_due_at = timing.compute_refresh_due_at(connection, spec, ctx.settings)


def _apply_refresh_token_expiry(
    connection: OAuthConnection, tokens: oauth.TokenSet, now: datetime
) -> None:
    """`refresh_token_expires_in`, where the provider sends it: a new refresh token without it
    has an unknown expiry (NULL) and may be warned of anew; a response without a new refresh
    token keeps the old expiry unless it states one."""
    if tokens.refresh_token is not None:
        connection.refresh_token_expires_at = None
        connection.refresh_token_warned_at = None
    if tokens.refresh_token_expires_in is not None:
        connection.refresh_token_expires_at = now + timedelta(
            seconds=tokens.refresh_token_expires_in
        )


def backoff_delay_s(settings: Settings, failure_count: int) -> float:
    """Cooldown after the n-th consecutive failure: cooldown, 2x, 4x ... capped."""
    exponent = max(failure_count - 1, 0)
    delay = settings.token_refresh_cooldown_s * (2 ** min(exponent, 30))
    return float(min(delay, settings.token_refresh_backoff_max_s))


def _apply_failure(
    ctx: TokenContext,
    connection: OAuthConnection,
    spec: ProviderSpec,
    error: ProviderError,
    now: datetime,
) -> RefreshResult:
    connection.failure_count = (connection.failure_count or 0) + 1
    connection.last_error = error.code[:255]
    connection.updated_at = now
    if error.revokes_grant:
        connection.status = STATUS_NEEDS_REAUTH
        connection.next_attempt_at = None
        connection.refresh_due_at = None
        return RefreshResult.NEEDS_REAUTH
    connection.status = STATUS_REFRESH_FAILED
    delay = backoff_delay_s(ctx.settings, connection.failure_count)
    if error.retry_after_s is not None:
        # The provider said when to come back (429 or 503 with Retry-After): not before then.
        delay = max(delay, error.retry_after_s)
    connection.next_attempt_at = now + timedelta(seconds=delay)
    connection.refresh_due_at = timing.compute_refresh_due_at(connection, spec, ctx.settings)
    return RefreshResult.REFRESH_FAILED


def _log_outcome(
    connection: OAuthConnection,
    result: RefreshResult,
    reason: str,
    trigger: str,
    window_s: float | None,
) -> None:
    level = logging.INFO if result == RefreshResult.REFRESHED else logging.WARNING
    # commit_window_ms: from the provider's answer to the commit storing it (docs/tokens.md).
    window = "-" if window_s is None else f"{window_s * 1000:.2f}"
    logger.log(
        level,
        "token refresh %s: provider=%s connection=%s trigger=%s reason=%s commit_window_ms=%s",
        result,
        connection.provider,
        connection.id,
        trigger,
        reason,
        window,
    )
