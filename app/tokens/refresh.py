"""The single-flight refresh path shared by token reads, forced refreshes and the monitor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.cache import Cache, CacheUnavailable
from app.core.config import Settings
from app.core.crypto import DecryptionError, Keyring
from app.core.db import new_id, utcnow
from app.tokens import oauth, repository
from app.tokens.exceptions import ProviderError
from app.tokens.models import (
    STATUS_ACTIVE,
    STATUS_NEEDS_REAUTH,
    STATUS_REFRESH_FAILED,
    OAuthClient,
    OAuthConnection,
)
from app.tokens.providers import ProviderRegistry, ProviderSpec
from app.tokens.read_cache import TokenReadCache
from app.tokens.sealing import (
    open_client_secret,
    open_refresh_token,
    seal_access_token,
    seal_refresh_token,
)

logger = logging.getLogger("junction.tokens")

RESULT_REFRESHED = "refreshed"
RESULT_NEEDS_REAUTH = "needs_reauth"
RESULT_REFRESH_FAILED = "refresh_failed"
RESULT_SKIPPED = "skipped"
RESULT_NOT_FOUND = "not_found"

_LOCK_POLL_S = 0.02


@dataclass
class StatusChange:
    tenant_id: str
    provider: str
    branch_id: str
    connection_id: str
    previous_status: str
    new_status: str
    reason: str | None
    occurred_at: datetime


StatusListener = Callable[[AsyncSession, StatusChange], Awaitable[None]]


@dataclass
class RefreshOutcome:
    connection_id: str
    result: str
    status: str
    error: str | None


class _KeyedLocks:
    """In-process asyncio locks per connection, dropped when nobody holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str, timeout_s: float) -> AsyncIterator[bool]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        acquired = False
        try:
            try:
                await asyncio.wait_for(lock.acquire(), timeout=max(timeout_s, 0.001))
                acquired = True
            except TimeoutError:
                acquired = False
            yield acquired
        finally:
            if acquired:
                lock.release()
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass
class TokenContext:
    """Everything the tokens domain needs outside a request (the monitoring loop uses it too)."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    cache: Cache
    keyring: Keyring
    http: httpx.AsyncClient
    registry: ProviderRegistry
    status_listeners: list[StatusListener] = field(default_factory=list)
    local_locks: _KeyedLocks = field(default_factory=_KeyedLocks, repr=False)
    # Set by the tokens lifespan, which subscribes it to the invalidation bus; a context built
    # elsewhere reads from the database every time.
    read_cache: TokenReadCache | None = field(default=None, repr=False)

    @classmethod
    def build(cls, state: Any) -> TokenContext:
        """A context over the app's clients; the tokens lifespan builds the one app.state keeps."""
        return cls(
            settings=state.settings,
            sessionmaker=state.sessionmaker,
            cache=state.cache,
            keyring=state.keyring,
            http=state.http,
            registry=ProviderRegistry(state.settings),
        )

    @classmethod
    def from_state(cls, state: Any) -> TokenContext:
        existing = getattr(state, "token_context", None)
        return existing if isinstance(existing, TokenContext) else cls.build(state)

    async def invalidate(
        self, connection_ids: Iterable[str] = (), *, tenant_id: str | None = None
    ) -> None:
        """After a commit that changed what a token read answers."""
        if self.read_cache is not None:
            await self.read_cache.invalidate(connection_ids, tenant_id=tenant_id)

    @property
    def engine(self) -> AsyncEngine:
        engine: AsyncEngine = self.sessionmaker.kw["bind"]
        return engine

    def spec_for(self, client: OAuthClient) -> ProviderSpec:
        return self.registry.resolve(client.provider, client.provider_settings)


def compute_refresh_due_at(
    connection: OAuthConnection, provider: ProviderSpec, settings: Settings
) -> datetime | None:
    """When the monitoring loop should next refresh this connection (None: never)."""
    if connection.status == STATUS_NEEDS_REAUTH or connection.refresh_token_enc is None:
        return None
    base = connection.last_refreshed_at or connection.created_at or utcnow()
    # Some providers revoke refresh tokens left idle; refresh at least this often.
    due = base + timedelta(seconds=settings.monitor_idle_refresh_s)
    if connection.expires_at is not None:
        due = min(due, provider.refresh_from(connection.expires_at))
    if connection.next_attempt_at is not None and connection.next_attempt_at > due:
        due = connection.next_attempt_at
    return due


def backoff_delay_s(settings: Settings, failure_count: int) -> float:
    """Cooldown after the n-th consecutive failure: cooldown, 2x, 4x ... capped."""
    exponent = max(failure_count - 1, 0)
    delay = settings.token_refresh_cooldown_s * (2 ** min(exponent, 30))
    return float(min(delay, settings.token_refresh_backoff_max_s))


