"""The databases an operator's command works on: opening one, its schema revision, its tables."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Column, String, Table, event, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

import app.models  # noqa: F401  (every table registered on Base.metadata)
from app.core import migrations
from app.core.config import normalize_database_url
from app.core.db import Base, create_tool_engine
from app.operations import values

# How a command ends (documented in docs/operations.md).
EXIT_OK = 0
EXIT_DIFFERENT = 1
EXIT_REFUSED = 2
EXIT_FAILED = 3  # a database failed part-way (copy-db: run it again with --resume)


class Refused(Exception):
    """The command will not do what was asked; the message says why and what fixes it."""


def display_url(url: str) -> str:
    """The URL as it may be printed: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a database URL>"


@dataclass(frozen=True)
class Database:
    url: str
    engine: AsyncEngine

    @property
    def dialect(self) -> Literal["sqlite", "postgresql"]:
        return "postgresql" if self.engine.dialect.name == "postgresql" else "sqlite"

    @property
    def display(self) -> str:
        return display_url(self.url)

    @property
    def is_missing_file(self) -> bool:
        """A SQLite file that does not exist yet (the migration will create it)."""
        return self.dialect == "sqlite" and not Path(make_url(self.url).database or "").exists()

    async def dispose(self) -> None:
        await self.engine.dispose()


def open_database(url: str, *, must_exist: bool) -> Database:
    """An engine for `url` (SQLite or PostgreSQL). A SQLite source must exist: opening a path
    that does not would create an empty database and copy nothing."""
    url = normalize_database_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise Refused(f"{url!r} is not a database URL") from None
    if parsed.get_backend_name() not in {"sqlite", "postgresql"}:
        raise Refused(f"{display_url(url)}: only sqlite:/// and postgresql:// URLs are supported")
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if not path or path == ":memory:":
            raise Refused("an in-memory SQLite database cannot be copied to or from; use a file")
        if must_exist and not Path(path).is_file():
            raise Refused(f"{display_url(url)}: no such file")
    engine = create_tool_engine(url)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_functions)
    return Database(url, engine)


def _sqlite_functions(dbapi_connection: Any, _record: Any) -> None:
    """The copy's and the checksum's SQLite functions (app/operations/values.py)."""
    for name, arguments, function in values.SQLITE_FUNCTIONS:
        dbapi_connection.create_function(name, arguments, function, deterministic=True)


def describe_failure(exc: BaseException) -> str:
    """The error's class and first line (the engines hide bound parameters; no URL is in it)."""
    reason = str(getattr(exc, "orig", None) or exc)
    return f"{type(exc).__name__}: {reason.splitlines()[0] if reason else ''}"


def _connection_refused(database: Database, exc: BaseException) -> Refused:
    return Refused(f"cannot open {database.display}: {describe_failure(exc)}")


async def schema_revision(database: Database) -> str | None:
    """The Alembic revision the database is at; None for a database without the schema."""
    try:
        async with database.engine.connect() as conn:
            if not await conn.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
                return None
            revision = (
                await conn.execute(text("SELECT version_num FROM alembic_version"))
            ).scalar()
    except (TimeoutError, DBAPIError, OSError) as exc:
        raise _connection_refused(database, exc) from exc
    return str(revision) if revision is not None else None


async def require_head(database: Database, role: str) -> None:
    """Refuse a database not at this code's latest schema, naming the command that fixes it."""
    head = migrations.head_revision()
    current = await schema_revision(database)
    if current == head:
        return
    if current is not None and not migrations.is_known_revision(current):
        raise Refused(
            f"the {role} {database.display} is at schema {current}, which this junction does not "
            f"know (a newer release wrote it): run the command with that release"
        )
    raise Refused(
        f"the {role} {database.display} is at schema {current or '(none)'}, not {head}; bring it "
        f"to the latest first: DATABASE_URL='{database.display}' junction migrate "
        "(with the real password in the URL)"
    )


def copied_tables() -> list[Table]:
    """Every table of the schema, parents before children (alembic_version is not in it)."""
    return list(Base.metadata.sorted_tables)


def key_columns(table: Table) -> list[Column[object]]:
    return list(table.primary_key.columns)


def key_ordering(table: Table, dialect: str) -> list[ColumnElement[Any]]:
    """ORDER BY the primary key, bytewise on both databases: SQLite's default collation is,
    PostgreSQL's database collation need not be ("C" is), and a resumed copy compares keys
    in Python (code points, which is the same order for UTF-8)."""
    ordering: list[ColumnElement[Any]] = []
    for column in key_columns(table):
        if dialect == "postgresql" and isinstance(column.type, String):
            ordering.append(column.collate("C"))
        else:
            ordering.append(column)
    return ordering


