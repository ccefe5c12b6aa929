"""The copy reads a PostgreSQL source in its key's index order only when the database's text
order is bytewise (a libc C, POSIX or C.UTF-8 collation); an ICU database, whatever its
datcollate says, is sorted with COLLATE "C"."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.operations import databases
from tests.conftest import PG_ADMIN_URL, _pg_admin, postgres_only


@pytest.fixture
async def icu_database() -> AsyncIterator[str]:
    name = f"junction_icu_{uuid.uuid4().hex[:10]}"
    await _pg_admin(
        f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
        "ICU_LOCALE 'und' LC_COLLATE 'C' LC_CTYPE 'C'"
    )
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _bytewise(url: str) -> bool:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await databases.orders_text_bytewise(conn)
    finally:
        await engine.dispose()


@postgres_only
async def test_a_libc_c_collation_orders_bytewise(database_url: str) -> None:
    assert await _bytewise(database_url)  # the machine's clusters are libc C.UTF-8


@postgres_only
async def test_an_icu_database_reading_c_in_datcollate_is_sorted(icu_database: str) -> None:
    assert not await _bytewise(icu_database)
