"""An order-independent checksum of a table: equal for equal data on SQLite and on PostgreSQL.

Rows are hashed from their canonical values (app/operations/values.py), normalised once more
where equal data can still look different: datetimes as microseconds since the epoch, JSON
with sorted keys and numbers by value (PostgreSQL's jsonb rewrites `1e2` as `100`), decimals
at the column's scale, booleans as 0/1. Each row hashes (BLAKE2b, 64 bits) to a number; the
table's checksum is their sum modulo 2**64 beside the row count, so row order does not matter
and a row present twice does not cancel out (as it would with XOR).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from app.operations import databases, values
from app.operations.progress import Progress

_MASK = 2**64 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _microseconds(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


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


def _json_text(value: Any) -> str:
    return json.dumps(
        _json_numbers(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


_NORMALISE: dict[values.Kind, Callable[[Any], Any] | None] = {
    "datetime": _microseconds,
    "date": None,  # a date from both (decoded from SQLite's text)
    "json": _json_text,
    "boolean": int,
    "numeric": _decimal_text,
    "plain": None,  # text and integers come alike from both drivers
}

RowHash = Callable[[Sequence[Any]], int]


def row_hasher(table: Table) -> RowHash:
    """The 64-bit hash of one row of `table` given as canonical values, in column order."""
    steps = [
        (index, normalise)
        for index, column in enumerate(table.columns)
        if (normalise := _NORMALISE[values.column_kind(column)]) is not None
    ]

    def row_hash(row: Sequence[Any]) -> int:
        normalised = list(row)
        for index, normalise in steps:
            value = normalised[index]
            if value is not None:
                normalised[index] = normalise(value)
        digest = hashlib.blake2b(repr(normalised).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    return row_hash


@dataclass
class TableSum:
    """Row count and checksum of one table."""

    table: str
    rows: int = 0
    total: int = 0

    def add(self, rows: Iterable[Sequence[Any]], row_hash: RowHash) -> None:
        total = self.total
        count = 0
        for row in rows:
            total += row_hash(row)
            count += 1
        self.total = total & _MASK
        self.rows += count

    @property
    def checksum(self) -> str:
        return f"{self.total:016x}"

    def matches(self, other: TableSum) -> bool:
        return self.rows == other.rows and self.total == other.total


STREAM_BATCH = 5000


async def sum_table(
    conn: AsyncConnection, table: Table, *, label: str, total: int | None = None
) -> TableSum:
    """Read every row of `table` on `conn` (as the driver gives them) and sum them."""
    decode = values.row_decoder(table, conn.dialect.name)
    row_hash = row_hasher(table)
    result = TableSum(table.name)
    stream = await conn.stream(databases.raw_select(table, conn.dialect))
    with Progress(label, total=total) as progress:
        async for rows in stream.partitions(STREAM_BATCH):
            result.add(values.converted(rows, decode), row_hash)
            progress.advance(len(rows))
    return result
