"""An order-independent checksum of a table: equal for equal data on SQLite and on PostgreSQL.

Each row is hashed from its line (app/operations/values.py: the columns' canonical texts,
escaped, tab-separated): the first 64 bits of the line's MD5, as a number. The table's checksum
is the sum of its rows' numbers modulo 2**64 beside the row count, so row order does not matter
and a row present twice does not cancel out (as it would with XOR). MD5 because PostgreSQL has
it built in: there the whole checksum is one statement, computed in the database.

- PostgreSQL: `sum(first 64 bits of md5(line))` in SQL (the line built in SQL).
- SQLite: the line built in SQL, hashed in Python as the rows arrive.
- A table with a JSON column: the databases write one document differently (jsonb reorders
  keys and rewrites numbers: `1e2` as `100`), so on both databases the columns' texts are read
  and the line is built in Python, each JSON document written with sorted keys, no whitespace
  and numbers by value. Those tables are the small ones (configurations, clients).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
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


def _line_builder(table: Table) -> Any:
    """Python's line of a row of canonical texts (for the tables with JSON)."""
    kinds = [values.column_kind(column) for column in table.columns]

    def line(texts: Sequence[str | None]) -> str:
        parts = []
        for kind, text in zip(kinds, texts, strict=True):
            if text is None:
                parts.append(values.NULL)
            elif kind == "json":
                parts.append(values.escaped(json_text(text)))
            elif kind == "text":
                parts.append(values.escaped(text))
            else:
                parts.append(text)
        return "\t".join(parts)

    return line


def line_hash_total(lines: Iterable[str]) -> int:
    """The sum (not yet reduced) of the lines' 64-bit hashes."""
    md5 = hashlib.md5
    from_bytes = int.from_bytes
    return sum(from_bytes(md5(line.encode()).digest()[:8], "big") for line in lines)


@dataclass
class TableSum:
    """Row count and checksum of one table."""

    table: str
    rows: int = 0
    total: int = 0

    def add_lines(self, lines: Sequence[str]) -> None:
        self.total = (self.total + line_hash_total(lines)) & _MASK
        self.rows += len(lines)

    def add_total(self, rows: int, total: int) -> None:
        self.total = (self.total + total) & _MASK
        self.rows += rows

    @property
    def checksum(self) -> str:
        return f"{self.total:016x}"

    def matches(self, other: TableSum) -> bool:
        return self.rows == other.rows and self.total == other.total


def postgres_row_hash_sql(table: Table) -> str:
    """SQL for a row's 64-bit hash on PostgreSQL (a signed bigint: equal modulo 2**64)."""
    return f"('x' || left(md5({values.line_sql(table, 'postgresql')}), 16))::bit(64)::bigint"


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
            line = _line_builder(table)
            async for batch in databases.fetch_batches(
                conn, _texts_sql(table, dialect), (), STREAM_BATCH
            ):
                result.add_lines([line(texts) for texts in batch])
                progress.advance(len(batch))
        elif dialect == "postgresql":
            row = await databases.fetch_one(conn, _postgres_sum_sql(table))
            result.add_total(int(row[0]), int(row[1]))
            progress.advance(result.rows)
        else:
            sql = values.select_sql([values.line_sql(table, dialect)], table)
            async for batch in databases.fetch_batches(conn, sql, (), STREAM_BATCH):
                result.add_lines([line for (line,) in batch])
                progress.advance(len(batch))
    return result
