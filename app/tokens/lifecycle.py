"""Start-up and shutdown of the tokens domain (called from the app's lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.tokens.read_cache import TokenReadCache
from app.tokens.refresh import TokenContext


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state
    # Built here, not at import: overrides are validated at start-up, and the monitoring
    # lifespan (entered after this one) appends its status listener to this context.
    context = TokenContext.build(state)
    context.read_cache = TokenReadCache(state.cache, ttl_s=state.settings.token_read_cache_ttl_s)
    context.read_cache.subscribe()
    state.token_context = context
    yield
