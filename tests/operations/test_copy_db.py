"""`junction copy-db` and `junction verify-db`: every direction, resume after a kill, refusals."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, insert, inspect, select, text, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.core import migrations
from app.core.db import Base
from app.devtools.oauth_provider import LocalOAuthServer
from app.usage.models import UsageEvent
from tests.conftest import IS_POSTGRES, bearer, running_app
from tests.operations.conftest import (
    API_KEY,
    TENANT,
    NewDatabase,
    add_usage_events,
    fill_through_app,
    junction,
    settings_for,
)
from tests.provider_configs.conftest import find, history, post_config, provider
from tests.tokens.helpers import read_token

BACKEND_KIND = "postgresql" if IS_POSTGRES else "sqlite"
Migrate = Callable[..., Awaitable[None]]


async def _source(kind: str, database_url: str, new_database: NewDatabase, migrate: Migrate) -> str:
    """The suite's own database when it is of `kind`, else a fresh one at the latest schema."""
    if kind == BACKEND_KIND:
        return database_url
    url = await new_database(kind)
    await migrate(url)
    return url


async def _index_names(url: str) -> set[str | None]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: {
                    index["name"]
                    for table in inspect(sync).get_table_names()
                    for index in inspect(sync).get_indexes(table)
                }
            )
    finally:
        await engine.dispose()


async def _count(url: str, statement: Any) -> int:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(statement)).scalar_one())
    finally:
        await engine.dispose()


def _usage_count() -> Any:
    return select(func.count()).select_from(UsageEvent)


@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [("sqlite", "postgresql"), ("postgresql", "sqlite"), ("postgresql", "postgresql")],
    ids=["sqlite-to-postgresql", "postgresql-to-sqlite", "postgresql-to-postgresql"],
)
async def test_a_copy_holds_every_row_and_the_app_on_it_decrypts_and_writes(
    source_kind: str,
    target_kind: str,
    database_url: str,
    new_database: NewDatabase,
    migrated: Migrate,
    oauth_server: LocalOAuthServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = await _source(source_kind, database_url, new_database, migrated)
    filled = await fill_through_app(source, oauth_server)
    target = await new_database(target_kind)

    assert await junction("copy-db", "--from", source, "--to", target, "--batch-size", "7") == 0
    out = capsys.readouterr().out
    assert f"verified: {len(Base.metadata.sorted_tables)} tables identical" in out
    assert await junction("verify-db", source, target) == 0

    async with running_app(settings_for(target)) as (_app, client):
        # Encrypted values were copied as they are, bound to the same ids: they decrypt.
        token = await read_token(client, filled.token)
        assert token.status_code == 200, token.text
        assert token.json()["access_token"] == filled.access_token
        revealed = await client.get(
            f"/config/{TENANT}?include_secrets=true", headers=bearer(filled.token)
        )
        assert find(revealed.json(), "payment", "stripe")["api_key"] == API_KEY
        # Ids the database hands out continue after the copied ones (PostgreSQL's sequence).
        written = await post_config(
            client, bearer(filled.token), payment=[provider("stripe", config_data={"zoom": 5})]
        )
        assert written.status_code == 200, written.text
        versions = await history(client, bearer(filled.token))
        assert [item["version"] for item in versions] == [3, 2, 1]


async def _stall_postgres(source: str, target: str) -> Callable[[], Awaitable[None]]:
    """Make the copy block inside usage_events: an uncommitted row on the target with the key
    of a row four fifths into the table (the copy's COPY waits for that transaction). Returns
    once the copy waits on it, with a function that ends the stall."""
    key = await _count_free_key(source)
    admin = await asyncpg.connect(target.replace("postgresql+asyncpg", "postgresql"))
    blocker = await asyncpg.connect(target.replace("postgresql+asyncpg", "postgresql"))
    deadline = time.monotonic() + 60
    while not await admin.fetchval("SELECT to_regclass('usage_events') IS NOT NULL"):
        assert time.monotonic() < deadline, "the target was never migrated"
        await asyncio.sleep(0.01)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute(
        "INSERT INTO usage_events (id, tenant_id, model, source, prompt_tokens,"
        " completion_tokens, total_tokens, occurred_at, period, recorded_at)"
        " VALUES ($1, 't', 'm', 's', 0, 0, 0, now(), '2026-01', now())",
        key,
    )
    while not await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'junction-operations'"
        " AND wait_event_type = 'Lock' AND datname = current_database()"
    ):
        assert time.monotonic() < deadline, "the copy never reached the stalled row"
        await asyncio.sleep(0.02)

    async def release() -> None:
        await transaction.rollback()
        await blocker.close()
        await admin.close()

    return release


