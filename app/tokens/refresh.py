"""The single-flight refresh path shared by token reads, forced refreshes and the monitor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import inspect, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import CacheUnavailable
from app.core.config import Settings
from app.core.crypto import DecryptionError
from app.core.db import new_id, utcnow
from app.tokens import metrics, oauth, repository, timing
from app.tokens.context import PreparedStatusChange, TokenContext
from app.tokens.exceptions import ProviderError
from app.tokens.models import (
    STATUS_ACTIVE,
    STATUS_NEEDS_REAUTH,
    STATUS_REFRESH_FAILED,
    OAuthClient,
    OAuthConnection,
)
from app.tokens.providers import ProviderSpec
from app.tokens.sealing import (
    open_client_secret,
    open_refresh_token,
    seal_access_token,
    seal_refresh_token,
)

logger = logging.getLogger("junction.tokens")

_LOCK_POLL_S = 0.02


class RefreshResult(StrEnum):
    """How a refresh ended: `RefreshOutcome.result`, and the monitoring loop's count per result.

    ERROR and ABANDONED are the loop's own (its refresher raised; shutdown came first); the
    refresh path never returns them.
    """

    REFRESHED = "refreshed"
    NEEDS_REAUTH = "needs_reauth"
    REFRESH_FAILED = "refresh_failed"
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


async def refresh_connection(
    ctx: TokenContext, connection_id: str, *, force: bool = False, trigger: str = "read"
) -> RefreshOutcome:
    """Refresh one connection, at most once at a time across every replica.

    Waiters that get the lock after someone else refreshed find the fresh token and skip, so many
    concurrent callers cause one provider call. `force` ignores freshness and the failure cooldown.
    """
    started_at = utcnow()
    async with _refresh_lock(ctx, connection_id) as lock:
        if lock is None:
            return _busy(connection_id)
        outcome = await _refresh_locked(ctx, connection_id, lock, force, started_at, trigger)
    # Committed by now (the row lock's transaction ends with its block), and no lock held while
    # the replicas acknowledge.
    if outcome.result in _WRITTEN:
        await ctx.invalidate([connection_id])
    return outcome


def _busy(connection_id: str) -> RefreshOutcome:
    return RefreshOutcome(connection_id, RefreshResult.SKIPPED, "unknown", "refresh_in_progress")


# --- the refresh lock -----------------------------------------------------------------------


@dataclass
class _Lock:
    """A held refresh lock; `row_session` is set when it includes a PostgreSQL row lock, and then
    all reads and the write of this refresh go through that session's transaction."""

    ctx: TokenContext
    row_session: AsyncSession | None = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A short transaction of its own, or the row lock's transaction when there is one."""
        if self.row_session is not None:
            yield self.row_session
            return
        async with self.ctx.sessionmaker() as session, session.begin():
            yield session


@contextlib.asynccontextmanager
async def _refresh_lock(ctx: TokenContext, connection_id: str) -> AsyncIterator[_Lock | None]:
    """The lock one connection's refresh holds; None when a step could not be had in time.

    Taken in this order, all within TOKEN_REFRESH_WAIT_S, released in reverse:
    1. this process's lock on the connection id, so a process's waiters queue here and it uses
       at most one Redis lock and one pooled database connection per connection id;
    2. the Redis lock, when the cache is Redis and it answers (else the steps around it alone);
    3. on PostgreSQL the row lock, always: a replica that cannot reach Redis relies on the row
       lock alone, so the replicas that can must take it too, or the two groups would not
       exclude each other. (The Redis lock first keeps waiters in Redis rather than in
       PostgreSQL lock queues.) On SQLite, one process, steps 1 and 2 suffice.
    """
    wait_s = ctx.settings.token_refresh_wait_s
    deadline = asyncio.get_running_loop().time() + wait_s
    async with contextlib.AsyncExitStack() as held:
        if not await held.enter_async_context(ctx.local_locks.hold(connection_id, wait_s)):
            yield None
            return
        if not await _hold_cache_lock(ctx, held, connection_id, deadline):
            yield None
            return
        if ctx.settings.is_sqlite:
            yield _Lock(ctx)
            return
        row_session = await held.enter_async_context(_row_lock(ctx, connection_id, deadline))
        yield None if row_session is None else _Lock(ctx, row_session)


