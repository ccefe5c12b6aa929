"""Start-up and shutdown of the monitoring domain (entered by the app's lifespan)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings
from app.core.crypto import Keyring
from app.monitoring import service, webhook_delivery
from app.monitoring.loop import MonitorLoop
from app.tokens.context import TokenContext

logger = logging.getLogger("junction.monitoring")


@dataclass(frozen=True)
class Monitoring:
    """The webhook dispatcher (always built: tests drive run_once) and the loop, None when
    MONITOR_ENABLED is off."""

    webhooks: webhook_delivery.WebhookDispatcher
    loop: MonitorLoop | None


@asynccontextmanager
async def lifespan(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    keyring: Keyring,
    http: httpx.AsyncClient,
    tokens: TokenContext,
) -> AsyncIterator[Monitoring]:
    # Every status change the tokens domain makes is recorded as an event (and a webhook).
    stop_listening = tokens.on_status_change(service.prepare_status_recorder)
    dispatcher = webhook_delivery.WebhookDispatcher(settings, sessionmaker, keyring, http)
    monitor: MonitorLoop | None = None
    stop_waking: Callable[[], None] = _nothing
    # Read-only maintenance: neither the loop nor the dispatcher writes to the database.
    if settings.monitor_enabled and not settings.read_only:
        await dispatcher.start()
        monitor = build_monitor(settings, sessionmaker, tokens)
        # A login or refresh of this process that is due before the loop's next pass wakes it.
        stop_waking = tokens.on_refresh_scheduled(monitor.wake_by)
        await monitor.start()
    try:
        yield Monitoring(webhooks=dispatcher, loop=monitor)
    finally:
        stop_waking()
        if monitor is not None:
            await monitor.stop()
        await dispatcher.stop()
        stop_listening()


def _nothing() -> None:
    return None


def build_monitor(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    tokens: TokenContext,
    *,
    owner: str | None = None,
) -> MonitorLoop:
    """A loop over this database and token context (not started)."""
    counted_at = 0.0

    async def count_statuses() -> None:
        # The per-provider status gauges need a GROUP BY; once per interval is plenty.
        nonlocal counted_at
        if time.monotonic() - counted_at < settings.monitor_interval_s:
            return
        counted_at = time.monotonic()
        async with sessionmaker() as session:
            await service.connection_status_counts(session)

    return MonitorLoop(
        settings,
        sessionmaker,
        service.monitor_refresher(tokens),
        owner=owner,
        on_tick=count_statuses,
    )
