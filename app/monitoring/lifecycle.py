"""Start-up and shutdown of the monitoring domain (called from the app's lifespan)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.core.config import Settings
from app.monitoring import service, webhooks
from app.monitoring.loop import MonitorLoop
from app.tokens.service import TokenContext

logger = logging.getLogger("junction.monitoring")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # The tokens lifespan (entered before this one) built the context the refreshes run in.
    ctx = TokenContext.from_state(app.state)
    ctx.status_listeners.append(service.record_status_change)
    # Built always (tests drive run_once); its background task runs with the loop.
    dispatcher = webhooks.WebhookDispatcher(
        settings, app.state.sessionmaker, app.state.keyring, app.state.http
    )
    app.state.webhooks = dispatcher
    monitor: MonitorLoop | None = None
    if settings.monitor_enabled:
        await dispatcher.start()
        monitor = build_monitor(app)
        app.state.monitor = monitor
        await monitor.start()
    try:
        yield
    finally:
        if monitor is not None:
            await monitor.stop()
        await dispatcher.stop()
        ctx.status_listeners.remove(service.record_status_change)


def build_monitor(app: FastAPI, *, owner: str | None = None) -> MonitorLoop:
    """A loop over this app's database and token context (not started)."""
    settings: Settings = app.state.settings
    sessionmaker = app.state.sessionmaker
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
        service.monitor_refresher(TokenContext.from_state(app.state)),
        owner=owner,
        on_tick=count_statuses,
    )