async def _count_free_key(source: str) -> str:
    engine = create_async_engine(source, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            total = int((await conn.execute(_usage_count())).scalar_one())
            collate = ' COLLATE "C"' if source.startswith("postgresql") else ""
            row = await conn.execute(
                text(f"SELECT id FROM usage_events ORDER BY id{collate} LIMIT 1 OFFSET :n"),
                {"n": total * 4 // 5},
            )
            return str(row.scalar_one())
    finally:
        await engine.dispose()


def _stall_sqlite(target: str) -> Callable[[], Awaitable[None]]:
    """Take the target's write lock as soon as usage_events holds a committed batch: the
    copy's next batch waits for it (SQLite locks the whole file)."""
    path = target.split(":///", 1)[1]
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the copy never reached usage_events"
        try:
            probe = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            if probe.execute("SELECT count(*) FROM usage_events").fetchone()[0] > 0:
                probe.execute("BEGIN IMMEDIATE")
                break
            probe.close()
        except sqlite3.OperationalError:  # not created yet
            pass
        time.sleep(0.005)
    time.sleep(0.5)  # the copy has moved on to its next batch and waits for the lock

    async def release() -> None:
        probe.execute("ROLLBACK")
        probe.close()

    return release


@pytest.mark.parametrize("target_kind", ["postgresql", "sqlite"])
async def test_a_copy_killed_mid_table_resumes_without_losing_or_doubling_a_row(
    target_kind: str,
    database_url: str,
    new_database: NewDatabase,
    oauth_server: LocalOAuthServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await fill_through_app(database_url, oauth_server)
    await add_usage_events(database_url, 6_000)
    total = await _count(database_url, _usage_count())
    target = await new_database(target_kind)
    copy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "copy-db",
            "--from",
            database_url,
            "--to",
            target,
            "--batch-size",
            "25",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        if target_kind == "postgresql":
            release = await _stall_postgres(database_url, target)
        else:
            release = await asyncio.to_thread(_stall_sqlite, target)
        os.kill(copy.pid, signal.SIGKILL)
        assert copy.wait(timeout=30) == -signal.SIGKILL
        await release()
    finally:
        if copy.poll() is None:
            copy.kill()
    interrupted = await _count(target, _usage_count())
    assert 0 < interrupted < total

    assert await junction("copy-db", "--from", database_url, "--to", target, "--resume") == 0
    out = capsys.readouterr().out
    assert "already there from an interrupted run" in out
    assert f"verified: {len(Base.metadata.sorted_tables)} tables identical" in out
    assert await _count(target, _usage_count()) == total
    assert await junction("verify-db", database_url, target) == 0
    # A SQLite target's plain indexes are dropped while a table is copied: built again.
    assert await _index_names(target) >= {
        index.name for table in Base.metadata.sorted_tables for index in table.indexes
    }


async def test_verify_names_the_table_where_one_row_changed(
    database_url: str,
    new_database: NewDatabase,
    oauth_server: LocalOAuthServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await fill_through_app(database_url, oauth_server)
    target = await new_database("sqlite" if IS_POSTGRES else "postgresql")
    assert await junction("copy-db", "--from", database_url, "--to", target) == 0
    capsys.readouterr()
    engine = create_async_engine(target, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            one = (await conn.execute(select(UsageEvent.id).limit(1))).scalar_one()
            await conn.execute(
                update(UsageEvent).where(UsageEvent.id == one).values(completion_tokens=999)
            )
    finally:
        await engine.dispose()

    assert await junction("verify-db", database_url, target) == 1
    captured = capsys.readouterr()
    assert "different: usage_events" in captured.err
    lines = {line.split()[0]: line for line in captured.out.splitlines()[1:-1]}
    assert lines["usage_events"].endswith("DIFFERENT")
    assert all(line.endswith("ok") for name, line in lines.items() if name != "usage_events")


async def test_a_target_holding_rows_is_refused_without_resume(
    database_url: str,
    new_database: NewDatabase,
    oauth_server: LocalOAuthServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await fill_through_app(database_url, oauth_server)
    target = await new_database(BACKEND_KIND)
    assert await junction("copy-db", "--from", database_url, "--to", target) == 0
    rows = await _count(target, _usage_count())
    capsys.readouterr()

    assert await junction("copy-db", "--from", database_url, "--to", target) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "usage_events" in err and "--resume" in err
    assert await _count(target, _usage_count()) == rows


async def test_a_source_behind_the_latest_schema_is_refused_with_the_command_that_fixes_it(
    new_database: NewDatabase, migrated: Migrate, capsys: pytest.CaptureFixture[str]
) -> None:
    source = await new_database(BACKEND_KIND)
    await migrated(source, "0007")
    target = await new_database("sqlite")

    assert await junction("copy-db", "--from", source, "--to", target) == 2
    err = capsys.readouterr().err
    assert f"is at schema 0007, not {migrations.head_revision()}" in err
    assert "junction migrate" in err and "DATABASE_URL=" in err
    assert not Path(target.split(":///", 1)[1]).exists()  # nothing was made of the target


async def test_a_password_in_a_url_is_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://postgres:hunter2-secret@127.0.0.1:1/nowhere"
    assert await junction("verify-db", url, url) == 2
    captured = capsys.readouterr()
    assert "cannot open" in captured.err
    assert "hunter2-secret" not in captured.err + captured.out


async def test_the_source_snapshot_does_not_see_rows_written_after_it_began(
    database_url: str,
) -> None:
    from app.operations import databases

    await add_usage_events(database_url, 3)
    database = databases.open_database(database_url, must_exist=True)
    try:
        async with databases.snapshot(database) as conn:
            if IS_POSTGRES:
                level = await conn.execute(text("SHOW transaction_isolation"))
                assert level.scalar() == "repeatable read"
                assert (await conn.execute(text("SHOW transaction_read_only"))).scalar() == "on"
            assert await databases.count_rows(conn, UsageEvent.__table__) == 3
            await add_usage_events(database_url, 2)  # another connection commits meanwhile
            assert await databases.count_rows(conn, UsageEvent.__table__) == 3
            # The copy's and the checksum's reads go to the driver directly: in the snapshot too.
            assert await databases.fetch_one(conn, "SELECT count(*) FROM usage_events") == (3,)
    finally:
        await database.dispose()
    assert await _count(database_url, _usage_count()) == 5


@pytest.mark.parametrize("command", ["copy-db", "verify-db"])
def test_each_command_explains_itself_and_its_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert "exit codes: 0 identical, 1 a table differs" in capsys.readouterr().out


# Text the copy's lines must escape (COPY's text format), and look-alikes of those escapes.
AWKWARD = [
    "tab\there",
    "tab\\there",  # a backslash and a t: not the tab above
    "line\nbreak",
    "carriage\rreturn",
    "back\\slash\\",
    "\\N",  # the text, not NULL
    "",
    "ünïcødé ✓ 😀",
]


async def test_awkward_values_survive_the_copy_both_ways_and_a_look_alike_is_caught(
    new_database: NewDatabase, migrated: Migrate, capsys: pytest.CaptureFixture[str]
) -> None:
    source = await new_database("sqlite")
    await migrated(source)
    now = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    events = [
        {
            "id": f"event-{n}",
            "tenant_id": TENANT,
            "request_id": text_value if n % 2 else None,
            "model": text_value,
            "source": "awkward",
            "prompt_tokens": n,
            "completion_tokens": -n,
            "total_tokens": 0,
            "estimated_cost_usd": [
                None,
                Decimal("0.0000000001"),
                Decimal("12345.1234567891"),
                Decimal("0"),
                Decimal("-2.5"),
            ][n % 5],
            "occurred_at": now + timedelta(microseconds=n),
            "period": "2026-03",
            "recorded_at": now,
        }
        for n, text_value in enumerate(AWKWARD)
    ]
    deletion = {
        "id": "deletion-1",
        "deleted_tenant_id": "gone\ttenant",
        "name": None,
        "tier": "",
        "deleted_by": "ops\\n",
        "deleted_at": now,
        "counts": {"z": 1e2, "a": 1.0, "tab\tkey": [1, 2.5, "x\ny"], "none": None},
        "revocations": {"attempted": 2, "failed": ["back\\slash", "ünï"], "ok": True},
    }
    engine = create_async_engine(source, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(UsageEvent), events)
            await conn.execute(insert(Base.metadata.tables["workspace_deletions"]), deletion)
            # A datetime some other tool wrote in another ISO form (SQLAlchemy's has a space
            # and six decimals): the same moment once copied.
            await conn.execute(
                text("UPDATE usage_events SET recorded_at = :at WHERE id = 'event-0'"),
                {"at": "2026-03-04T05:06:07"},
            )
    finally:
        await engine.dispose()
    postgres, back = await new_database("postgresql"), await new_database("sqlite")

    assert await junction("copy-db", "--from", source, "--to", postgres, "--batch-size", "3") == 0
    assert await junction("copy-db", "--from", postgres, "--to", back, "--batch-size", "3") == 0
    assert await junction("verify-db", source, back) == 0
    engine = create_async_engine(back, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            copied = (await conn.execute(select(UsageEvent.__table__).order_by("id"))).all()
            copied_deletion = (
                await conn.execute(select(Base.metadata.tables["workspace_deletions"]))
            ).one()
    finally:
        await engine.dispose()
    assert [row.model for row in copied] == AWKWARD
    assert [row.request_id for row in copied] == [e["request_id"] for e in events]
    assert [row.estimated_cost_usd for row in copied] == [e["estimated_cost_usd"] for e in events]
    assert [row.occurred_at for row in copied] == [e["occurred_at"] for e in events]
    assert {row.recorded_at for row in copied} == {now}
    assert copied_deletion._asdict() == deletion
    capsys.readouterr()

    # One text replaced by its escaped look-alike: a tab by a backslash and a t.
    engine = create_async_engine(postgres, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(UsageEvent).where(UsageEvent.id == "event-0").values(model="tab\\there")
            )
    finally:
        await engine.dispose()
    assert await junction("verify-db", source, postgres) == 1
    assert "different: usage_events" in capsys.readouterr().err
