"""`junction copy-db`: copy every table from one database to another, then verify the copy.

How it goes (docs/operations.md has the runbooks):
- the source must be at the latest migration; the target is brought there first;
- the whole source is read in one snapshot (`databases.snapshot`), table by table, parents
  before children, each table in primary-key order, and written in batches: through COPY on
  PostgreSQL, an INSERT of many rows on SQLite; each batch commits on its own;
- values are written as they were read: encrypted columns are copied as they are, and since
  their associated data is (table, column, tenant, row id), which the copy keeps, they decrypt;
- `--resume` continues an interrupted copy. Batches commit in key order, so what a killed run
  left in a table is exactly the source's rows up to the largest key the target holds: the
  run skips those and writes the rest. Nothing is written twice, nothing is missed;
- a PostgreSQL target's sequences are set past the largest copied id;
- every source row is hashed as it is read (the source side of the checksum, in the same
  snapshot), the target is then read back and hashed, and any table that differs is named.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from sqlalchemy import Table, desc, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core import migrations
from app.operations import databases, values
from app.operations.checksum import TableSum, row_hasher, sum_table
from app.operations.databases import Database, Refused
from app.operations.progress import Progress
from app.operations.verify_db import print_comparison

DEFAULT_BATCH_SIZE = 10_000

Key = tuple[Any, ...]


@dataclass
class TableReport:
    table: str
    source: TableSum
    target: TableSum | None = None
    written: int = 0
    kept: int = 0  # rows a previous (interrupted) run had already written

    @property
    def matches(self) -> bool:
        return self.target is not None and self.source.matches(self.target)


@dataclass
class CopyReport:
    source: str
    target: str
    tables: list[TableReport] = field(default_factory=list)
    copy_s: float = 0.0  # reading the source and writing the target
    verify_s: float = 0.0  # reading the target back

    @property
    def rows(self) -> int:
        return sum(table.source.rows for table in self.tables)

    @property
    def differences(self) -> list[TableReport]:
        return [table for table in self.tables if not table.matches]


class _Writer:
    """Writes batches of canonical rows into the target, each batch committed on its own."""

    def __init__(self, conn: AsyncConnection, dialect: str) -> None:
        self._conn = conn
        self._dialect = dialect
        self._encoders: dict[str, values.RowConvert | None] = {}

    def _encoded(self, table: Table, rows: Sequence[values.Row]) -> Sequence[values.Row]:
        if table.name not in self._encoders:
            self._encoders[table.name] = values.row_encoder(table, self._dialect)
        return values.converted(rows, self._encoders[table.name])

    async def write(self, table: Table, rows: Sequence[values.Row]) -> None:
        raise NotImplementedError


class _PostgresWriter(_Writer):
    """COPY through asyncpg: one COPY is one statement, so one transaction."""

    async def write(self, table: Table, rows: Sequence[values.Row]) -> None:
        driver = (await self._conn.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.copy_records_to_table(
            table.name,
            records=self._encoded(table, rows),
            columns=[column.name for column in table.columns],
        )


class _SqliteWriter(_Writer):
    """One executemany INSERT per batch, in a transaction of its own."""

    async def write(self, table: Table, rows: Sequence[values.Row]) -> None:
        statement = str(table.insert().compile(dialect=self._conn.dialect))
        async with self._conn.begin():
            encoded = [tuple(row) for row in self._encoded(table, rows)]
            await self._conn.exec_driver_sql(statement, encoded)


async def _largest_key(conn: AsyncConnection, table: Table, dialect: str) -> Key | None:
    """The largest primary key the target holds in `table`, in the copy's order."""
    ordering = [desc(column) for column in databases.key_ordering(table, dialect)]
    query = select(*databases.key_columns(table)).order_by(*ordering).limit(1)
    row = (await conn.execute(query)).first()
    await conn.commit()
    return tuple(row) if row is not None else None


def _key_reader(table: Table) -> Callable[[Sequence[Any]], Key]:
    positions = [list(table.columns).index(column) for column in databases.key_columns(table)]
    return lambda row: tuple(row[i] for i in positions)


async def _copy_table(
    source: AsyncConnection,
    writer: _Writer,
    table: Table,
    *,
    resume_after: Key | None,
    batch_size: int,
) -> TableReport:
    total = await databases.count_rows(source, table)
    report = TableReport(table.name, TableSum(table.name))
    decode = values.row_decoder(table, source.dialect.name)
    row_hash = row_hasher(table)
    key_of = _key_reader(table)
    stream = await source.stream(databases.raw_select(table, source.dialect, in_key_order=True))
    with Progress(f"copy {table.name}", total=total) as progress:
        async for batch in stream.partitions(batch_size):
            rows = values.converted(batch, decode)
            report.source.add(rows, row_hash)
            fresh = rows
            if resume_after is not None:
                fresh = [row for row in rows if key_of(row) > resume_after]
                report.kept += len(rows) - len(fresh)
            if fresh:
                await writer.write(table, fresh)
                report.written += len(fresh)
            progress.advance(len(rows))
    return report