async def _hold_cache_lock(
    ctx: TokenContext, held: contextlib.AsyncExitStack, connection_id: str, deadline: float
) -> bool:
    """Step 2: False when another worker held the Redis lock past the deadline; True when this
    one holds it (renewed until, and released with, `held`) or when there is no Redis lock."""
    if ctx.cache.backend == "memory":
        return True
    name = f"junction:tokens:refresh:{connection_id}"
    owner = new_id()
    ttl_s = ctx.settings.token_refresh_lock_ttl_s
    try:
        acquired = await _poll_cache_lock(ctx, name, owner, ttl_s, deadline)
    except CacheUnavailable:
        return True  # Redis is down: the row lock (or the local lock) alone
    if acquired:
        held.push_async_callback(ctx.cache.release_lock, name, owner)
        # Pushed after the release, so it stops first: no renewal can follow the release.
        stopped = asyncio.Event()
        renewal = asyncio.create_task(
            _renew_cache_lock(ctx, name, owner, ttl_s, stopped),
            name=f"refresh-lock-renewal:{name}",
        )
        held.push_async_callback(_stop, stopped, renewal)
    return acquired


async def _poll_cache_lock(
    ctx: TokenContext, name: str, owner: str, ttl_s: float, deadline: float
) -> bool:
    loop = asyncio.get_running_loop()
    while True:
        if await ctx.cache.acquire_lock(name, owner, ttl_s):
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_LOCK_POLL_S)


async def _renew_cache_lock(
    ctx: TokenContext, name: str, owner: str, ttl_s: float, stopped: asyncio.Event
) -> None:
    """Extend the lock to a full TTL every third of it, for as long as its owner lives.

    The lock must outlive the provider call it guards (should it expire mid-call, a second worker
    could present the same refresh token, and rotation with reuse detection would revoke the
    grant), yet a killed owner's lock must not stall the others for long: so a short TTL, kept
    alive here. Two renewals in a row may fail before the lock lapses; and should it lapse (Redis
    unreachable that long), on PostgreSQL the row lock, held to the end, still keeps the next
    worker out of the provider call.

    It stops when `stopped` is set, not by cancellation: redis-py can swallow a cancellation
    that lands inside a command, and a renewal that survived it would renew forever while its
    owner waited for it to end.
    """
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), ttl_s / 3)
        if stopped.is_set():
            return
        # Extended only while still ours (False also when Redis did not answer; the next round
        # tries again).
        extended = await ctx.cache.extend_lock(name, owner, ttl_s)
        if not extended:
            logger.warning("could not extend refresh lock %s", name)


