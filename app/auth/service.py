"""Token revocation: stored in the database, held in memory on every replica for a free check.

Each replica keeps the revoked ids in a dict, loaded at start, updated on the cache bus when any
replica revokes, and merged every `AUTH_REVOCATION_SYNC_S` with what the database gained since
the previous sync, in case a bus message was missed. The check on every request is then a dict
lookup, not a round trip.

- Never lost: the dict is only ever merged into (a sync never replaces it with a snapshot), and an
  entry leaves it only once the token it revokes has expired.
- Bounded: the token verifier refuses tokens valid for longer than `AUTH_MAX_TOKEN_LIFETIME_S`,
  so no revocation is kept longer than that (a later `expires_at` is clamped); expired entries
  leave memory at each sync and the database in batches (as do rows revoked longer ago than that
  lifetime, whatever their `expires_at`); past `AUTH_REVOCATION_MAX_ENTRIES`
  live entries a new revocation is refused (503) rather than letting memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql import Executable

from app.auth.models import RevokedToken
from app.core import permissions
from app.core.auth import Principal
from app.core.cache import Cache
from app.core.config import Settings
from app.core.db import after_commit, dialect_insert, utcnow
from app.core.errors import BadRequest, ServiceUnavailable

logger = logging.getLogger("junction.auth")

CHANNEL = "junction:revocations"

# A revoked id stays this long past its token's expiry: more than the verifier's leeway on `exp`
# (5 s) plus the clock difference between replicas.
EXPIRY_GRACE_S = 60.0
# Each sync reads again what was revoked this long before the previous sync began: `revoked_at`
# is the time of the insert, not of the commit, so a revocation whose transaction was still open
# when that sync read the table (or one from a replica whose clock runs behind) is still found.
SYNC_OVERLAP_S = 300.0
LOAD_BATCH = 10_000
PURGE_BATCH = 5_000
# The width of revoked_tokens.jti; a longer id (the verifier allows 1,024 characters) is stored
# and looked up by its digest.
MAX_STORED_JTI = 255
_MINUTE = 60


class RevocationListFull(ServiceUnavailable):
    code = "revocation_list_full"


def storage_key(jti: str) -> str:
    """The id a revocation is stored and held under."""
    if len(jti) <= MAX_STORED_JTI:
        return jti
    return "sha256:" + hashlib.sha256(jti.encode()).hexdigest()


class RevocationList:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        cache: Cache,
        *,
        settings: Settings,
        purge_batch: int = PURGE_BATCH,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._cache = cache
        self._sync_s = settings.auth_revocation_sync_s
        self.max_token_lifetime_s = settings.auth_max_token_lifetime_s
        self.max_entries = settings.auth_revocation_max_entries
        self._purge_batch = purge_batch
        self._read_only = settings.read_only
        # storage key -> when the token expires (epoch seconds; a float is the smallest record).
        self._revoked: dict[str, float] = {}
        # The same keys by the minute they expire in, so a sync drops expired entries without
        # scanning the whole dict. A key whose expiry moved later stays in its old minute too.
        self._by_minute: dict[int, list[str]] = {}
        self._synced_from: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self.channel = cache.channel_name(CHANNEL)
        cache.subscribe(self.channel, self._on_message, on_reset=self._resync)

    def __len__(self) -> int:
        return len(self._revoked)

    def is_revoked(self, jti: str | None) -> bool:
        if jti is None:
            return False
        if len(jti) > MAX_STORED_JTI:
            jti = storage_key(jti)
        return jti in self._revoked

    @property
    def full(self) -> bool:
        return len(self._revoked) >= self.max_entries

    def horizon(self) -> datetime:
        """The latest moment a token accepted now can still be valid."""
        return utcnow() + timedelta(seconds=self.max_token_lifetime_s)

    def add(self, key: str, expires_at: datetime) -> None:
        """Hold `key` as revoked until `expires_at` (clamped to the horizon); never shortens."""
        self._merge(key, expires_at.timestamp(), time.time() + self.max_token_lifetime_s)

    def _merge(self, key: str, expires_s: float, horizon_s: float) -> None:
        expires_s = min(expires_s, horizon_s)
        if expires_s <= self._revoked.get(key, -math.inf):
            return
        self._revoked[key] = expires_s
        self._by_minute.setdefault(int(expires_s) // _MINUTE, []).append(key)

    def _drop_expired(self) -> None:
        cutoff = time.time() - EXPIRY_GRACE_S
        last_done = int(cutoff) // _MINUTE - 1
        for minute in [m for m in self._by_minute if m <= last_done]:
            for key in self._by_minute.pop(minute):
                if self._revoked.get(key, math.inf) <= cutoff:
                    del self._revoked[key]

    async def _on_message(self, message: str) -> None:
        try:
            data = json.loads(message)
            key, expires_at = str(data["jti"]), datetime.fromisoformat(data["expires_at"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed revocation message")
            return
        self.add(key, expires_at)

    async def load(self) -> None:
        """Every live revocation, in batches (the loop runs between them)."""
        started = utcnow()
        horizon_s = time.time() + self.max_token_lifetime_s
        alive_after = started - timedelta(seconds=EXPIRY_GRACE_S)
        after = ""
        while True:
            async with self._sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(RevokedToken.jti, RevokedToken.expires_at)
                        .where(RevokedToken.expires_at > alive_after, RevokedToken.jti > after)
                        .order_by(RevokedToken.jti)
                        .limit(LOAD_BATCH)
                    )
                ).all()
            for jti, expires_at in rows:
                self._merge(jti, expires_at.timestamp(), horizon_s)
            if len(rows) < LOAD_BATCH:
                break
            after = rows[-1][0]
        self._synced_from = started
        if self.full:
            logger.warning(
                "%d live revocations, more than AUTH_REVOCATION_MAX_ENTRIES=%d: all are held, "
                "new ones are refused until they expire",
                len(self._revoked),
                self.max_entries,
            )

    async def sync(self) -> int:
        """Merge what was revoked since the previous sync began (with an overlap), drop what has
        expired, purge the database; the number of rows read."""
        if self._synced_from is None:
            await self.load()
            return len(self._revoked)
        started = utcnow()
        since = self._synced_from - timedelta(seconds=SYNC_OVERLAP_S)
        alive_after = started - timedelta(seconds=EXPIRY_GRACE_S)
        async with self._sessionmaker() as session:
            rows = (
                await session.execute(
                    select(RevokedToken.jti, RevokedToken.expires_at).where(
                        RevokedToken.revoked_at >= since, RevokedToken.expires_at > alive_after
                    )
                )
            ).all()
        horizon_s = time.time() + self.max_token_lifetime_s
        for jti, expires_at in rows:
            self._merge(jti, expires_at.timestamp(), horizon_s)
        self._synced_from = started
        self._drop_expired()
        if not self._read_only:  # maintenance: the database is not written, expired rows wait
            await self.purge()
        return len(rows)

    async def _resync(self) -> None:
        # The bus reconnected: messages may have been missed, and the sync's window covers them.
        await self.sync()

    async def purge(self) -> int:
        """Delete, in batches, the rows no token can need any more: expired ones, and ones older
        than the longest token lifetime (a token accepted when it was revoked has expired since,
        whatever `expires_at` says: rows from before the lifetime was enforced say 9999)."""
        expired_before = utcnow() - timedelta(seconds=EXPIRY_GRACE_S)
        revoked_before = expired_before - timedelta(seconds=self.max_token_lifetime_s)

        def expired() -> Executable:
            batch = select(RevokedToken.jti).where(RevokedToken.expires_at <= expired_before)
            return delete(RevokedToken).where(
                RevokedToken.jti.in_(batch.limit(self._purge_batch).scalar_subquery())
            )

        def outlived() -> Executable:
            batch = select(RevokedToken.jti).where(RevokedToken.revoked_at <= revoked_before)
            return delete(RevokedToken).where(
                RevokedToken.jti.in_(batch.limit(self._purge_batch).scalar_subquery())
            )

        return await self._in_batches(expired) + await self._in_batches(outlived)

    async def _in_batches(self, statement: Callable[[], Executable]) -> int:
        total = 0
        while True:
            async with self._sessionmaker() as session, session.begin():
                result: Any = await session.execute(statement())
            done: int = result.rowcount
            total += done
            if done < self._purge_batch:
                return total

    async def start(self) -> None:
        await self.load()
        self._task = asyncio.create_task(self._sync_forever(), name="revocation-sync")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sync_s)
            try:
                await self.sync()
            except Exception:
                logger.warning("revocation sync failed; keeping the current list", exc_info=True)


async def revoke(
    session: AsyncSession,
    revocations: RevocationList,
    cache: Cache,
    principal: Principal,
    jti: str | None,
    expires_at: datetime | None,
) -> tuple[str, datetime]:
    """Revoke the caller's own token, or (admins of every tenant) any token id; idempotent.

    A bare `jti` names no tenant, so a tenant's admin could otherwise revoke another tenant's
    tokens: everyone else revokes a token by presenting it.
    """
    if jti is None or jti == principal.jti:
        if principal.jti is None:
            raise BadRequest("the presented token has no 'jti' claim, so it cannot be revoked")
        jti, expires_at = principal.jti, principal.expires_at
    else:
        permissions.REVOKE_BY_JTI.check(principal)
    # No token is accepted with an expiry past the horizon, so none needs revoking for longer.
    horizon = revocations.horizon()
    expires_at = min((expires_at or horizon).astimezone(UTC), horizon)
    key = storage_key(jti)
    if revocations.full and not revocations.is_revoked(jti):
        raise RevocationListFull(
            f"{revocations.max_entries} revocations are live, the most this service holds; "
            "retry once some have expired"
        )
    statement = (
        dialect_insert(session, RevokedToken)
        .values(
            jti=key,
            expires_at=expires_at,
            revoked_at=utcnow(),
            # An audit field as wide as the column: a longer `sub` must not make revoking fail.
            revoked_by=principal.sub[:255],
        )
        .on_conflict_do_nothing(index_elements=["jti"])
    )
    await session.execute(statement)
    message = json.dumps({"jti": key, "expires_at": expires_at.isoformat()})
    revoked_until = expires_at

    async def announce() -> None:
        revocations.add(key, revoked_until)
        await cache.publish(revocations.channel, message)

    after_commit(session, announce)
    return jti, expires_at
