"""An order-independent checksum of a table: equal for equal data on SQLite and on PostgreSQL.

Each row is hashed from its bytes (app/operations/values.py: the columns' canonical texts,
NUL-separated): the first 64 bits of their MD5, as a number. The table's checksum is the sum
of its rows' numbers modulo 2**64 beside the row count, so row order does not matter and a row
present twice does not cancel out (as it would with XOR). MD5 because PostgreSQL has it built
in: there the whole checksum is one statement, computed in the database.

- PostgreSQL: `sum(first 64 bits of md5(row bytes))` in SQL.
- SQLite: the row's bytes built in SQL, hashed in Python as the rows arrive.
- A table with a JSON column: the databases write one document differently (jsonb reorders
  keys and rewrites numbers: `1e2` as `100`), so on both databases the columns' texts are read
  and the bytes built in Python, each JSON document written with sorted keys, no whitespace
  and numbers by value. Those tables are the small ones (configurations, clients).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from app.operations import databases, values
from app.operations.progress import Progress

_MASK = 2**64 - 1
STREAM_BATCH = 10_000


def _json_numbers(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        # Marked, so the number 5 and the string "5" differ (jsonb cannot store a NUL in text).
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        return "\x00" + format(number.normalize(), "f")
    if isinstance(value, dict):
        return {key: _json_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_numbers(item) for item in value]
    return value


def json_text(document: str) -> str:
    """A JSON document's canonical text: keys sorted, no whitespace, numbers by value."""
    return json.dumps(
        _json_numbers(json.loads(document)),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _row_bytes_builder(table: Table) -> Callable[[Sequence[str | None]], bytes]:
    """A row's bytes from its columns' canonical texts, JSON made canonical (tables with JSON)."""
    json_columns = [
        index for index, column in enumerate(table.columns) if values.column_kind(column) == "json"
    ]

    def row_bytes(texts: Sequence[str | None]) -> bytes:
        texts = list(texts)
        for index in json_columns:
            if (document := texts[index]) is not None:
                texts[index] = json_text(document)
        return values.row_bytes(texts)

    return row_bytes


def rows_hash_total(rows: Iterable[bytes]) -> int:
    """The sum (not yet reduced) of the rows' 64-bit hashes."""
    md5 = hashlib.md5
    from_bytes = int.from_bytes
    return sum(from_bytes(md5(row).digest()[:8], "big") for row in rows)


@dataclass
class TableSum:
    """Row count and checksum of one table."""

    table: str
    rows: int = 0
    total: int = 0

    def add_rows(self, rows: Sequence[bytes]) -> None:
        """Rows given as their bytes (values.row_bytes_sql)."""
        self.total = (self.total + rows_hash_total(rows)) & _MASK
        self.rows += len(rows)

    def add_total(self, rows: int, total: int) -> None:
        self.total = (self.total + total) & _MASK
        self.rows += rows

    @property
    def checksum(self) -> str:
        return f"{self.total:016x}"

    def matches(self, other: TableSum) -> bool:
        return self.rows == other.rows and self.total == other.total


def postgres_row_hash_sql(table: Table) -> str:
    """SQL for a row's 64-bit hash on PostgreSQL."""
    return values.postgres_hash_sql(values.row_bytes_sql(table, "postgresql"))


def _postgres_sum_sql(table: Table) -> str:
    return values.select_sql(
        ["count(*)", f"coalesce(sum({postgres_row_hash_sql(table)}), 0)"], table
    )


def _texts_sql(table: Table, dialect: values.Dialect) -> str:
    return values.select_sql(
        [values.canonical_text(column, dialect) for column in table.columns], table
    )


async def sum_table(
    conn: AsyncConnection, table: Table, *, label: str, total: int | None = None
) -> TableSum:
    """Row count and checksum of `table` as `conn` sees it (inside `databases.snapshot`)."""
    dialect = databases.dialect_of(conn)
    result = TableSum(table.name)
    with Progress(label, total=total) as progress:
        if values.has_json(table):
            row_bytes = _row_bytes_builder(table)
            async for batch in databases.fetch_batches(
                conn, _texts_sql(table, dialect), (), STREAM_BATCH
            ):
                result.add_rows([row_bytes(texts) for texts in batch])
                progress.advance(len(batch))
        elif dialect == "postgresql":
            row = await databases.fetch_one(conn, _postgres_sum_sql(table))
            result.add_total(int(row[0]), int(row[1]))
            progress.advance(result.rows)
        else:
            sql = values.select_sql([values.row_bytes_sql(table, dialect)], table)
            async for batch in databases.fetch_batches(conn, sql, (), STREAM_BATCH):
                result.add_rows([row for (row,) in batch])
                progress.advance(len(batch))
    return result
