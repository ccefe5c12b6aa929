"""What an operator's command runs on: an engine without a pool, or the service's own started
state, both with a statement timeout meant for batch work rather than for requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.db import create_engine
from app.state import AppState

# A request's statements are bounded by DB_STATEMENT_TIMEOUT_MS (5 s); a command's batches and
# counts over whole tables may take longer.
COMMAND_STATEMENT_TIMEOUT_MS = 600_000


def command_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"db_statement_timeout_ms": COMMAND_STATEMENT_TIMEOUT_MS})


@asynccontextmanager
async def command_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(command_settings(settings), pool=False)
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def command_app(settings: Settings) -> AsyncIterator[AppState]:
    """The service's own clients and domains, started for a command (no monitoring loop), so the
    command writes and invalidates caches through the same paths as a request."""
    from app.main import started

    quiet = command_settings(settings).model_copy(update={"monitor_enabled": False})
    async with started(quiet) as state:
        yield state


def printable_url(url: str) -> str:
    """A database URL with its password hidden."""
    return make_url(url).render_as_string(hide_password=True)
