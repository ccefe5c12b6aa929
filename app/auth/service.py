"""Token revocation: stored in the database, held in memory on every replica for a free check.

Each replica keeps the revoked ids in a dict, loaded at start, updated on the cache bus when any
replica revokes, and reconciled with the database every `AUTH_REVOCATION_SYNC_S` in case a bus
message was missed. The check on every request is then a dict lookup, not a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.models import RevokedToken
from app.core import permissions
from app.core.auth import Principal
from app.core.cache import Cache
from app.core.db import after_commit, dialect_insert, utcnow
from app.core.errors import BadRequest

logger = logging.getLogger("junction.auth")

CHANNEL = "junction:revocations"


class RevocationList:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], cache: Cache, sync_s: float
    ) -> None:
        self._sessionmaker = sessionmaker
        self._cache = cache
        self._sync_s = sync_s
        self._revoked: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None
        cache.subscribe(CHANNEL, self._on_message, on_reset=self.reload)

    def is_revoked(self, jti: str | None) -> bool:
        return jti is not None and jti in self._revoked

    def add(self, jti: str, expires_at: datetime) -> None:
        self._revoked[jti] = expires_at

    async def _on_message(self, message: str) -> None:
        data = json.loads(message)
        self.add(data["jti"], datetime.fromisoformat(data["expires_at"]))

    async def reload(self) -> None:
        now = utcnow()
        async with self._sessionmaker() as session:
            rows = (
                await session.execute(
                    select(RevokedToken.jti, RevokedToken.expires_at).where(
                        RevokedToken.expires_at > now
                    )
                )
            ).all()
        self._revoked = {jti: expires_at for jti, expires_at in rows}

    async def start(self) -> None:
        await self.reload()
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
                await self.reload()
                await self._purge_expired()
            except Exception:
                logger.warning("revocation sync failed; keeping the current list", exc_info=True)

    async def _purge_expired(self) -> None:
        async with self._sessionmaker() as session, session.begin():
            await session.execute(delete(RevokedToken).where(RevokedToken.expires_at <= utcnow()))


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
    expires_at = (expires_at or utcnow() + timedelta(hours=24)).astimezone(UTC)
    statement = (
        dialect_insert(session, RevokedToken)
        .values(jti=jti, expires_at=expires_at, revoked_at=utcnow(), revoked_by=principal.sub)
        .on_conflict_do_nothing(index_elements=["jti"])
    )
    await session.execute(statement)
    message = json.dumps({"jti": jti, "expires_at": expires_at.isoformat()})
    revoked_jti, revoked_until = jti, expires_at

    async def announce() -> None:
        revocations.add(revoked_jti, revoked_until)
        await cache.publish(CHANNEL, message)

    after_commit(session, announce)
    return jti, expires_at
