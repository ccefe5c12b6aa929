"""The leases one monitoring loop holds, and the task that keeps them from lapsing while the loop
works on them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import utcnow
from app.monitoring import repository

logger = logging.getLogger("junction.monitoring")


class LeaseRenewal:
    """Until when each queued or running connection is leased to `owner`, renewed every third of
    MONITOR_LEASE_S until none is left: the lease stays short, so a killed instance's
    connections are taken over soon, yet never lapses under a live loop working on it. (On
    PostgreSQL a renewal skips the rows a read's refresh holds row-locked at that moment, which
    no claim can take either.)"""

    def __init__(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], owner: str
    ) -> None:
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._owner = owner
        self._until: dict[str, datetime] = {}
        self._nothing_held = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def hold(self, connection_id: str, until: datetime) -> None:
        """A connection just leased, until `until`; renewed from the next `keep_renewed` on."""
        self._until[connection_id] = until

    def lapsed(self, connection_id: str) -> bool:
        """Whether the lease ran out before the loop got to it (it may be someone else's)."""
        return utcnow() >= self._until[connection_id]

    def drop(self, connection_id: str) -> None:
        """The loop is done with the connection: no more renewals of it."""
        self._until.pop(connection_id, None)
        if not self._until:
            self._nothing_held.set()

    def keep_renewed(self) -> None:
        """Renew what is held from now on, until nothing is."""
        self._nothing_held.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(
                self._renew(), name=f"monitor-lease-renewal:{self._owner}"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # Bounded: a driver that swallows the cancellation must not hold up shutdown.
            done, _ = await asyncio.wait({self._task}, timeout=5)
            if not done:
                logger.warning("the monitoring lease renewal did not stop; leaving it")
            self._task = None

    async def _renew(self) -> None:
        period = self._settings.monitor_lease_s / 3
        while self._until:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nothing_held.wait(), timeout=period)
            ids = list(self._until)
            if not ids:
                return
            lease_until = utcnow() + timedelta(seconds=self._settings.monitor_lease_s)
            try:
                async with self._sessionmaker() as session, session.begin():
                    ours = await repository.extend_leases(session, ids, self._owner, lease_until)
            except Exception:
                # Tried again next period; a lease that lapses meanwhile is simply taken over.
                logger.warning("could not extend the monitoring leases", exc_info=True)
                continue
            for connection_id in ours:
                if connection_id in self._until:
                    self._until[connection_id] = lease_until
