"""The change stream: each committed change of a tenant's configurations, as a Server-Sent Event.

The version rows are the truth: an event is a version row (its history entry, with its diff), and
its event id is the row's id, a position that grows with every change of the tenant (a tenant's
writers take their turn one at a time, so its ids are assigned in commit order). A stream reads
the rows after its position, sends them, and waits. What wakes it is the cache's invalidation:
applied by this replica for its own writes and heard over the cross-replica bus for another's
(`ConfigCache` tells `ChangeSignals`), so a change written through any replica reaches a stream
held on any other. A missed wake-up (Redis down, the cache disabled) costs latency, not events:
the stream also reads the rows every `poll_s`. A reconnect with `Last-Event-ID` resumes after
that position from the rows, so nothing committed in between is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import ServerSentEvent

from app.provider_configs import repository
from app.provider_configs.exceptions import TooManyStreams
from app.provider_configs.rendering import render_change

# Rows read per round trip: a stream that resumes far behind catches up in pages.
_PAGE = 100
EVENT = "change"


class ChangeSignals:
    """Wake-ups of the streams this replica holds, per tenant."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def waiter(self, tenant_id: str) -> asyncio.Event:
        """Taken before reading the rows: set by the next change of the tenant after it."""
        event = self._events.get(tenant_id)
        if event is None:
            event = self._events[tenant_id] = asyncio.Event()
        return event

    def notify(self, tenant_id: str) -> None:
        event = self._events.pop(tenant_id, None)
        if event is not None:
            event.set()

    def notify_all(self) -> None:
        events, self._events = self._events, {}
        for event in events.values():
            event.set()


@dataclass
class StreamSlot:
    """One stream's place among its tenant's; `release` may be called more than once."""

    slots: StreamSlots
    tenant_id: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.slots.give_back(self.tenant_id)


@dataclass
class StreamSlots:
    """At most `per_tenant` streams of one tenant at once on this replica."""

    per_tenant: int
    _open: dict[str, int] = field(default_factory=dict)

    def count(self, tenant_id: str) -> int:
        return self._open.get(tenant_id, 0)

    def take(self, tenant_id: str) -> StreamSlot:
        held = self._open.get(tenant_id, 0)
        if held >= self.per_tenant:
            raise TooManyStreams(
                f"this tenant already holds {held} configuration streams on this replica "
                f"(at most {self.per_tenant}); close one or retry later",
                headers={"Retry-After": "5"},
            )
        self._open[tenant_id] = held + 1
        return StreamSlot(self, tenant_id)

    def give_back(self, tenant_id: str) -> None:
        held = self._open.get(tenant_id, 0) - 1
        if held > 0:
            self._open[tenant_id] = held
        else:
            self._open.pop(tenant_id, None)


@dataclass
class ChangeFeed:
    """What the stream route needs: built once by the domain's lifespan."""

    sessionmaker: async_sessionmaker[AsyncSession]
    signals: ChangeSignals
    slots: StreamSlots
    poll_s: float
    heartbeat_s: float

    async def latest_position(self, tenant_id: str) -> int:
        async with self.sessionmaker() as session:
            return await repository.latest_change_id(session, tenant_id)

    async def _changes_after(self, tenant_id: str, position: int) -> list[ServerSentEvent]:
        async with self.sessionmaker() as session:
            rows = await repository.changes_after(session, tenant_id, position, _PAGE)
            previous = await repository.version_snapshots(
                session, ((row.config_id, row.version - 1) for row in rows)
            )
        return [
            ServerSentEvent(
                data=render_change(row, previous.get((row.config_id, row.version - 1))),
                event=EVENT,
                id=str(row.id),
            )
            for row in rows
        ]

    async def events(
        self,
        tenant_id: str,
        position: int,
        *,
        slot: StreamSlot,
        still_allowed: Callable[[], bool],
        ends_at_s: float,
        follow: bool = True,
    ) -> AsyncIterator[ServerSentEvent]:
        """Every change of the tenant after `position`, as it commits, until the caller's token
        ends (`ends_at_s`, wall clock) or `still_allowed` says no (revoked); without `follow`,
        only those committed already. `slot` is released when it ends."""
        try:
            while still_allowed() and time.time() < ends_at_s:
                wake = self.signals.waiter(tenant_id)
                batch = await self._changes_after(tenant_id, position)
                for event in batch:
                    yield event
                    position = int(str(event.id))
                if len(batch) == _PAGE:
                    continue  # more already committed: no need to wait
                if not follow:
                    return
                timeout = min(self.poll_s, max(ends_at_s - time.time(), 0.0))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)
        finally:
            slot.release()
