"""What an operator's command runs on: an engine without a pool, or the service's own started
state, both with a statement timeout meant for batch work rather than for requests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.db import create_engine
from app.state import AppState

T = TypeVar("T")

# aiosqlite runs each connection on a thread of its own, named after its worker function.
_SQLITE_WORKER_SUFFIX = "(_connection_worker_thread)"
# How long a command's end waits for such a thread (it has only its stop left to run).
_SQLITE_WORKER_WAIT_S = 2.0

# A request's statements are bounded by DB_STATEMENT_TIMEOUT_MS (5 s); a command's batches and
# counts over whole tables may take longer.
COMMAND_STATEMENT_TIMEOUT_MS = 600_000


def run_to_end(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` for a command, its event loop kept until SQLite's worker threads
    have ended.

    A connection aiosqlite could not open (a missing directory, a locked file) stops its worker
    thread without waiting for it, and the thread then hands its last result to the event loop:
    had `asyncio.run` closed the loop by then, the thread would print "Event loop is closed"
    after the command's one-line error. Every engine is disposed when `main` ends, so the
    threads left have only their stop to run.
    """

    async def settled() -> T:
        try:
            return await main
        finally:
            for thread in sqlite_worker_threads():
                await asyncio.to_thread(thread.join, _SQLITE_WORKER_WAIT_S)

    return asyncio.run(settled())


def sqlite_worker_threads() -> list[threading.Thread]:
    """The aiosqlite connection threads alive in this process."""
    return [t for t in threading.enumerate() if t.name.endswith(_SQLITE_WORKER_SUFFIX)]


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
