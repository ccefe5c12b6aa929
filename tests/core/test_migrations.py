"""One Alembic chain for both databases: it matches the models and it runs down and up again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core import migrations
from app.models import Base
from tests.conftest import IS_POSTGRES, PG_ADMIN_URL, _pg_admin


@pytest.fixture
def scratch_database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database of this test's own (migrations run outside the test's event loop)."""
    if IS_POSTGRES:
        name = f"junction_mig_{uuid.uuid4().hex[:10]}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        yield f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}"


def _diff(url: str) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync_conn: compare_metadata(
                        MigrationContext.configure(sync_conn), Base.metadata
                    )
                )
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _tables(url: str) -> set[str]:
    async def run() -> set[str]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda c: c.dialect.get_table_names(c)))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_the_migrated_schema_matches_the_models(scratch_database_url: str) -> None:
    migrations.upgrade(scratch_database_url)
    assert _diff(scratch_database_url) == []


def test_the_chain_downgrades_to_nothing_and_upgrades_again(scratch_database_url: str) -> None:
    migrations.upgrade(scratch_database_url)
    migrations.downgrade(scratch_database_url, "base")
    assert _tables(scratch_database_url) <= {"alembic_version"}
    migrations.upgrade(scratch_database_url)
    assert {t.name for t in Base.metadata.sorted_tables} <= _tables(scratch_database_url)


def test_there_is_one_head() -> None:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(migrations.alembic_config()).get_heads()
    assert len(heads) == 1
