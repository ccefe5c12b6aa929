"""The single-flight refresh path shared by token reads, forced refreshes and the monitor."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import maintenance
from app.core.config import Settings
from app.core.crypto import DecryptionError
from app.core.db import utcnow
from app.tokens import metrics, oauth, refresh_refusals, refresh_store, repository, timing
from app.tokens.context import (
    NOTICE_REFRESH_TOKEN_EXPIRING,
    PreparedStatusChange,
    TokenContext,
)
from app.tokens.exceptions import ProviderError
from app.tokens.models import (
    CLIENT_MISCONFIGURED,
    STATUS_ACTIVE,
    STATUS_NEEDS_REAUTH,
    OAuthClient,
    OAuthConnection,
)
from app.tokens.providers import ProviderSpec
from app.tokens.refresh_lock import RefreshLock, refresh_lock, single_statement_session
from app.tokens.refresh_outcome import RefreshOutcome, RefreshResult
from app.tokens.refresh_writes import apply_failure, apply_token_set, mark_refresh_token_warning
from app.tokens.sealing import open_client_secret, open_refresh_token

# Importers of the refresh path find its outcome here too.
__all__ = [
    "SECRET_REASONS",
    "LoadedRow",
    "RefreshOutcome",
    "RefreshResult",
    "announce_outcome",
    "load_leased",
    "refresh_connection",
    "undecryptable_reason",
]

logger = logging.getLogger("junction.tokens")

# A connection with its client, as read for its refresh.
LoadedRow = tuple[OAuthConnection, OAuthClient]


# Results that wrote the row (and so change what a token read answers).
_WRITTEN = frozenset(
    {RefreshResult.REFRESHED, RefreshResult.REFRESH_FAILED, RefreshResult.NEEDS_REAUTH}
)


async def refresh_connection(
    ctx: TokenContext,
    connection_id: str,
    *,
    force: bool = False,
    trigger: str = "read",
    lease_owner: str | None = None,
    announce: bool = True,
    preloaded: LoadedRow | None = None,
) -> RefreshOutcome:
    """Refresh one connection, at most once at a time across every replica.

    Waiters that get the lock after someone else refreshed find the fresh token and skip, so many
    concurrent callers cause one provider call. `force` ignores freshness, the failure cooldown
    and the minimum interval. `lease_owner` (the monitoring loop, which leased the row): the
    lease is the lock on PostgreSQL (see `refresh_lock`), and the write that stores the outcome
    is fenced by it and releases it (`lease_released`). `announce=False`: the caller makes the
    announcement itself (`announce_outcome`), once it holds nothing the next refresh needs.
    `preloaded`: the row as the loop's batch read found it right after leasing it
    (`load_leased`), read again by nothing before the provider call.
    """
    # Before the provider is called: a refresh token it rotates could not be stored.
    maintenance.refuse_writes(ctx.settings)
    started_at = utcnow()
    async with refresh_lock(
        ctx, connection_id, lease_owner=lease_owner, preloaded=preloaded
    ) as lock:
        if lock is None:
            return _busy(connection_id)
        outcome = await _refresh_locked(ctx, connection_id, lock, force, started_at, trigger)
    # Committed by now (the row lock's transaction ends with its block), and no lock held while
    # the replicas acknowledge.
    if announce:
        await announce_outcome(ctx, outcome)
    return outcome


async def load_leased(ctx: TokenContext, connection_ids: list[str]) -> dict[str, LoadedRow]:
    """The rows of a batch the monitoring loop has just leased, with their clients, in one
    statement, so that each refresh under the lease reads nothing before its provider call.
    Empty on SQLite, where the loop's refresh re-reads its row under the in-process lock (a
    read's refresh there does not wait for the lease)."""
    if ctx.settings.is_sqlite or not connection_ids:
        return {}
    async with single_statement_session(ctx) as session:
        return await repository.load_many_for_refresh(session, connection_ids)


async def announce_outcome(ctx: TokenContext, outcome: RefreshOutcome) -> None:
    """After the commit of a refresh: when it wrote the row, tell this process's loop when the
    connection is next due, and every replica's read cache to drop it (acknowledged)."""
    if outcome.result in _WRITTEN:
        ctx.refresh_scheduled(outcome.refresh_due_at)
        await ctx.invalidate([outcome.connection_id])


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


@dataclass
class _Attempt:
    """A refresh about to call the provider: the row as read, and what the call and the write
    that follows need of it."""

    connection: OAuthConnection
    client: refresh_refusals.ClientInfo
    spec: ProviderSpec
    # None: expired and nothing to refresh it with (only a new login helps).
    refresh_token: str | None
    credentials: oauth.ClientCredentials
    # The ciphertext the write is fenced on (the refresh token this call presents).
    used_refresh_enc: str | None
    previous_status: str
    # The listeners, looked up before the call when a success could record something.
    prepared: PreparedStatusChange | None