async def notify_status_change(
    ctx: TokenContext,
    session: AsyncSession,
    connection: OAuthConnection,
    previous_status: str,
    reason: str | None,
) -> None:
    """Tell every listener (the monitoring events) inside the transaction that made the change."""
    if previous_status == connection.status:
        return
    change = StatusChange(
        tenant_id=connection.tenant_id,
        provider=connection.provider,
        branch_id=connection.branch_id,
        connection_id=connection.id,
        previous_status=previous_status,
        new_status=connection.status,
        reason=reason,
        occurred_at=utcnow(),
    )
    for listener in list(ctx.status_listeners):
        await listener(session, change)


async def refresh_connection(
    ctx: TokenContext, connection_id: str, *, force: bool = False, trigger: str = "read"
) -> RefreshOutcome:
    """Refresh one connection, at most once at a time across every replica.

    Waiters that get the lock after someone else refreshed find the fresh token and skip, so many
    concurrent callers cause one provider call. `force` ignores freshness and the failure cooldown.
    """
    started_at = utcnow()
    wait_s = ctx.settings.token_refresh_wait_s
    deadline = asyncio.get_running_loop().time() + wait_s
    async with ctx.local_locks.hold(connection_id, wait_s) as held:
        if not held:
            return _busy(connection_id)
        async with _cross_replica_lock(ctx, connection_id, deadline) as lock:
            if lock is None:
                return _busy(connection_id)
            outcome = await _refresh_locked(ctx, connection_id, lock, force, started_at, trigger)
    # Committed by now (the row lock's transaction ends with its block), and no lock held while
    # the replicas acknowledge.
    if outcome.result in _WRITTEN:
        await ctx.invalidate([connection_id])
    return outcome


_WRITTEN = frozenset({RESULT_REFRESHED, RESULT_REFRESH_FAILED, RESULT_NEEDS_REAUTH})


def _busy(connection_id: str) -> RefreshOutcome:
    return RefreshOutcome(connection_id, RESULT_SKIPPED, "unknown", "refresh_in_progress")


@dataclass
class _Lock:
    """A held refresh lock; `session` is set when it includes a PostgreSQL row lock, and then all
    reads and the write of this refresh go through that session's transaction."""

    session: AsyncSession | None = None


@contextlib.asynccontextmanager
async def _cross_replica_lock(
    ctx: TokenContext, connection_id: str, deadline: float
) -> AsyncIterator[_Lock | None]:
    """Yield a held lock, or None when it could not be had before the deadline.

    On PostgreSQL the row lock is always taken, after the Redis lock when Redis answers: a
    replica that cannot reach Redis relies on the row lock alone, so the replicas that can must
    take it too, or the two groups would not exclude each other. (The Redis lock first keeps
    waiters in Redis rather than in PostgreSQL lock queues.) On SQLite, one process, the Redis
    lock when there is one and otherwise the in-process lock already held.
    """
    async with contextlib.AsyncExitStack() as stack:
        if ctx.cache.backend != "memory":
            name = f"junction:tokens:refresh:{connection_id}"
            owner = new_id()
            try:
                acquired: bool | None = await _poll_cache_lock(ctx, name, owner, deadline)
            except CacheUnavailable:
                acquired = None  # Redis is down: the row lock below (or the local lock) alone
            if acquired is False:
                yield None
                return
            if acquired:
                stack.push_async_callback(ctx.cache.release_lock, name, owner)
        if ctx.settings.is_sqlite:
            yield _Lock()
            return
        session = await stack.enter_async_context(_row_lock(ctx, connection_id, deadline))
        yield None if session is None else _Lock(session=session)


@contextlib.asynccontextmanager
async def _row_lock(
    ctx: TokenContext, connection_id: str, deadline: float
) -> AsyncIterator[AsyncSession | None]:
    """`SELECT ... FOR UPDATE` on the connection row, held (with its pooled connection) until the
    refresh is written; None when another replica held it past the deadline. The in-process lock
    taken before keeps this at one pooled connection per connection id and process."""
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
            await transaction.rollback()
            raise
        await transaction.commit()


async def _poll_cache_lock(ctx: TokenContext, name: str, owner: str, deadline: float) -> bool:
    # The lock must outlive the provider call it guards: should it expire mid-call, a second
    # worker could present the same refresh token, and rotation with reuse detection would revoke
    # the grant.
    ttl_s = max(ctx.settings.token_refresh_lock_ttl_s, ctx.settings.http_timeout_s * 2 + 5)
    loop = asyncio.get_running_loop()
    while True:
        if await ctx.cache.acquire_lock(name, owner, ttl_s):
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_LOCK_POLL_S)


