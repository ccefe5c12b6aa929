"""Start-up and shutdown of the provider_configs domain (called from the app's lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import ValidationError

from app.core.config import ConfigurationError, Settings
from app.provider_configs.cache import ConfigCache
from app.provider_configs.service import Defaults, Domain, document_loader


def load_defaults(settings: Settings) -> Defaults:
    try:
        return Defaults.from_settings_document(settings.load_provider_config_defaults())
    except (OSError, ValueError, ValidationError) as exc:
        raise ConfigurationError(f"PROVIDER_CONFIG_DEFAULTS is not usable: {exc}") from exc


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    defaults = load_defaults(settings)
    cache = ConfigCache(
        app.state.cache,
        document_loader(app.state.engine, defaults),
        ttl_s=settings.provider_config_cache_ttl_s,
        enabled=settings.provider_config_cache_enabled,
    )
    cache.subscribe()
    app.state.provider_configs = Domain(
        keyring=app.state.keyring,
        defaults=defaults,
        cache=cache,
        sessionmaker=app.state.sessionmaker,
    )
    try:
        yield
    finally:
        await cache.close()