@dataclass
class _Answer:
    tokens: oauth.TokenSet | None
    error: ProviderError | None
    # perf_counter() when the provider answered (None: it was not called).
    answered_at: float | None


@dataclass
class _Applied:
    """The answer written on the row in memory, not yet stored."""

    result: RefreshResult
    reason: str
    # This change raises `refresh_token_expiring`.
    warn: bool

    def records(self, attempt: _Attempt) -> bool:
        """Whether the listeners record anything (a status change or the warning)."""
        return self.warn or attempt.previous_status != attempt.connection.status


async def _refresh_locked(
    ctx: TokenContext,
    connection_id: str,
    lock: RefreshLock,
    force: bool,
    started_at: datetime,
    trigger: str,
) -> RefreshOutcome:
    """Read, call, write: the steps of one refresh under its lock."""
    attempt_or_outcome = await _prepare_attempt(ctx, connection_id, lock, force, started_at)
    if isinstance(attempt_or_outcome, RefreshOutcome):
        return attempt_or_outcome
    attempt = attempt_or_outcome
    answer = await _call_provider(ctx, attempt)
    if answer.error is not None:
        # A failure answer carries no new refresh token to lose: these paths may do I/O before
        # their commit.
        settled = await refresh_refusals.settle_refusal(
            ctx, lock, connection_id, attempt, answer.error
        )
        if settled is not None:
            return settled
    # From the provider's answer to the commit nothing is awaited but the commit: a replica
    # killed in between loses a rotated refresh token, and its next refresh would be reuse.
    applied = _apply_answer(ctx, attempt, answer)
    stored, lease_released = await _store(ctx, lock, attempt, applied)
    window_s = None if answer.answered_at is None else time.perf_counter() - answer.answered_at
    if window_s is not None:
        metrics.REFRESH_COMMIT_WINDOW.observe(window_s)
    if not stored:
        return await _lost_race(ctx, connection_id)
    connection = attempt.connection
    _log_outcome(connection, applied.result, applied.reason, trigger, window_s)
    return RefreshOutcome(
        connection_id,
        applied.result,
        connection.status,
        None if answer.tokens is not None else connection.last_error,
        refresh_due_at=connection.refresh_due_at,
        lease_released=lease_released,
    )


async def _prepare_attempt(
    ctx: TokenContext, connection_id: str, lock: RefreshLock, force: bool, started_at: datetime
) -> _Attempt | RefreshOutcome:
    """Read the row and its client and decide: an outcome when the provider is not to be called
    (gone, needs_reauth, client refused, not due, nothing to refresh with, secrets that do not
    decrypt), else the attempt, with the listeners prepared where a success could need them."""
    now = utcnow()
    async with lock.reading() as session:
        if lock.row_read:
            loaded = lock.row  # read with the row lock, or by the loop's batch read
        else:
            loaded = await repository.load_for_refresh(session, connection_id)
        if loaded is None:
            return RefreshOutcome(connection_id, RefreshResult.NOT_FOUND, "unknown", None)
        connection, client = loaded
        spec = ctx.spec_for(client)
        skipped = _skip_reason(lock, connection, client, spec, force, now, started_at, ctx)
        if skipped is not None:
            return skipped
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
            return RefreshOutcome(
                connection_id, RefreshResult.REFRESH_FAILED, connection.status, reason
            )
        # Whatever the listeners must look up is looked up now, before the provider is called,
        # when a success would change the status (a success leaves it active) or warn: a
        # failure stores no new refresh token, so for one the listeners may look up after the
        # answer.
        prepared: PreparedStatusChange | None = None
        may_warn = connection.refresh_token_warned_at is None and timing.refresh_token_expiring(
            connection, ctx.settings, now
        )
        if connection.status != STATUS_ACTIVE or may_warn:
            prepared = await ctx.prepare_status_change(session, connection.tenant_id)
        return _Attempt(
            connection=connection,
            client=refresh_refusals.ClientInfo(
                client.id,
                client.tenant_id,
                client.provider,
                client.status,
                client.status_reason,
                client.updated_at,
            ),
            spec=spec,
            refresh_token=refresh_token,
            credentials=credentials,
            used_refresh_enc=connection.refresh_token_enc,
            previous_status=connection.status,
            prepared=prepared,
        )


