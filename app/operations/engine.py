"""The database engine an operator's command uses: no pool, and a statement timeout meant for
batch work rather than for requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.db import create_engine

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
