"""The monitoring loop: lease due connections, refresh them with bounded concurrency, release."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.db import utcnow
from app.monitoring import metrics, repository
from app.monitoring.lease_renewal import LeaseRenewal
from app.monitoring.repository import LeasedConnection
from app.tokens.refresh import LoadedRow, RefreshOutcome, RefreshResult

logger = logging.getLogger("junction.monitoring")

# Counted as failures in a tick (the loop's own ERROR included: the refresher raised).
FAILED_RESULTS = frozenset(
    {
        RefreshResult.REFRESH_FAILED,
        RefreshResult.NEEDS_REAUTH,
        RefreshResult.CLIENT_MISCONFIGURED,
        RefreshResult.ERROR,
    }
)

# A provider may hold this many rounds of its concurrency limit in flight on one instance; beyond
# that the loop leases other providers' connections, so a slow provider cannot fill the batch.
# The loop as a whole holds at most this many rounds of its own concurrency: what it leases
# beyond that would only wait (its lease renewed meanwhile) or be handed back.
PROVIDER_QUEUE_ROUNDS = 4
# The shortest pause between two passes, however soon the next connection is due: a token due
# at once (or a clock step) costs a pass every this often, not a busy loop.
MIN_PAUSE_S = 0.1


class Refresher(Protocol):
    """How the loop refreshes a leased connection (app/monitoring/service.py binds it to the
    tokens domain)."""

    async def load(self, connection_ids: list[str]) -> dict[str, LoadedRow]:
        """What the refreshes of a batch just leased read before their provider calls, in one
        query (those it leaves out read their own)."""

    async def refresh(
        self, connection: LeasedConnection, owner: str, loaded: LoadedRow | None
    ) -> RefreshOutcome:
        """Refresh it for the lease's owner (the loop's id), from the row `load` read if any;
        committed when it returns."""

    async def announce(self, outcome: RefreshOutcome) -> None:
        """After `refresh`: tell whoever must hear of the outcome (the replicas' read caches).
        The loop calls it with its slots free: it waits on acknowledgements, not the provider."""


def instance_owner() -> str:
    """A lease owner id unique to this loop: host, process and a random suffix."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass
class TickStats:
    """One leasing pass and the refreshes it started; complete when the last one has finished."""

    started_at: datetime
    due: int = 0
    refreshed: int = 0
    failed: int = 0
    skipped: int = 0
    finished_at: datetime | None = None
    pending: int = 0
    _started_monotonic: float = field(default_factory=time.monotonic, repr=False)
    duration_s: float | None = None

    def record(self, result: RefreshResult) -> None:
        if result == RefreshResult.REFRESHED:
            self.refreshed += 1
        elif result in FAILED_RESULTS:
            self.failed += 1
        else:
            self.skipped += 1

    def finish(self) -> None:
        self.finished_at = utcnow()
        self.duration_s = time.monotonic() - self._started_monotonic


class MonitorLoop:
    """Runs in the background of one app instance; any number of instances share the work."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        refresher: Refresher,
        *,
        owner: str | None = None,
        on_tick: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.owner = owner or instance_owner()
        self._sessionmaker = sessionmaker
        self._refresher = refresher
        self._on_tick = on_tick
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        # The earliest refresh_due_at known to be ahead (from the database after a pass, or
        # told by `wake_by`); the loop passes then rather than a whole interval later.
        self._wake_at: datetime | None = None
        self._rescheduled = asyncio.Event()
        self._global_slots = asyncio.Semaphore(settings.monitor_concurrency)
        self._provider_slots: dict[str, asyncio.Semaphore] = {}
        self._queued: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._in_flight_by_provider: Counter[str] = Counter()
        # The leases of the queued and running connections, renewed meanwhile.
        self._leases = LeaseRenewal(settings, sessionmaker, self.owner)
        self.last_tick: TickStats | None = None
        self.ticks = 0
        # Results since start (refreshed, skipped, ...), for the status route and the tests.
        self.totals: Counter[RefreshResult] = Counter()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping.is_set()

    @property
    def in_flight(self) -> int:
        return len(self._queued) + len(self._running)

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"monitor-loop:{self.owner}")
        metrics.MONITOR_RUNNING.set(1)
        logger.info("monitoring loop started (owner %s)", self.owner)

    async def stop(self) -> None:
        """Stop leasing, drop queued work, give running refreshes the grace period, then cancel.

        A refresh writes its outcome in one transaction, so a cancelled one leaves the previous
        token set in place; dropped and cancelled connections have their leases released.
        """
        if self._task is None:
            return
        self._stopping.set()
        await self._task
        self._task = None
        for task in list(self._queued.values()):
            task.cancel()
        running = list(self._running.values())
        if running:
            _, late = await asyncio.wait(running, timeout=self.settings.monitor_shutdown_grace_s)
            for task in late:
                task.cancel()
        await asyncio.gather(*self._all_tasks(), return_exceptions=True)
        await self._leases.stop()
        metrics.MONITOR_RUNNING.set(0)
        logger.info("monitoring loop stopped (owner %s)", self.owner)

    def _all_tasks(self) -> list[asyncio.Task[None]]:
        return [*self._queued.values(), *self._running.values()]

    # --- scheduling -----------------------------------------------------------------------

    def wake_by(self, due_at: datetime) -> None:
        """A connection is due at `due_at` (this process just stored it: a login, a refresh):
        pass by then, however long the interval."""
        if self._wake_at is None or due_at < self._wake_at:
            self._wake_at = due_at
            self._rescheduled.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            more_due = False
            try:
                more_due = await self._lease_and_dispatch()
            except Exception:
                logger.exception("monitoring tick failed; retrying next interval")
            await self._pause(more_due)

    async def _pause(self, more_due: bool) -> None:
        """Wait until the next connection is due (at least MIN_PAUSE_S, at most the interval);
        with more due than the last pass took, only until room frees (half the queue: refills
        come in batches of half of it, not one leasing query per finished refresh)."""
        if more_due:
            await self._wait_for(self._slot_freed, self.settings.monitor_interval_s)
            return
        clock = asyncio.get_running_loop()
        deadline = clock.time() + self.settings.monitor_interval_s
        while not self._stopping.is_set():
            self._rescheduled.clear()
            wait_s = deadline - clock.time()
            if self._wake_at is not None:
                wait_s = min(wait_s, (self._wake_at - utcnow()).total_seconds())
            if not await self._wait_for(self._rescheduled, max(wait_s, MIN_PAUSE_S)):
                return  # the time came (or shutdown)
            # Told of an earlier due time: wait for that instead.

    async def _wait_for(self, event: asyncio.Event, timeout_s: float) -> bool:
        """Wait for `event`, shutdown or the timeout; whether `event` was set."""
        waits = [asyncio.ensure_future(self._stopping.wait()), asyncio.ensure_future(event.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waits:
                waiter.cancel()
        return event.is_set() and not self._stopping.is_set()

    async def run_once(self) -> TickStats:
        """One pass, waiting for its refreshes to finish (tests and benchmarks drive this)."""
        tick, _ = await self._lease(self._queue_limit - self.in_flight)
        await asyncio.gather(*self._all_tasks(), return_exceptions=True)
        return tick

    async def _lease_and_dispatch(self) -> bool:
        capacity = self._queue_limit - self.in_flight
        if capacity <= 0:
            return True
        _, more_due = await self._lease(capacity)
        return more_due

    @property
    def _queue_limit(self) -> int:
        """What one instance holds leased at most: a batch, and no more than its concurrency
        can start within PROVIDER_QUEUE_ROUNDS rounds."""
        rounds = self.settings.monitor_concurrency * PROVIDER_QUEUE_ROUNDS
        return min(self.settings.monitor_batch_size, rounds)

    @property
    def _provider_share(self) -> int:
        return self.settings.monitor_per_provider_concurrency * PROVIDER_QUEUE_ROUNDS

    def _saturated_providers(self) -> list[str]:
        return [p for p, n in self._in_flight_by_provider.items() if n >= self._provider_share]

    async def _lease(self, capacity: int) -> tuple[TickStats, bool]:
        """Lease and start one pass; also says whether more may be due than the pass took."""
        self._slot_freed.clear()
        now = utcnow()
        lease_until = now + timedelta(seconds=self.settings.monitor_lease_s)
        tick = TickStats(started_at=now)
        leased: list[LeasedConnection] = []
        more_due = False
        if capacity > 0:
            excluded = self._saturated_providers()
            # What the database says below replaces what was told before this pass (it has
            # committed by now); what is told while the pass runs is kept.
            self._wake_at = None
            async with self._sessionmaker() as session, session.begin():
                claimed = await repository.lease_due_connections(
                    session,
                    owner=self.owner,
                    now=now,
                    lease_until=lease_until,
                    limit=capacity,
                    exclude_providers=excluded,
                )
                if len(claimed) < capacity:
                    # Everything due is taken: when is the next one? (Same transaction.)
                    next_due_at = await repository.next_due_at(session, now)
                    if next_due_at is not None:
                        self.wake_by(next_due_at)
            leased = await self._keep_provider_share(claimed)
            loaded = await self._load([connection.id for connection in leased])
            # It took all it could, handed some back, or left a busy provider's rows out.
            more_due = len(claimed) >= capacity or len(leased) < len(claimed) or bool(excluded)
        tick.due = tick.pending = len(leased)
        for connection in leased:
            self._in_flight_by_provider[connection.provider] += 1
            self._leases.hold(connection.id, lease_until)
            self._queued[connection.id] = asyncio.create_task(
                self._refresh_leased(connection, loaded.get(connection.id), tick),
                name=f"monitor-refresh:{connection.id}",
            )
        if leased:
            self._leases.keep_renewed()
        else:
            await self._complete(tick)
        return tick, more_due

    async def _keep_provider_share(self, leased: list[LeasedConnection]) -> list[LeasedConnection]:
        """Hand back what one provider got beyond its share, so its queue stays short and its
        leases do not expire while they wait; the next pass takes them (or another replica)."""
        limit = self._provider_share
        taken: Counter[str] = Counter(self._in_flight_by_provider)
        kept: list[LeasedConnection] = []
        excess: list[str] = []
        for connection in leased:
            if taken[connection.provider] < limit:
                taken[connection.provider] += 1
                kept.append(connection)
            else:
                excess.append(connection.id)
        if excess:
            async with self._sessionmaker() as session, session.begin():
                await repository.release_leases(session, excess, self.owner)
        return kept

    # --- one connection -------------------------------------------------------------------

    def _provider_slot(self, provider: str) -> asyncio.Semaphore:
        slot = self._provider_slots.get(provider)
        if slot is None:
            slot = asyncio.Semaphore(self.settings.monitor_per_provider_concurrency)
            self._provider_slots[provider] = slot
        return slot

    async def _load(self, connection_ids: list[str]) -> dict[str, LoadedRow]:
        if not connection_ids:
            return {}
        try:
            return await self._refresher.load(connection_ids)
        except Exception:
            # Each refresh then reads its own row.
            logger.warning("could not read the leased connections", exc_info=True)
            return {}

    async def _refresh_leased(
        self, connection: LeasedConnection, loaded: LoadedRow | None, tick: TickStats
    ) -> None:
        result = RefreshResult.ABANDONED
        released = False  # by the refresh's own write
        hand_back = False
        outcome: RefreshOutcome | None = None
        try:
            # The provider's slot first: a task waiting on a slow provider holds no global slot.
            async with self._provider_slot(connection.provider), self._global_slots:
                if self._stopping.is_set() or self._leases.lapsed(connection.id):
                    # Shutting down, or waited so long the lease lapsed and may be someone else's.
                    return
                self._running[connection.id] = self._queued.pop(connection.id)
                try:
                    outcome = await self._refresher.refresh(connection, self.owner, loaded)
                    result, released = outcome.result, outcome.lease_released
                    hand_back = _not_due_again(outcome)
                except Exception:
                    logger.exception("monitoring refresh of connection %s failed", connection.id)
                    result = RefreshResult.ERROR
            if outcome is not None:
                # With the slots free again: the next provider call need not wait for the
                # replicas to acknowledge this one.
                await self._announce(outcome)
        finally:
            self._queued.pop(connection.id, None)
            self._running.pop(connection.id, None)
            self._leases.drop(connection.id)
            self._in_flight_by_provider[connection.provider] -= 1
            if self._in_flight_by_provider[connection.provider] <= 0:
                del self._in_flight_by_provider[connection.provider]
            # A skipped connection keeps its lease until it expires: the tokens service declined
            # to call the provider (cooldown, backoff), and retrying it every pass would spin;
            # unless it is not due again before a later time (someone else refreshed it), when
            # keeping the lease could only delay its next refresh.
            if (result != RefreshResult.SKIPPED or hand_back) and not released:
                await self._release(connection.id)
            if hand_back and outcome is not None and outcome.refresh_due_at is not None:
                self.wake_by(outcome.refresh_due_at)
            metrics.count_refresh(connection.provider, result)
            self.totals[result] += 1
            tick.record(result)
            tick.pending -= 1
            # Lease again once there is room worth a query: half the queue, or a provider's
            # share just down to half (leasing for every finished refresh would mostly hand
            # rows back).
            if (
                self.in_flight <= self._queue_limit // 2
                or self._in_flight_by_provider[connection.provider] == self._provider_share // 2
            ):
                self._slot_freed.set()
            if tick.pending == 0:
                await self._complete(tick)

    async def _announce(self, outcome: RefreshOutcome) -> None:
        try:
            await self._refresher.announce(outcome)
        except Exception:
            # The refresh is stored; a replica not told serves its entry until it expires.
            logger.warning("could not announce the refresh of connection %s", outcome.connection_id)

    async def _release(self, connection_id: str) -> None:
        try:
            async with self._sessionmaker() as session, session.begin():
                await repository.release_leases(session, [connection_id], self.owner)
        except Exception:
            # The lease then simply expires and another pass takes the connection.
            logger.warning("could not release the lease of connection %s", connection_id)

    async def _complete(self, tick: TickStats) -> None:
        tick.finish()
        self.last_tick = tick
        self.ticks += 1
        metrics.LAST_TICK_TIMESTAMP.set(tick.started_at.timestamp())
        metrics.LAST_TICK_DURATION.set(tick.duration_s or 0.0)
        for outcome in ("due", "refreshed", "failed", "skipped"):
            metrics.LAST_TICK_CONNECTIONS.labels(outcome).set(getattr(tick, outcome))
        if self._on_tick is not None:
            try:
                await self._on_tick()
            except Exception:
                logger.warning("monitoring after-tick hook failed", exc_info=True)


def _not_due_again(outcome: RefreshOutcome) -> bool:
    """A skip that found the connection due only later (refreshed by someone else meanwhile)."""
    due_at = outcome.refresh_due_at
    return outcome.result == RefreshResult.SKIPPED and due_at is not None and due_at > utcnow()