# Collations whose order is the code points' (for UTF-8, the bytes'): the order the copy needs.
_BYTEWISE_COLLATIONS = frozenset({"c", "posix", "c.utf-8", "c.utf8", "ucs_basic"})


async def orders_text_bytewise(conn: AsyncConnection) -> bool:
    """Whether the database orders text bytewise by default: SQLite does (BINARY); PostgreSQL
    does under the C, POSIX and C.UTF-8 collations. Then a key's index gives the copy's order,
    and an ORDER BY with COLLATE "C" would instead sort the whole table (the index is in the
    database's collation, and PostgreSQL matches collations by name). Only the libc provider's
    collations are trusted by name."""
    if dialect_of(conn) == "sqlite":
        return True
    # The locale provider (PostgreSQL 15 and later; absent before, when libc always sorted): an
    # ICU database may read `C` in datcollate and still sort by ICU's rules.
    row = await fetch_one(
        conn,
        "SELECT datcollate, to_jsonb(d) ->> 'datlocprovider' FROM pg_database AS d"
        " WHERE datname = current_database()",
    )
    return str(row[0]).lower() in _BYTEWISE_COLLATIONS and row[1] in (None, "c")


def dialect_of(conn: AsyncConnection) -> Literal["sqlite", "postgresql"]:
    return "postgresql" if conn.dialect.name == "postgresql" else "sqlite"


async def driver_of(conn: AsyncConnection) -> Any:
    """The driver's own connection under `conn`: asyncpg's, or aiosqlite's. The copy and the
    checksum talk to it directly: rows come as the driver gives them (tuples, asyncpg records),
    without SQLAlchemy's per-row and per-value processing, which at a million rows is most of
    the cost. Inside `snapshot`, its statements run in the snapshot's transaction."""
    return (await conn.get_raw_connection()).driver_connection


async def fetch_batches(
    conn: AsyncConnection, sql: str, params: Sequence[Any], size: int
) -> AsyncGenerator[Sequence[Sequence[Any]]]:
    """The rows of `sql` (SQL text in the driver's own parameter style: `$1` on PostgreSQL,
    `?` on SQLite), `size` at a time; on PostgreSQL through a server-side cursor, which needs
    a transaction (`snapshot`)."""
    driver = await driver_of(conn)
    if dialect_of(conn) == "postgresql":
        statement = await driver.prepare(sql)
        cursor = await statement.cursor(*params)
        while batch := await cursor.fetch(size):
            yield batch
        return
    cursor = await driver.execute(sql, tuple(params))
    try:
        while batch := await cursor.fetchmany(size):
            yield batch
    finally:
        await cursor.close()


async def fetch_one(conn: AsyncConnection, sql: str) -> Sequence[Any]:
    """The one row of `sql` (driver SQL text, no parameters)."""
    driver = await driver_of(conn)
    if dialect_of(conn) == "postgresql":
        return tuple(await driver.fetchrow(sql))
    cursor = await driver.execute(sql)
    try:
        return tuple(await cursor.fetchone())
    finally:
        await cursor.close()


async def count_rows(conn: AsyncConnection, table: Table) -> int:
    return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def nonempty_tables(database: Database) -> list[str]:
    """The schema's tables that exist in the database and hold at least one row."""
    try:
        async with database.engine.connect() as conn:
            existing = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
            names = []
            for table in copied_tables():
                if (
                    table.name in existing
                    and (await conn.execute(select(1).select_from(table).limit(1))).first()
                ):
                    names.append(table.name)
    except (TimeoutError, DBAPIError, OSError) as exc:
        raise _connection_refused(database, exc) from exc
    return names


@asynccontextmanager
async def snapshot(database: Database) -> AsyncIterator[AsyncConnection]:
    """One read-only transaction over the whole database, so every table is read as of one
    moment while the service keeps writing: REPEATABLE READ on PostgreSQL; on SQLite (WAL) a
    read transaction is a snapshot already."""
    async with database.engine.connect() as conn:
        if database.dialect == "postgresql":
            conn = await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        async with conn.begin():
            # The snapshot is taken at the first statement (both databases): take it now. On
            # PostgreSQL this also opens the transaction the driver's own statements join.
            if database.dialect == "sqlite":
                await conn.execute(text("SELECT count(*) FROM sqlite_master"))
            else:
                # The copy's row hashes and texts (md5, to_char over every column) ran 25%
                # slower compiled: 6.5 s against 5.1 s for 300,000 rows. For this transaction
                # only (a startup parameter would not pass PgBouncer).
                await conn.execute(text("SET LOCAL jit = off"))
                await conn.execute(text("SELECT 1"))  # SET takes no snapshot; this does
            yield conn