async def _stop(stopped: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Stop the renewal and wait for it (at most one lock command in flight, bounded by the
    cache's socket timeout), so that nothing renews the lock once it is released."""
    stopped.set()
    with contextlib.suppress(Exception):
        await task


@contextlib.asynccontextmanager
async def _row_lock(
    ctx: TokenContext, connection_id: str, deadline: float
) -> AsyncIterator[AsyncSession | None]:
    """Step 3: `SELECT ... FOR UPDATE` on the connection row, held (with its pooled connection)
    until the refresh is written; None when another replica held it past the deadline."""
    async with ctx.sessionmaker() as session:
        transaction = await session.begin()
        wait_ms = max(int((deadline - asyncio.get_running_loop().time()) * 1000), 1)
        try:
            # SET cannot take bind parameters; both values are ints computed here.
            await session.execute(text(f"SET LOCAL lock_timeout = {wait_ms}"))
            timeout_ms = wait_ms + ctx.settings.db_statement_timeout_ms
            await session.execute(text(f"SET LOCAL statement_timeout = {timeout_ms}"))
            await repository.get_connection(session, connection_id, for_update=True)
        except DBAPIError:
            # lock_timeout: another replica has been refreshing it for longer than we wait.
            await transaction.rollback()
            yield None
            return
        try:
            yield session
        except BaseException:
            if transaction.is_active:
                await transaction.rollback()
            raise
        if transaction.is_active:  # not committed by the refresh (it returned early)
            await transaction.commit()


# --- the refresh ----------------------------------------------------------------------------


async def _load(
    session: AsyncSession, connection_id: str
) -> tuple[OAuthConnection, OAuthClient] | None:
    connection = await repository.get_connection(session, connection_id)
    if connection is None:
        return None
    client = await repository.get_client(session, connection.client_id)
    if client is None:
        return None
    return connection, client


async def _refresh_locked(
    ctx: TokenContext,
    connection_id: str,
    lock: _Lock,
    force: bool,
    started_at: datetime,
    trigger: str,
) -> RefreshOutcome:
    now = utcnow()
    async with lock.transaction() as session:
        loaded = await _load(session, connection_id)
        if loaded is None:
            return RefreshOutcome(connection_id, RefreshResult.NOT_FOUND, "unknown", None)
        connection, client = loaded
        status, last_error = connection.status, connection.last_error
        spec = ctx.spec_for(client)
        if status == STATUS_NEEDS_REAUTH:
            return RefreshOutcome(connection_id, RefreshResult.NEEDS_REAUTH, status, last_error)
        if not force and _not_due(connection, spec, now, started_at):
            return RefreshOutcome(connection_id, RefreshResult.SKIPPED, status, last_error)
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
            # A missing or rotated-away key is an operator problem; leave the row as it is.
            logger.error("stored secrets of connection %s do not decrypt", connection_id)
            return RefreshOutcome(
                connection_id, RefreshResult.REFRESH_FAILED, status, "undecryptable"
            )
        used_refresh_enc = connection.refresh_token_enc
        previous = status
        # Whatever the listeners must look up is looked up now, before the provider is called.
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
    if lock.row_session is not None:
        # The row has been locked since it was read: nobody changed it; the commit writes it.
        prepared.record(lock.row_session, connection, previous, reason)
        await lock.row_session.commit()
        stored = True
    else:
        stored = await _store_if_unchanged(
            ctx, connection, used_refresh_enc, prepared, previous, reason
        )
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
    )


async def _store_if_unchanged(
    ctx: TokenContext,
    connection: OAuthConnection,
    used_refresh_enc: str | None,
    prepared: PreparedStatusChange,
    previous: str,
    reason: str,
) -> bool:
    """Without a row lock (SQLite): one compare-and-set UPDATE of what the refresh changed, where
    the stored refresh token is still the one used, and the listeners' rows, in one commit."""
    changed = _changed_columns(connection)
    async with ctx.sessionmaker() as session, session.begin():
        statement = (
            update(OAuthConnection)
            .where(
                OAuthConnection.id == connection.id,
                OAuthConnection.refresh_token_enc.is_not_distinct_from(used_refresh_enc),
            )
            .values(changed)
            .execution_options(synchronize_session=False)
        )
        if (await session.execute(statement)).rowcount != 1:  # type: ignore[attr-defined]
            return False
        prepared.record(session, connection, previous, reason)
    return True


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
    connection: OAuthConnection, spec: ProviderSpec, now: datetime, started_at: datetime
) -> bool:
    if connection.last_refreshed_at is not None and connection.last_refreshed_at >= started_at:
        return True  # another worker refreshed it while this one waited for the lock
    return not timing.refresh_is_due(connection, spec, now)


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
    connection.token_type = tokens.token_type
    if tokens.scope is not None:
        connection.scope = tokens.scope
    connection.expires_at = (
        now + timedelta(seconds=tokens.expires_in) if tokens.expires_in is not None else None
    )
    connection.status = STATUS_ACTIVE
    connection.last_refreshed_at = now
    connection.last_error = None
    connection.failure_count = 0
    connection.next_attempt_at = None
    connection.updated_at = now
    connection.refresh_due_at = timing.compute_refresh_due_at(connection, spec, ctx.settings)


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
