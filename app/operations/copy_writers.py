"""How `junction copy-db` writes batches into its target, one writer per kind of database:
COPY into PostgreSQL, an executemany INSERT into SQLite, each batch committed on its own, and
what each target needs before, between and after the tables (app/operations/copy_db.py reads
the source and drives them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, DropIndex

from app.operations import databases, values

Batch = Sequence[Sequence[Any]]


class Writer:
    """Writes batches into the target, each batch committed on its own."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def prepare(self) -> None:
        """Once, before the first batch."""

    async def finish(self) -> None:
        """Once, after the last table."""

    async def start_table(self, table: Table) -> None:
        """Before the table's first batch."""

    async def end_table(self, table: Table) -> None:
        """After its last batch (a resumed copy goes through every table again)."""

    async def write(self, table: Table, rows: Batch, *, leading_hash: bool = False) -> None:
        """`leading_hash`: each row's first value is its hash, not a column (not written)."""
        raise NotImplementedError


class PostgresWriter(Writer):
    """COPY through asyncpg, outside any transaction: one COPY is one statement, so one
    transaction. Rows' bytes (from SQLite) go in COPY's text format, which PostgreSQL parses; rows
    from another PostgreSQL database go as asyncpg records in the binary format."""

    def __init__(self, conn: AsyncConnection, *, row_bytes: bool) -> None:
        super().__init__(conn)
        self._row_bytes = row_bytes

    async def prepare(self) -> None:
        # The datetimes of rows from SQLite carry no offset: they are UTC.
        await (await databases.driver_of(self._conn)).execute("SET TIME ZONE 'UTC'")

    async def end_table(self, table: Table) -> None:
        # The planner's statistics of the copied rows, as autovacuum would gather them later:
        # without them the new database's first queries are planned for an empty table.
        await (await databases.driver_of(self._conn)).execute(
            f"ANALYZE {values.quoted(table.name)}"
        )

    async def write(self, table: Table, rows: Batch, *, leading_hash: bool = False) -> None:
        assert not leading_hash  # only PostgreSQL sources hash in their query
        driver = await databases.driver_of(self._conn)
        columns = [column.name for column in table.columns]
        if self._row_bytes:
            data = values.copy_text([row for (row,) in rows])
            # A memoryview: asyncpg would take bytes for a file name.
            await driver.copy_to_table(
                table.name, source=memoryview(data), columns=columns, format="text"
            )
        else:
            await driver.copy_records_to_table(table.name, records=rows, columns=columns)


class SqliteWriter(Writer):
    """One executemany INSERT per batch, in a transaction of its own."""

    async def prepare(self) -> None:
        # Each batch is committed without waiting for the disk (~15% of the copy's time): a
        # killed copy loses nothing (what was committed is with the operating system) and
        # resumes; only a crash of the machine itself could lose the file, and then the copy
        # is made again into a new one (docs/operations.md).
        await (await databases.driver_of(self._conn)).execute("PRAGMA synchronous=OFF")

    async def finish(self) -> None:
        # Made durable before it is verified: a copy reported as verified is on the disk.
        driver = await databases.driver_of(self._conn)
        await driver.execute("PRAGMA synchronous=FULL")
        await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def start_table(self, table: Table) -> None:
        # The table's plain indexes are dropped and built once over the copied rows: ~15% less
        # time writing than keeping them up to date row by row. The indexes behind its primary
        # key and unique constraints stay, so a duplicate is still refused.
        for index in table.indexes:
            await self._conn.execute(DropIndex(index, if_exists=True))
        await self._conn.commit()

    async def end_table(self, table: Table) -> None:
        # Built again from the schema (which the migrations match: tests/core/test_migrations.py);
        # after a kill in between, by the resumed copy.
        for index in table.indexes:
            await self._conn.execute(CreateIndex(index, if_not_exists=True))
        await self._conn.commit()

    async def write(self, table: Table, rows: Batch, *, leading_hash: bool = False) -> None:
        names = ", ".join(values.quoted(column.name) for column in table.columns)
        # Numbered parameters: with a leading hash, ?1 is bound but not used.
        first = 2 if leading_hash else 1
        marks = ", ".join(f"?{first + n}" for n in range(len(table.columns)))
        statement = f"INSERT INTO {values.quoted(table.name)} ({names}) VALUES ({marks})"  # noqa: S608
        async with self._conn.begin():
            await (await databases.driver_of(self._conn)).executemany(statement, rows)
