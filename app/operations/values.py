"""Column values as each database's driver gives and takes them, and one form between the two.

The copy and the checksum read rows as the drivers return them (no SQLAlchemy type processing:
at a million rows it is most of the cost) and bring each column to one canonical Python value:
an aware UTC datetime, a date, a parsed JSON document, a bool, a Decimal at the column's scale,
or the str/int both drivers already agree on. From there a value is written to either database, and
hashed (app/operations/checksum.py). What differs between the drivers:

| column   | SQLite (as SQLAlchemy stores it)        | PostgreSQL (asyncpg)             |
|----------|-----------------------------------------|----------------------------------|
| datetime | text `YYYY-MM-DD HH:MM:SS.ffffff`, UTC  | aware datetime                   |
| date     | text `YYYY-MM-DD`                       | date                             |
| JSON     | text                                    | parsed out, text in (SQLAlchemy) |
| boolean  | 0 / 1                                   | bool                             |
| numeric  | REAL (an int when integral)             | Decimal                          |
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import JSON, Boolean, Column, Date, DateTime, Numeric, Table
from sqlalchemy.types import TypeDecorator, TypeEngine

Kind = Literal["datetime", "date", "json", "boolean", "numeric", "plain"]
Convert = Callable[[Any], Any]


def _base_type(column_type: TypeEngine[Any]) -> TypeEngine[Any]:
    if isinstance(column_type, TypeDecorator):
        return _base_type(column_type.impl_instance)
    return column_type


def column_kind(column: Column[Any]) -> Kind:
    base = _base_type(column.type)
    if isinstance(base, JSON):
        return "json"
    if isinstance(base, DateTime):
        return "datetime"
    if isinstance(base, Date):  # the usage rollups' day
        return "date"
    if isinstance(base, Boolean):
        return "boolean"
    if isinstance(base, Numeric):  # Float is a Numeric too; the schema has none
        return "numeric"
    return "plain"


def numeric_scale(column: Column[Any]) -> int:
    base = _base_type(column.type)
    scale = getattr(base, "scale", None)
    return int(scale) if scale is not None else 10


def _decimal_at(scale: int) -> Convert:
    exponent = Decimal(1).scaleb(-scale)

    def to_decimal(value: Any) -> Decimal:
        if isinstance(value, Decimal):
            return value.quantize(exponent)
        # What SQLAlchemy does reading SQLite's REAL: the float at the column's scale.
        return Decimal(f"{value:.{scale}f}")

    return to_decimal


def _sqlite_datetime(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _sqlite_datetime_text(value: datetime) -> str:
    if value.tzinfo is not UTC:  # canonical values are UTC already (asyncpg's are)
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _parsed_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _json_text(value: Any) -> str:
    return json.dumps(value)


def _float(value: Decimal) -> float:
    return float(value)


def _decoder(column: Column[Any], dialect: str) -> Convert | None:
    """Driver value -> canonical value (None: the driver's value is canonical already)."""
    kind = column_kind(column)
    if dialect == "sqlite":
        by_kind: dict[Kind, Convert] = {
            "datetime": _sqlite_datetime,
            "date": date.fromisoformat,
            "json": _parsed_json,
            "boolean": bool,
            "numeric": _decimal_at(numeric_scale(column)),
        }
        return by_kind.get(kind)
    # asyncpg's values are canonical already: timestamptz comes as an aware UTC datetime, a
    # NUMERIC(p, s) as a Decimal at scale s, JSON parsed (SQLAlchemy's codec). At a million
    # rows, converting nothing is what makes reading PostgreSQL cheap.
    return None


def _encoder(column: Column[Any], dialect: str) -> Convert | None:
    """Canonical value -> what the driver takes (None: as it is)."""
    kind = column_kind(column)
    if kind == "json":
        return _json_text
    if dialect == "sqlite":
        by_kind: dict[Kind, Convert] = {
            "datetime": _sqlite_datetime_text,
            "date": date.isoformat,
            "numeric": _float,
            "boolean": int,
        }
        return by_kind.get(kind)
    return None


Row = Sequence[Any]
RowConvert = Callable[[Row], Sequence[Any]]


def _row_converter(converters: list[Convert | None]) -> RowConvert | None:
    steps = [(index, convert) for index, convert in enumerate(converters) if convert is not None]
    if not steps:
        return None

    def convert_row(row: Row) -> list[Any]:
        values = list(row)
        for index, convert in steps:
            value = values[index]
            if value is not None:
                values[index] = convert(value)
        return values

    return convert_row


def row_decoder(table: Table, dialect: str) -> RowConvert | None:
    """A function from a driver row of `table` (its columns in order) to canonical values."""
    return _row_converter([_decoder(column, dialect) for column in table.columns])


def row_encoder(table: Table, dialect: str) -> RowConvert | None:
    return _row_converter([_encoder(column, dialect) for column in table.columns])


def converted(rows: Sequence[Row], convert: RowConvert | None) -> Sequence[Row]:
    """`rows` through a row decoder or encoder (None: as they are)."""
    return rows if convert is None else [convert(row) for row in rows]