async def _advance_sequences(conn: AsyncConnection, tables: list[Table]) -> None:
    """Set each PostgreSQL sequence behind an id column past the largest id copied."""
    for table in tables:
        column = table.autoincrement_column
        if column is None:
            continue
        sequence = (
            await conn.execute(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": table.name, "column": column.name},
            )
        ).scalar()
        if sequence is None:
            continue
        largest = (await conn.execute(select(func.max(column)))).scalar()
        # is_called=false: the next nextval() returns exactly this value.
        await conn.execute(
            text("SELECT setval(CAST(:sequence AS regclass), :next, false)"),
            {"sequence": sequence, "next": int(largest or 0) + 1},
        )
    await conn.commit()


async def _prepare_target(target: Database, *, resume: bool) -> None:
    if not target.is_missing_file:
        await _refuse_unusable_target(target, resume=resume)
    # The migration runs an event loop of its own, so in a thread of its own.
    await asyncio.to_thread(migrations.upgrade, target.url)


async def _refuse_unusable_target(target: Database, *, resume: bool) -> None:
    holding = await databases.nonempty_tables(target)
    if holding and not resume:
        raise Refused(
            f"the target {target.display} is not empty ({', '.join(holding)} hold rows): copy "
            "into an empty database, or pass --resume to continue an interrupted copy into it"
        )
    revision = await databases.schema_revision(target)
    if revision is not None and not migrations.is_known_revision(revision):
        raise Refused(
            f"the target {target.display} is at schema {revision}, which this junction does "
            "not know (a newer release wrote it)"
        )


async def copy_database(
    source_url: str, target_url: str, *, resume: bool = False, batch_size: int = DEFAULT_BATCH_SIZE
) -> CopyReport:
    """Copy and verify; raises `Refused` (nothing written) for what the command will not do."""
    if batch_size < 1:
        raise Refused("--batch-size must be at least 1")
    source = databases.open_database(source_url, must_exist=True)
    target = databases.open_database(target_url, must_exist=False)
    try:
        if source.url == target.url:
            raise Refused("the source and the target are the same database")
        await databases.require_head(source, "source")
        await _prepare_target(target, resume=resume)
        return await _copy(source, target, resume=resume, batch_size=batch_size)
    finally:
        await source.dispose()
        await target.dispose()


async def _copy(source: Database, target: Database, *, resume: bool, batch_size: int) -> CopyReport:
    report = CopyReport(source.display, target.display)
    tables = databases.copied_tables()
    started = time.perf_counter()
    async with target.engine.connect() as target_conn:
        writer: _Writer = (
            _PostgresWriter(target_conn, target.dialect)
            if target.dialect == "postgresql"
            else _SqliteWriter(target_conn, target.dialect)
        )
        async with databases.snapshot(source) as source_conn:
            for table in tables:
                resume_after = (
                    await _largest_key(target_conn, table, target.dialect) if resume else None
                )
                report.tables.append(
                    await _copy_table(
                        source_conn,
                        writer,
                        table,
                        resume_after=resume_after,
                        batch_size=batch_size,
                    )
                )
        if target.dialect == "postgresql":
            await _advance_sequences(target_conn, tables)
    report.copy_s = time.perf_counter() - started
    started = time.perf_counter()
    async with databases.snapshot(target) as target_conn:
        for table, table_report in zip(tables, report.tables, strict=True):
            table_report.target = await sum_table(
                target_conn, table, label=f"verify {table.name}", total=table_report.source.rows
            )
    report.verify_s = time.perf_counter() - started
    return report


def run_command(
    source_url: str, target_url: str, *, resume: bool, batch_size: int, out: TextIO
) -> int:
    """The command: exit 0 when copied and verified, 1 when a table differs, 2 when refused."""
    try:
        report = asyncio.run(
            copy_database(source_url, target_url, resume=resume, batch_size=batch_size)
        )
    except Refused as exc:
        print(f"junction copy-db: refused: {exc}", file=sys.stderr)
        return databases.EXIT_REFUSED
    except (DBAPIError, OSError) as exc:
        print(
            f"junction copy-db: failed part-way ({databases.describe_failure(exc)}); what was "
            "committed stays: run the same command again with --resume",
            file=sys.stderr,
        )
        return databases.EXIT_FAILED
    written = sum(table.written for table in report.tables)
    kept = sum(table.kept for table in report.tables)
    print(f"copied {report.source} -> {report.target}: {written} rows written", file=out, end="")
    print(f" ({kept} already there from an interrupted run)" if kept else "", file=out, end="")
    print(f" in {report.copy_s:.1f} s, verified in {report.verify_s:.1f} s", file=out)
    different = print_comparison(
        [(t.table, t.source, t.target) for t in report.tables], out, names=("source", "target")
    )
    if different:
        print(f"junction copy-db: the copy differs in: {', '.join(different)}", file=sys.stderr)
        return databases.EXIT_DIFFERENT
    print(f"verified: {len(report.tables)} tables identical", file=out)
    return databases.EXIT_OK
