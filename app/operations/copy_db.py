"""`junction copy-db`: copy every table from one database to another, then verify the copy.

How it goes (docs/operations.md has the runbooks):
- the source must be at the latest migration; the target is brought there first;
- the whole source is read in one snapshot (`databases.snapshot`), table by table, parents
  before children, each table in primary-key order, and written in batches: through COPY on
  PostgreSQL, an INSERT of many rows on SQLite; each batch commits on its own;
- the source's query gives each row in the form the target's writer takes (values.py: the
  databases convert, in SQL, not Python value by value): from SQLite, each row's bytes, which
  become COPY's text lines; from PostgreSQL to SQLite, SQLAlchemy's SQLite forms;
- encrypted columns are copied as they are, and since their associated data is (table,
  column, tenant, row id), which the copy keeps, they decrypt;
- `--resume` continues an interrupted copy. Batches commit in key order, so what a killed run
  left in a table is exactly the source's rows up to the largest key the target holds: the
  run reads the rows after it (a WHERE on the key) and writes them. Nothing is written
  twice, nothing is missed;
- a PostgreSQL target's sequences are set past the largest copied id;
- every source row is hashed as it is read (the source side of the checksum, in the same
  snapshot: by PostgreSQL beside the row's values, or in Python from SQLite's row bytes),
  the target is then read back and summed, and any table that differs is named.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from sqlalchemy import String, Table, desc, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core import migrations
from app.operations import copy_writers, databases, values
from app.operations.checksum import TableSum, sum_table
from app.operations.databases import Database, Refused
from app.operations.engine import run_to_end
from app.operations.progress import Progress
from app.operations.verify_db import print_comparison

DEFAULT_BATCH_SIZE = 100_000

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


@dataclass(frozen=True)
class _Plan:
    """How one table is read from the source for the target's writer."""

    columns: list[str]  # SQL, per selected column
    # The source's checksum computed from the rows as they are copied (no second pass):
    # "bytes" when the rows are the bytes the checksum hashes, "leading" when the first
    # column is each row's hash (computed by PostgreSQL); None: summed on its own.
    inline: Literal["bytes", "leading"] | None
    # When set, `columns` are read in key order in a subquery (as c0, c1, ...) and these
    # expressions of them are what the query gives: what two outputs share is computed once.
    outer: list[str] | None = None


def _plan(table: Table, source: values.Dialect, target: values.Dialect, *, resuming: bool) -> _Plan:
    # A resumed copy skips rows, which the checksum still counts; JSON is hashed in Python.
    inline_ok = not resuming and not values.has_json(table)
    if source == "sqlite" and target == "postgresql":
        # Each row's bytes, built by SQLite: COPY's lines once a batch goes through
        # values.copy_text, and for a table without JSON what the checksum hashes.
        return _Plan([values.row_bytes_sql(table, "sqlite")], "bytes" if inline_ok else None)
    if source == "postgresql" and target == "sqlite":
        if inline_ok:
            return _hashed_for_sqlite(table)
        return _Plan([values.sqlite_ready(column) for column in table.columns], None)
    # The same kind of database: the values as stored (JSON as its text, which asyncpg's
    # codec, as SQLAlchemy sets it, writes but does not read back).
    return _Plan(
        [
            f"{values.quoted(column.name)}::text"
            if source == "postgresql" and values.column_kind(column) == "json"
            else values.quoted(column.name)
            for column in table.columns
        ],
        None,
    )


def _hashed_for_sqlite(table: Table) -> _Plan:
    """A PostgreSQL source for a SQLite target: each row's hash, then the values SQLite stores.
    A datetime's canonical text (an expensive to_char) is also the value SQLite stores, so the
    subquery computes it once for both."""
    inner, texts, ready = [], [], []
    for n, column in enumerate(table.columns):
        name, kind, alias = values.quoted(column.name), values.column_kind(column), f"c{n}"
        if kind in ("datetime", "date", "json", "text"):
            inner.append(values.canonical_text(column, "postgresql"))
            texts.append(alias)
            ready.append(alias)
        elif kind == "numeric":
            inner.append(name)
            texts.append(f"round({alias}, {values.numeric_scale(column)})::text")
            ready.append(f"{alias}::float8")
        else:  # integers, and booleans as 0 / 1
            inner.append(f"{name}::int" if kind == "boolean" else name)
            texts.append(f"{alias}::text")
            ready.append(alias)
    hashed = values.postgres_hash_sql(values.bytes_sql(texts, "postgresql"))
    return _Plan(inner, "leading", outer=[hashed, *ready])