@contextlib.asynccontextmanager
async def _session(ctx: TokenContext, lock: _Lock) -> AsyncIterator[AsyncSession]:
    """A short transaction of its own, or the row lock's transaction when there is one."""
    if lock.session is not None:
        yield lock.session
        return
    async with ctx.sessionmaker() as session, session.begin():
        yield session


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
    async with _session(ctx, lock) as session:
        loaded = await _load(session, connection_id)
        if loaded is None:
            return RefreshOutcome(connection_id, RESULT_NOT_FOUND, "unknown", None)
        connection, client = loaded
        status, last_error = connection.status, connection.last_error
        spec = ctx.spec_for(client)
        if status == STATUS_NEEDS_REAUTH:
            return RefreshOutcome(connection_id, RESULT_NEEDS_REAUTH, status, last_error)
        if not force and _not_due(connection, spec, now, started_at):
            return RefreshOutcome(connection_id, RESULT_SKIPPED, status, last_error)
        if connection.refresh_token_enc is None:
            expired = connection.expires_at is not None and connection.expires_at <= now
            if not expired:
                return RefreshOutcome(connection_id, RESULT_SKIPPED, status, "no_refresh_token")
        try:
            refresh_token = open_refresh_token(ctx.keyring, connection)
            credentials = oauth.ClientCredentials(
                client.client_id, open_client_secret(ctx.keyring, client)
            )
        except DecryptionError:
            # A missing or rotated-away key is an operator problem; leave the row as it is.
            logger.error("stored secrets of connection %s do not decrypt", connection_id)
            return RefreshOutcome(connection_id, RESULT_REFRESH_FAILED, status, "undecryptable")
        used_refresh_enc = connection.refresh_token_enc

    tokens: oauth.TokenSet | None = None
    error: ProviderError | None = None
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

    async with _session(ctx, lock) as session:
        connection_or_none = await repository.get_connection(session, connection_id)
        if connection_or_none is None:
            return RefreshOutcome(connection_id, RESULT_NOT_FOUND, "unknown", None)
        connection = connection_or_none
        if connection.refresh_token_enc != used_refresh_enc:
            # A new login replaced the grant while we were refreshing; its tokens win.
            return RefreshOutcome(connection_id, RESULT_SKIPPED, connection.status, None)
        previous = connection.status
        done = utcnow()
        if tokens is not None:
            apply_token_set(ctx, connection, spec, tokens, done)
            result, reason = RESULT_REFRESHED, "refreshed"
        else:
            assert error is not None
            result = _apply_failure(ctx, connection, spec, error, done)
            reason = error.code
        await session.flush()
        await notify_status_change(ctx, session, connection, previous, reason)
        _log_outcome(connection, result, reason, trigger)
        return RefreshOutcome(
            connection_id,
            result,
            connection.status,
            None if tokens is not None else connection.last_error,
        )


def _not_due(
    connection: OAuthConnection, spec: ProviderSpec, now: datetime, started_at: datetime
) -> bool:
    if connection.next_attempt_at is not None and connection.next_attempt_at > now:
        return True  # cooldown after a failure
    if connection.last_refreshed_at is not None and connection.last_refreshed_at >= started_at:
        return True  # another worker refreshed it while this one waited for the lock
    # Within the provider's current margin is always due, whatever refresh_due_at was computed
    # with (the client's margin may have been edited since).
    if connection.expires_at is not None and spec.refresh_from(connection.expires_at) <= now:
        return False
    due = connection.refresh_due_at
    return due is not None and due > now


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
    connection.refresh_due_at = compute_refresh_due_at(connection, spec, ctx.settings)


def _apply_failure(
    ctx: TokenContext,
    connection: OAuthConnection,
    spec: ProviderSpec,
    error: ProviderError,
    now: datetime,
) -> str:
    connection.failure_count = (connection.failure_count or 0) + 1
    connection.last_error = error.code[:255]
    connection.updated_at = now
    if error.revokes_grant:
        connection.status = STATUS_NEEDS_REAUTH
        connection.next_attempt_at = None
        connection.refresh_due_at = None
        return RESULT_NEEDS_REAUTH
    connection.status = STATUS_REFRESH_FAILED
    delay = backoff_delay_s(ctx.settings, connection.failure_count)
    connection.next_attempt_at = now + timedelta(seconds=delay)
    connection.refresh_due_at = compute_refresh_due_at(connection, spec, ctx.settings)
    return RESULT_REFRESH_FAILED


def _log_outcome(connection: OAuthConnection, result: str, reason: str, trigger: str) -> None:
    level = logging.INFO if result == RESULT_REFRESHED else logging.WARNING
    logger.log(
        level,
        "token refresh %s: provider=%s connection=%s trigger=%s reason=%s",
        result,
        connection.provider,
        connection.id,
        trigger,
        reason,
    )
