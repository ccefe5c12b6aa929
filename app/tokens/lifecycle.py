"""Start-up and shutdown of the tokens domain (called from the app's lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.tokens.refresh import TokenContext


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state
    # Built here, not at import: overrides are validated at start-up, and the monitoring
    # lifespan (entered after this one) appends its status listener to this context.
    state.token_context = TokenContext.build(state)
    yield
