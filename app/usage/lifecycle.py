"""Start-up and shutdown of the usage domain (called from the app's lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.usage.prices import PriceTable


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The price table is settings plus defaults, built once rather than per event.
    app.state.usage_prices = PriceTable.from_settings(app.state.settings)
    yield
