"""Alembic environment: async engine, the application's metadata, batch mode on SQLite."""

from __future__ import annotations

import asyncio
import logging.config
from pathlib import Path

from sqlalchemy.engine import Connection

from alembic import context
from app.core.config import Settings, normalize_database_url
from app.core.db import create_engine
from app.models import Base

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    return normalize_database_url(url) if url else Settings().database_url


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite") and ":///" in url:
        path = url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def _configure(connection: Connection | None, url: str | None = None) -> None:
    is_sqlite = (url or "").startswith("sqlite") or (
        connection is not None and connection.dialect.name == "sqlite"
    )
    context.configure(
        connection=connection,
        url=url if connection is None else None,
        target_metadata=target_metadata,
        render_as_batch=is_sqlite,
        compare_type=True,
        literal_binds=connection is None,
    )


def run_migrations_offline() -> None:
    _configure(None, _database_url())
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    url = _database_url()
    _ensure_sqlite_dir(url)
    engine = create_engine(Settings(database_url=url), pool=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
