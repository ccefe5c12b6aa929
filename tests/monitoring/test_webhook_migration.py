"""Migration 0009: webhooks registered before Standard Webhooks keep their legacy signing."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core import migrations
from tests.core.test_migrations import scratch_database_url  # noqa: F401 - the fixture


def _run(url: str, *statements: str) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                rows: list[tuple[object, ...]] = []
                for statement in statements:
                    result = await conn.execute(text(statement))
                    if result.returns_rows:
                        rows = [tuple(row) for row in result.all()]
                return rows
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_existing_webhooks_are_marked_legacy_and_new_ones_are_not(
    scratch_database_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    migrations.upgrade(scratch_database_url, "0008")
    _run(
        scratch_database_url,
        "INSERT INTO monitoring_webhooks (tenant_id, url, secret_enc, enabled, created_at,"
        " updated_at) VALUES ('old', 'http://127.0.0.1:9/h', 'x', true, CURRENT_TIMESTAMP,"
        " CURRENT_TIMESTAMP)",
    )
    migrations.upgrade(scratch_database_url)
    rows = _run(
        scratch_database_url,
        "INSERT INTO monitoring_webhooks (tenant_id, url, secret_enc, enabled, created_at,"
        " updated_at) VALUES ('new', 'http://127.0.0.1:9/h', 'x', true, CURRENT_TIMESTAMP,"
        " CURRENT_TIMESTAMP)",
        "SELECT tenant_id, legacy_signing FROM monitoring_webhooks ORDER BY tenant_id",
    )
    assert [(tenant, bool(legacy)) for tenant, legacy in rows] == [("new", False), ("old", True)]
