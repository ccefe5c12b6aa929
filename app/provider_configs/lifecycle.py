"""Start-up and shutdown of the provider_configs domain (entered by the app's lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.cache import Cache
from app.core.config import ConfigurationError, Settings
from app.core.crypto import Keyring
from app.provider_configs.cache import ConfigCache
from app.provider_configs.reads import document_loader
from app.provider_configs.rendering import Defaults
from app.provider_configs.service import Domain
from app.provider_configs.stream import ChangeFeed, ChangeSignals, StreamSlots


def load_defaults(settings: Settings) -> Defaults:
    try:
        return Defaults.from_settings_document(settings.load_provider_config_defaults())
    except (OSError, ValueError, ValidationError) as exc:
        raise ConfigurationError(f"PROVIDER_CONFIG_DEFAULTS is not usable: {exc}") from exc


@asynccontextmanager
async def lifespan(
    settings: Settings,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    cache: Cache,
    keyring: Keyring,
) -> AsyncIterator[Domain]:
    defaults = load_defaults(settings)
    signals = ChangeSignals()
    config_cache = ConfigCache(
        cache,
        document_loader(engine, defaults),
        ttl_s=settings.provider_config_cache_ttl_s,
        enabled=settings.provider_config_cache_enabled,
        on_change=signals.notify,
        on_reset=signals.notify_all,
    )
    config_cache.subscribe()
    changes = ChangeFeed(
        sessionmaker,
        signals,
        StreamSlots(settings.provider_config_streams_per_tenant),
        poll_s=settings.provider_config_stream_poll_s,
        heartbeat_s=settings.provider_config_stream_heartbeat_s,
    )
    try:
        yield Domain(
            keyring=keyring,
            defaults=defaults,
            cache=config_cache,
            sessionmaker=sessionmaker,
            changes=changes,
        )
    finally:
        await config_cache.close()