def _skip_reason(
    lock: RefreshLock,
    connection: OAuthConnection,
    client: OAuthClient,
    spec: ProviderSpec,
    force: bool,
    now: datetime,
    started_at: datetime,
    ctx: TokenContext,
) -> RefreshOutcome | None:
    """The outcome of a refresh that does not call the provider, read off the row; None: call."""
    connection_id, status, last_error = connection.id, connection.status, connection.last_error
    if status == STATUS_NEEDS_REAUTH:
        return RefreshOutcome(connection_id, RefreshResult.NEEDS_REAUTH, status, last_error)
    if client.status == CLIENT_MISCONFIGURED:
        # Its provider refused the app itself: no call until the client is edited.
        return refresh_refusals.client_refused(connection_id, status, client.status_reason)
    if lock.lease_only and connection.lease_owner != lock.lease_owner:
        # The lease lapsed and was taken over before this refresh began: the new owner's.
        return RefreshOutcome(connection_id, RefreshResult.SKIPPED, status, "lease_lost")
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
            return RefreshOutcome(connection_id, RefreshResult.SKIPPED, status, "no_refresh_token")
    return None


async def _call_provider(ctx: TokenContext, attempt: _Attempt) -> _Answer:
    """The refresh grant. On SQLite and under the loop's lease no transaction is open during
    the call; on PostgreSQL otherwise only the row lock's, which has read and will write nothing
    else."""
    if attempt.refresh_token is None:
        # Expired and nothing to refresh it with: only a new login helps.
        return _Answer(None, ProviderError("no_refresh_token"), None)
    try:
        tokens = await oauth.refresh_grant(
            ctx.http,
            attempt.spec,
            attempt.credentials,
            refresh_token=attempt.refresh_token,
            allow_private=ctx.settings.is_dev,
        )
    except ProviderError as exc:
        return _Answer(None, exc, time.perf_counter())
    return _Answer(tokens, None, time.perf_counter())


def _apply_answer(ctx: TokenContext, attempt: _Attempt, answer: _Answer) -> _Applied:
    """Write the provider's answer on the row in memory (no I/O)."""
    connection, done = attempt.connection, utcnow()
    if answer.tokens is not None:
        apply_token_set(ctx, connection, attempt.spec, answer.tokens, done)
        result, reason = RefreshResult.REFRESHED, "refreshed"
    else:
        assert answer.error is not None
        result = apply_failure(ctx, connection, attempt.spec, answer.error, done)
        reason = answer.error.code
    issued = answer.tokens is not None and answer.tokens.refresh_token is not None
    # A success warns only where the listeners were prepared before the call (no I/O between a
    # rotated refresh token and its commit); a failure may prepare them now.
    warn = (attempt.prepared is not None or answer.tokens is None) and mark_refresh_token_warning(
        ctx, connection, issued_now=issued, now=done
    )
    return _Applied(result, reason, warn)


async def _record(
    ctx: TokenContext, session: AsyncSession, attempt: _Attempt, applied: _Applied
) -> None:
    """Hand the change to the listeners in the session that stores it."""
    connection, prepared = attempt.connection, attempt.prepared
    if prepared is None:
        # Only after a failure (a success that could change the status or warn was prepared
        # beforehand): nothing rotated.
        prepared = await ctx.prepare_status_change(session, connection.tenant_id)
    prepared.record(session, connection, attempt.previous_status, applied.reason)
    if applied.warn:
        expires_at = connection.refresh_token_expires_at
        assert expires_at is not None
        prepared.notify(
            session,
            NOTICE_REFRESH_TOKEN_EXPIRING,
            connection,
            f"refresh token expires at {expires_at.isoformat()}",
        )


async def _store(
    ctx: TokenContext, lock: RefreshLock, attempt: _Attempt, applied: _Applied
) -> tuple[bool, bool]:
    """Store the row and what the listeners record in one commit: whether it was stored, and
    whether that write released the loop's lease."""

    async def record(session: AsyncSession) -> None:
        await _record(ctx, session, attempt, applied)

    recorder = record if applied.records(attempt) else None
    if lock.row_session is not None:
        # The row has been locked since it was read: nobody changed it; the commit writes it.
        if recorder is not None:
            await recorder(lock.row_session)
        await lock.row_session.commit()
        return True, False
    stored = await refresh_store.store_if_unchanged(
        ctx, lock, attempt.connection, attempt.used_refresh_enc, recorder
    )
    return stored, stored and lock.lease_owner is not None


async def _lost_race(ctx: TokenContext, connection_id: str) -> RefreshOutcome:
    """The row changed under a refresh that held no row lock: deleted, or a new login replaced
    the grant while we were refreshing (its tokens win)."""
    async with ctx.sessionmaker() as session:
        current = await repository.get_connection(session, connection_id)
    if current is None:
        return RefreshOutcome(connection_id, RefreshResult.NOT_FOUND, "unknown", None)
    # When it is due (a login's new grant is not yet): the loop hands its lease back then.
    return RefreshOutcome(
        connection_id,
        RefreshResult.SKIPPED,
        current.status,
        None,
        refresh_due_at=current.refresh_due_at,
    )


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
