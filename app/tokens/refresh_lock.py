"""The lock one connection's refresh holds across processes and replicas (see `refresh_lock`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import CacheUnavailable
from app.core.db import new_id, utcnow
from app.tokens import repository
from app.tokens.context import TokenContext
from app.tokens.models import OAuthClient, OAuthConnection

logger = logging.getLogger("junction.tokens")

_LOCK_POLL_S = 0.02


@dataclass
class RefreshLock:
    """A held refresh lock; `row_session` is set when it includes a PostgreSQL row lock, and then
    all reads and the write of this refresh go through that session's transaction, and `row` is
    the locked connection with its client (None: the connection is gone). `lease_owner` is set
    when the monitoring loop's lease is (part of) the lock: the refresh's write is fenced by it
    and releases it."""

    ctx: TokenContext
    row_session: AsyncSession | None = None
    row: tuple[OAuthConnection, OAuthClient] | None = None
    lease_owner: str | None = None

    @property
    def row_read(self) -> bool:
        """The row was read with the lock (`row`): under the row lock, or by the loop's batch
        read right after it leased the row."""
        return self.row_session is not None or self.row is not None

    @property
    def lease_only(self) -> bool:
        """The lease alone is the lock (PostgreSQL, the loop): nothing else is held."""
        return self.lease_owner is not None and not self.ctx.settings.is_sqlite

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A short transaction of its own, or the row lock's transaction when there is one."""
        if self.row_session is not None:
            yield self.row_session
            return
        async with self.ctx.sessionmaker() as session, session.begin():
            yield session

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """Where the refresh reads before the provider call: the row lock's transaction, or
        under the lease alone a `single_statement_session` (nothing it reads is locked, and
        each read is one statement: no transaction is needed)."""
        if self.lease_only:
            async with single_statement_session(self.ctx) as session:
                yield session
            return
        async with self.transaction() as session:
            yield session


@contextlib.asynccontextmanager
async def single_statement_session(ctx: TokenContext) -> AsyncIterator[AsyncSession]:
    """A session for statements each atomic on its own (a read of the row, a lone UPDATE):
    autocommit where it can be (`TokenContext.single_statement_engine`), so each is one round
    trip, with no BEGIN and COMMIT around it."""
    async with ctx.sessionmaker(bind=ctx.single_statement_engine) as session:
        yield session


@contextlib.asynccontextmanager
async def refresh_lock(
    ctx: TokenContext,
    connection_id: str,
    *,
    lease_owner: str | None = None,
    preloaded: tuple[OAuthConnection, OAuthClient] | None = None,
) -> AsyncIterator[RefreshLock | None]:
    """The lock one connection's refresh holds; None when a step could not be had in time.

    Held by the monitoring loop (`lease_owner`) on PostgreSQL, the lease it claimed is the lock,
    and nothing else is taken: no replica's read refreshes a row under another owner's live
    lease (step 3 waits it out), and the loop of another replica cannot claim it. (A read
    holding the row lock keeps the loop's claim off the row: the claim skips locked rows.) The
    row the loop read for its batch right after leasing it (`preloaded`) is the row to refresh:
    under the lease nobody else refreshes it, and what else may change it meanwhile (a login,
    a client edit, a deletion) the fences of the refresh's writes catch.

    Taken in this order, all within TOKEN_REFRESH_WAIT_S, released in reverse:
    1. this process's lock on the connection id, so a process's waiters queue here and it uses
       at most one Redis lock and one pooled database connection per connection id;
    2. the Redis lock, when the cache is Redis and it answers (else the steps around it alone);
    3. on PostgreSQL the row lock (taken by reading the row with its client), always: a replica
       that cannot reach Redis relies on the row lock alone, so the replicas that can must take
       it too, or the two groups would not exclude each other. (The Redis lock first keeps
       waiters in Redis rather than polling PostgreSQL.) On SQLite, one process, steps 1 and 2
       suffice.
    """
    if lease_owner is not None and not ctx.settings.is_sqlite:
        yield RefreshLock(ctx, row=preloaded, lease_owner=lease_owner)
        return
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
            # One process: the loop's refresh takes the local lock like a read's, and its write
            # releases its lease.
            yield RefreshLock(ctx, lease_owner=lease_owner)
            return
        yield await held.enter_async_context(_row_lock(ctx, connection_id, deadline))


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
) -> AsyncIterator[RefreshLock | None]:
    """Step 3: the connection's row (with its client) read `FOR UPDATE SKIP LOCKED`, polled
    while another replica holds it or while another owner's lease on it is live (the monitoring
    loop refreshing it), and held (with its pooled connection) until the refresh is written;
    None when either was held past the deadline.

    SKIP LOCKED and polling rather than a waiting `FOR UPDATE`: each statement returns at once,
    so no lock or statement timeout has to be set first, and the uncontended refresh, the
    common one, sends one statement where it sent three (replicas that reach Redis wait on the
    Redis lock before they get here). A leased row is polled in a new transaction each time:
    the lease's owner writes the row, so its lock is not kept meanwhile."""
    loop = asyncio.get_running_loop()
    async with ctx.sessionmaker() as session:
        transaction = await session.begin()
        try:
            while True:
                row = await repository.load_for_refresh(session, connection_id, lock=True)
                leased = row is not None and repository.holds_live_lease(row[0], utcnow())
                if not leased and (
                    row is not None
                    or not await repository.connection_exists(session, connection_id)
                ):
                    break
                if loop.time() >= deadline:
                    # Another replica (or the loop) has been refreshing it longer than we wait.
                    await transaction.rollback()
                    yield None
                    return
                if leased:
                    await transaction.rollback()
                    await asyncio.sleep(_LOCK_POLL_S)
                    transaction = await session.begin()
                else:
                    await asyncio.sleep(_LOCK_POLL_S)
            yield RefreshLock(ctx, session, row)
        except BaseException:
            if transaction.is_active:
                await transaction.rollback()
            raise
        if transaction.is_active:  # not committed by the refresh (it returned early)
            await transaction.commit()