def _source_query(
    table: Table, source: values.Dialect, plan: _Plan, *, after: Key | None, bytewise: bool
) -> str:
    """The source's rows in primary-key order (bytewise on both databases), those after
    `after` only when resuming. `bytewise`: the source's own text order is bytewise, so the
    rows come in the order of the key's index; otherwise PostgreSQL sorts them (COLLATE "C")."""
    collate = ' COLLATE "C"' if source == "postgresql" and not bytewise else ""
    keys = [
        values.quoted(column.name) + collate
        if isinstance(column.type, String)
        else values.quoted(column.name)
        for column in databases.key_columns(table)
    ]
    where = ""
    if after is not None:
        marks = [f"${n}" if source == "postgresql" else "?" for n in range(1, len(keys) + 1)]
        where = f" WHERE ({', '.join(keys)}) > ({', '.join(marks)})"
    if plan.outer is None:
        return values.select_sql(plan.columns, table, f"{where} ORDER BY {', '.join(keys)}")
    columns = [f"{sql} AS c{n}" for n, sql in enumerate(plan.columns)]
    key_aliases = [f"k{n}" for n in range(len(keys))]
    columns += [f"{key} AS {alias}" for key, alias in zip(keys, key_aliases, strict=True)]
    # OFFSET 0: the subquery is not merged into the outer query (which would compute the
    # shared expressions twice); its order is the outer ORDER BY's, so nothing is sorted twice.
    inner = values.select_sql(columns, table, f"{where} ORDER BY {', '.join(keys)} OFFSET 0")
    return (
        f"SELECT {', '.join(plan.outer)} FROM ({inner}) AS rows ORDER BY {', '.join(key_aliases)}"  # noqa: S608
    )


async def _largest_key(conn: AsyncConnection, table: Table, dialect: str) -> Key | None:
    """The largest primary key the target holds in `table`, in the copy's order."""
    ordering = [desc(column) for column in databases.key_ordering(table, dialect)]
    query = select(*databases.key_columns(table)).order_by(*ordering).limit(1)
    row = (await conn.execute(query)).first()
    await conn.commit()
    return tuple(row) if row is not None else None


async def _copy_table(
    source: AsyncConnection,
    writer: copy_writers.Writer,
    target_dialect: values.Dialect,
    table: Table,
    *,
    resume_after: Key | None,
    batch_size: int,
) -> TableReport:
    """The rows of `table`, written batch by batch (the next batch is read while the current
    one is written), and the source's checksum of them, in the snapshot."""
    source_dialect = databases.dialect_of(source)
    plan = _plan(table, source_dialect, target_dialect, resuming=resume_after is not None)
    if plan.inline is None:
        source_sum = await sum_table(source, table, label=f"checksum {table.name}")
        total = source_sum.rows
    else:
        source_sum = TableSum(table.name)
        total = await databases.count_rows(source, table)
    report = TableReport(table.name, source_sum)
    bytewise = await databases.orders_text_bytewise(source)
    query = _source_query(table, source_dialect, plan, after=resume_after, bytewise=bytewise)
    batches = databases.fetch_batches(source, query, resume_after or (), batch_size)
    await writer.start_table(table)
    with Progress(f"copy {table.name}", total=total) as progress:
        reading = asyncio.ensure_future(anext(batches, None))
        try:
            while (batch := await reading) is not None:
                reading = asyncio.ensure_future(anext(batches, None))
                if plan.inline == "bytes":
                    source_sum.add_rows([row for (row,) in batch])
                elif plan.inline == "leading":
                    source_sum.add_total(len(batch), sum(row[0] for row in batch))
                await writer.write(table, batch, leading_hash=plan.inline == "leading")
                report.written += len(batch)
                progress.advance(len(batch))
            await writer.end_table(table)
        finally:
            reading.cancel()
            await asyncio.wait([reading])
            if not reading.cancelled():
                reading.exception()  # seen: the error that stopped the copy is the one raised
            await batches.aclose()
    report.kept = source_sum.rows - report.written
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
        target_dialect = databases.dialect_of(target_conn)
        writer: copy_writers.Writer = (
            copy_writers.PostgresWriter(target_conn, row_bytes=source.dialect == "sqlite")
            if target_dialect == "postgresql"
            else copy_writers.SqliteWriter(target_conn)
        )
        await writer.prepare()
        async with databases.snapshot(source) as source_conn:
            for table in tables:
                resume_after = (
                    await _largest_key(target_conn, table, target.dialect) if resume else None
                )
                report.tables.append(
                    await _copy_table(
                        source_conn,
                        writer,
                        target_dialect,
                        table,
                        resume_after=resume_after,
                        batch_size=batch_size,
                    )
                )
        if target.dialect == "postgresql":
            await _advance_sequences(target_conn, tables)
        await writer.finish()
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
        report = run_to_end(
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
