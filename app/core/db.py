"""Database: the declarative base, engine construction, and the per-request unit of work."""

from __future__ import annotations

import contextlib
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from app.core.config import Settings, normalize_database_url

logger = logging.getLogger("junction.db")

# Stable constraint names, so Alembic migrations are the same on PostgreSQL and SQLite.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSON everywhere, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite drops the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """Row ids are made here, not by the database, so a secret can be bound to its row on insert."""
    return uuid.uuid4().hex


def create_engine(settings: Settings, *, pool: bool = True) -> AsyncEngine:
    url = settings.database_url
    pool_kwargs: dict[str, Any] = (
        {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout_s,
        }
        if pool
        else {"poolclass": NullPool}
    )
    if settings.is_sqlite:
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, hide_parameters=True, **pool_kwargs
        )
        _configure_sqlite(engine)
        return engine
    server_settings = {"application_name": "junction"}
    connect_args: dict[str, Any] = {"server_settings": server_settings, "timeout": 5}
    if settings.db_pgbouncer:
        connect_args.update(_PGBOUNCER_CONNECT_ARGS)
    else:
        server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
        server_settings.update(SHORT_QUERY_SETTINGS)
    # hide_parameters: a logged database error never carries the values bound to it. No
    # pre-ping (a round trip per checkout): a dead connection fails its statement, is
    # invalidated by the pool and answers 503; recycling keeps idle ones from going stale.
    engine = create_async_engine(
        url,
        hide_parameters=True,
        connect_args=connect_args,
        pool_recycle=1800,
        **pool_kwargs,
    )
    if settings.db_pgbouncer:
        _set_statement_timeout_per_transaction(engine, settings.db_statement_timeout_ms)
    return engine


# The service's queries are meant to take milliseconds, and PostgreSQL's two remedies for long
# ones cost more than that: a plan whose estimate passes jit_above_cost is compiled (~100 ms
# here), and a parallel plan starts worker processes (~30 ms on 2 cores). Estimates pass those
# bars by mistake where the data is new: a usage summary's partial day at the end of its range
# was estimated at 30x its rows and took 80-100 ms instead of 4 (the first five runs of it on each
# pooled connection, until the prepared statement's generic plan took over). Operators'
# commands (`create_tool_engine`) keep parallel plans; their snapshots turn JIT off for their own
# transaction (app/operations/databases.py).
SHORT_QUERY_SETTINGS = {"jit": "off", "max_parallel_workers_per_gather": "0"}


# PgBouncer in transaction pooling mode gives each transaction whichever server connection is
# free, so nothing may outlive a transaction on the server. A prepared statement would: asyncpg's
# cache (statement_cache_size) and SQLAlchemy's (prepared_statement_cache_size) are off, and
# the statements SQLAlchemy prepares are unnamed (an empty name), which asyncpg parses again
# right before it executes them; unique names, the other documented way, would leave one named
# statement per query behind on the server connections until they close. Cost: the Parse
# round trip a cached statement skips.
_PGBOUNCER_CONNECT_ARGS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": lambda: "",
}

# Engines whose statement timeout is set in each transaction.
_TIMEOUT_PER_TRANSACTION: weakref.WeakSet[Engine] = weakref.WeakSet()


def _set_statement_timeout_per_transaction(engine: AsyncEngine, timeout_ms: int) -> None:
    """The statement timeout and SHORT_QUERY_SETTINGS set first in every transaction, local to
    it (set_config's `is_local`, as SET LOCAL): a connection setting would stay on whichever
    server connection PgBouncer happened to open, and startup parameters other than a handful
    are refused by PgBouncer. One more round trip per transaction, for all of them."""
    _TIMEOUT_PER_TRANSACTION.add(engine.sync_engine)
    local = {"statement_timeout": str(int(timeout_ms)), **SHORT_QUERY_SETTINGS}
    # The names and values are this module's constants and an int: nothing from outside.
    statement = "SELECT " + ", ".join(
        f"set_config('{name}', '{value}', true)" for name, value in local.items()
    )

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # An autocommit connection has no transaction to scope the setting to.
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            connection.exec_driver_sql(statement)


def single_statement_reader(engine: AsyncEngine) -> AsyncEngine:
    """An engine for reads (or a lone write) of one statement each, which is atomic on its own.

    Autocommit where it can be: no BEGIN and ROLLBACK round trips around the statement. Where the
    statement timeout is set per transaction (PgBouncer), a transaction: in autocommit the
    statement would run without the timeout.
    """
    if engine.sync_engine in _TIMEOUT_PER_TRANSACTION:
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def create_tool_engine(url: str) -> AsyncEngine:
    """An engine for the operators' commands (copy, verify): one connection at a time, no
    statement timeout (a table is read in one statement), and on SQLite real transactions, so
    a read transaction is one snapshot and a batch of writes commits at once.
    """
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, hide_parameters=True, poolclass=NullPool
        )
        _configure_sqlite(engine)

        # pysqlite begins a transaction only before a write, so each read would be a snapshot
        # of its own; SQLAlchemy's documented recipe: the driver in autocommit, BEGIN ourselves.
        @event.listens_for(engine.sync_engine, "connect")
        def _driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            # A table of a million rows has indexes in random key order: with SQLite's default
            # 2 MiB page cache, writing or reading them in key order misses it at every row.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA cache_size=-262144")  # KiB: 256 MiB at most, as needed
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine
    return create_async_engine(
        url,
        hide_parameters=True,
        poolclass=NullPool,
        connect_args={"server_settings": {"application_name": "junction-operations"}},
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers run beside the one writer; busy_timeout waits instead of failing.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


AfterCommit = Callable[[], Awaitable[None]]


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once the unit of work has committed (cache invalidation, notifications).

    Callbacks run before the response is sent, so a caller that got the response can rely on them.
    """
    session.info.setdefault("after_commit", []).append(callback)


async def run_after_commit(session: AsyncSession) -> None:
    """Run the committed unit's callbacks; one that fails is logged and the others still run.

    The write is durable by now: answering 500 would tell the caller it failed when it did
    not, and a retry would find "no change". Each callback owns its failure mode (a cache
    invalidation that cannot reach Redis is deferred by the cache layer, not lost); what reaches
    here is logged once, inside the request, so the line carries its request id.
    """
    callbacks: list[AfterCommit] = session.info.pop("after_commit", [])
    for callback in callbacks:
        try:
            await callback()
        except Exception:
            logger.exception(
                "an after-commit step failed (%s); the write itself is committed",
                getattr(callback, "__qualname__", type(callback).__name__),
            )


@contextlib.asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One session per request: commit on success, roll back on any error; services only flush."""
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            session.info.pop("after_commit", None)
            await session.rollback()
            raise
        await run_after_commit(session)


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """`INSERT` with `on_conflict_do_*` for whichever database the session is bound to."""
    name = session.get_bind().dialect.name
    return pg_insert(table) if name == "postgresql" else sqlite_insert(table)


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"
