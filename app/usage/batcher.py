"""Group commit for `POST /usage/openai`: one replica's concurrent single-event requests share a
transaction, and each is answered only after the commit that stored its event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import utcnow
from app.usage import service
from app.usage.schemas import UsageEventRead

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    row: service.EventRow
    answer: asyncio.Future[UsageEventRead] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class BatcherFigures:
    events: int = 0
    transactions: int = 0
    retried_alone: int = 0


class UsageBatcher:
    """Collects pending events for up to `wait_s` or `max_events`, whichever comes first, and
    writes them with `service.record_events` in one transaction.

    Exactness is record_events' own (idempotent insert, adding upserts, alert checks); a
    request_id repeated by two requests of one batch is stored once and the second answers the
    first event (duplicate), as in one list. When the batch's transaction fails, each event is
    retried in a transaction of its own, so one event's failure is its request's alone. Events
    are checked and priced before they are queued (`service.event_row`): a bad one never joins a
    batch.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        wait_s: float,
        max_events: int,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._wait_s = wait_s
        self._max_events = max_events
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.figures = BatcherFigures()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-group-commit")

    async def stop(self) -> None:
        """Stop taking events and write every queued one before returning (drain)."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def record(self, row: service.EventRow) -> UsageEventRead:
        """Queue one event's row (`service.event_row`) and wait for the commit that stores it."""
        if self._closing:
            # Draining: written on its own rather than refused.
            return (await self._write_alone([_Pending(row)]))[0]
        pending = _Pending(row)
        self._queue.append(pending)
        if len(self._queue) >= self._max_events:
            self._wakeup.set()
        elif len(self._queue) == 1:
            self._wakeup.set()  # the first of a batch starts the window
        return await pending.answer

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            if not self._closing and len(self._queue) < self._max_events:
                # The window: let the requests arriving meanwhile join this transaction.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full(), timeout=self._wait_s)
            batch, self._queue = self._queue[: self._max_events], self._queue[self._max_events :]
            if self._queue:
                self._wakeup.set()
            await self._write(batch)

    async def _full(self) -> None:
        while len(self._queue) < self._max_events and not self._closing:
            await self._wakeup.wait()
            self._wakeup.clear()

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            results = await self._transaction(batch)
        except Exception:
            logger.warning("a group commit of %d usage events failed; retrying each", len(batch))
            self.figures.retried_alone += len(batch)
            await self._write_alone(batch)
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.answer.done():
                pending.answer.set_result(result)

    async def _write_alone(self, batch: list[_Pending]) -> list[UsageEventRead]:
        results = []
        for pending in batch:
            try:
                [result] = await self._transaction([pending])
            except Exception as exc:
                if not pending.answer.done():
                    pending.answer.set_exception(exc)
                continue
            results.append(result)
            if not pending.answer.done():
                pending.answer.set_result(result)
        return results

    async def _transaction(self, batch: list[_Pending]) -> list[UsageEventRead]:
        async with self._sessionmaker() as session, session.begin():
            results = await service.record_rows(
                session, self._settings, [p.row for p in batch], now=utcnow()
            )
        self.figures.events += len(batch)
        self.figures.transactions += 1
        return results


@contextlib.asynccontextmanager
async def group_commit(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> AsyncIterator[UsageBatcher | None]:
    """The replica's batcher while the app runs (None when USAGE_GROUP_COMMIT_MAX_EVENTS is 0),
    drained at shutdown."""
    if settings.usage_group_commit_max_events <= 0:
        yield None
        return
    batcher = UsageBatcher(
        sessionmaker,
        settings,
        wait_s=settings.usage_group_commit_wait_ms / 1000,
        max_events=settings.usage_group_commit_max_events,
    )
    batcher.start()
    try:
        yield batcher
    finally:
        await batcher.stop()
