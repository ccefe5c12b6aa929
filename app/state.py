"""The application state: one typed object, built by the lifespan (app/main.py), kept on the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.applications import Starlette

if TYPE_CHECKING:
    # Types only: the domains' routers import app.core.deps, which reads this state, so the
    # domains must not be imported from here at run time.
    import httpx
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from app.auth.service import RevocationList
    from app.core.auth import TokenVerifier
    from app.core.cache import Cache
    from app.core.config import Settings
    from app.core.crypto import Keyring
    from app.core.rate_limit import RateLimiter
    from app.monitoring.lifecycle import Monitoring
    from app.operations.keys import UnknownKeyCheck
    from app.provider_configs.service import Domain as ProviderConfigs
    from app.tokens.context import TokenContext
    from app.usage.batcher import UsageBatcher
    from app.usage.prices import PriceTable


@dataclass(frozen=True, slots=True)
class AppState:
    """The clients built at start-up and each domain's share of them."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    cache: Cache
    keyring: Keyring
    http: httpx.AsyncClient
    token_verifier: TokenVerifier
    revocations: RevocationList
    schema_head: str | None
    provider_configs: ProviderConfigs
    tokens: TokenContext
    usage_prices: PriceTable
    monitoring: Monitoring
    key_check: UnknownKeyCheck
    rate_limiter: RateLimiter | None = None  # None: RATE_LIMIT unset
    usage_batcher: UsageBatcher | None = None  # None: USAGE_GROUP_COMMIT_MAX_EVENTS=0


# Kept as a plain attribute of the app: every request reads it, and Starlette's `app.state` answers
# each read through a Python `__getattr__`.
_ATTRIBUTE = "junction_state"


def keep_state(app: Starlette, state: AppState) -> None:
    setattr(app, _ATTRIBUTE, state)


def app_state(app: Starlette) -> AppState:
    """The state of a started app (its lifespan is running): `app_state(request.app).cache`."""
    state: AppState = app.__dict__[_ATTRIBUTE]
    return state
