"""Column values between the two databases, written as SQL each database evaluates itself.

At a million rows, converting values one by one in Python is most of a copy's cost, so the copy
and the checksum ask each database for the form they need, per column:

- the **canonical text** of a value, equal on SQLite and PostgreSQL for equal data: what the
  checksum hashes (app/operations/checksum.py), and, escaped and joined, the line PostgreSQL's
  `COPY ... FROM STDIN` reads (a SQLite → PostgreSQL copy sends SQLite's lines as they are);
- on a PostgreSQL source copied to SQLite, the values SQLite stores (`sqlite_ready`).

| column   | SQLite (SQLAlchemy's form)   | PostgreSQL    | canonical text                    |
|----------|------------------------------|---------------|-----------------------------------|
| text     | text                         | text          | the text                          |
| integer  | integer                      | integer       | decimal digits                    |
| boolean  | 0 / 1                        | boolean       | `0` / `1`                         |
| datetime | `YYYY-MM-DD HH:MM:SS.ffffff` | timestamptz   | `YYYY-MM-DD HH:MM:SS.ffffff`, UTC |
| date     | `YYYY-MM-DD`                 | date          | `YYYY-MM-DD`                      |
| numeric  | REAL (integer when integral) | numeric(p, s) | fixed point at the column's scale |
| JSON     | text                         | jsonb         | its text (see checksum.py)        |

A row's **bytes** are its columns' canonical texts in table order, in UTF-8, separated by a NUL
byte, a NULL written as the byte FF: neither occurs in a text (PostgreSQL's text cannot hold a
NUL, and UTF-8 never uses FF), so the bytes say exactly which values the row holds. SQLite
builds them in SQL; PostgreSQL too, as a bytea. A SQLite → PostgreSQL copy turns them into the
lines of COPY's text format with a few replacements over a whole batch (`copy_text`), so
nothing is done per row in Python.

Two SQLite functions written in Python cover what SQLite's SQL cannot do exactly:
`junction_decimal` (a REAL at the column's scale, rounded as Python and SQLAlchemy round it,
which SQLite's printf does not always match) and `junction_datetime` (a datetime stored in some
other ISO form than SQLAlchemy's, rewritten; SQLAlchemy's own form is used as it is).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import JSON, Boolean, Column, Date, DateTime, Integer, Numeric, String, Table
from sqlalchemy.types import TypeDecorator, TypeEngine

Kind = Literal["text", "integer", "boolean", "datetime", "date", "numeric", "json"]
Dialect = Literal["sqlite", "postgresql"]


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
    if isinstance(base, Date):
        return "date"
    if isinstance(base, Boolean):
        return "boolean"
    if isinstance(base, Integer):
        return "integer"
    if isinstance(base, Numeric):  # Float is a Numeric too; the schema has none
        return "numeric"
    if isinstance(base, String):  # Text, Enum and Unicode are Strings
        return "text"
    raise TypeError(f"{column.table.name}.{column.name}: no copy rule for {base!r}")


def numeric_scale(column: Column[Any]) -> int:
    scale = getattr(_base_type(column.type), "scale", None)
    return int(scale) if scale is not None else 10


def select_sql(columns: list[str], table: Table, tail: str = "") -> str:
    """`SELECT columns FROM table tail`. The copy's SQL is built from the schema's own names
    (quoted) and the expressions of this module, never from input."""
    return f"SELECT {', '.join(columns)} FROM {quoted(table.name)}{tail}"  # noqa: S608


def has_json(table: Table) -> bool:
    return any(column_kind(column) == "json" for column in table.columns)


def quoted(name: str) -> str:
    """An identifier quoted the same way for both databases."""
    return '"' + name.replace('"', '""') + '"'


# --- SQLite's functions -------------------------------------------------------------------


def sqlite_decimal(value: Any, scale: int) -> str | None:
    """`junction_decimal(value, scale)`: a stored number at the scale, as SQLAlchemy reads it
    back (`f"{value:.{scale}f}"`), so the text PostgreSQL's numeric(p, s) holds for it."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        value = Decimal(value.decode() if isinstance(value, bytes) else value)
    text = f"{value:.{scale}f}"
    # PostgreSQL has no negative zero: -0.0 and what rounds to zero are 0 there.
    if text.startswith("-") and not text.strip("-0."):
        text = text[1:]
    return text


def sqlite_datetime(value: Any) -> str | None:
    """`junction_datetime(value)`: a datetime text in SQLAlchemy's form. An offset is dropped,
    as the service reads it (SQLite datetimes are UTC)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value)).replace(tzinfo=None)
    return parsed.isoformat(" ", "microseconds")


SQLITE_FUNCTIONS = (
    ("junction_decimal", 2, sqlite_decimal),
    ("junction_datetime", 1, sqlite_datetime),
)

# SQLAlchemy's SQLite datetime: "YYYY-MM-DD HH:MM:SS.ffffff", 26 characters.
_SQLITE_DATETIME_LENGTH = 26


# --- canonical text, per column -----------------------------------------------------------


def canonical_text(column: Column[Any], dialect: Dialect) -> str:
    """SQL for the column's canonical text (NULL stays NULL; not escaped)."""
    name = quoted(column.name)
    kind = column_kind(column)
    if dialect == "sqlite":
        if kind == "datetime":
            return (
                f"CASE WHEN length({name}) = {_SQLITE_DATETIME_LENGTH} AND substr({name}, 11, 1)"
                f" = ' ' THEN {name} ELSE junction_datetime({name}) END"
            )
        if kind == "numeric":
            return f"junction_decimal({name}, {numeric_scale(column)})"
        return f"CAST({name} AS TEXT)"
    if kind == "datetime":
        aware = getattr(_base_type(column.type), "timezone", False)
        utc = f"{name} AT TIME ZONE 'UTC'" if aware else name
        return f"to_char({utc}, 'YYYY-MM-DD HH24:MI:SS.US')"
    if kind == "date":  # whatever the server's DateStyle
        return f"to_char({name}, 'YYYY-MM-DD')"
    if kind == "numeric":
        return f"round({name}, {numeric_scale(column)})::text"
    if kind == "boolean":
        return f"{name}::int::text"
    return f"{name}::text"


def row_bytes_sql(table: Table, dialect: Dialect) -> str:
    """SQL for a row's bytes (a BLOB on SQLite, a bytea on PostgreSQL). JSON columns are their
    stored text, which is what COPY reads; a table with JSON is hashed from its texts in
    Python (checksum.py), since the databases write the same document differently."""
    return bytes_sql([canonical_text(column, dialect) for column in table.columns], dialect)


def bytes_sql(texts: list[str], dialect: Dialect) -> str:
    """SQL for the bytes of a row whose canonical texts are the expressions `texts`."""
    if dialect == "sqlite":
        # `||` joins blobs as bytes; the CAST keeps the result bytes, not text.
        joined = " || x'00' || ".join(f"coalesce({text}, x'ff')" for text in texts)
        return f"CAST({joined} AS BLOB)"
    parts = [f"coalesce(convert_to({text}, 'UTF8'), '\\xff'::bytea)" for text in texts]
    return " || '\\x00'::bytea || ".join(parts)


def postgres_hash_sql(row_bytes: str) -> str:
    """SQL for the 64-bit hash of a row's bytes on PostgreSQL: the first 64 bits of their MD5,
    as a signed bigint (equal to Python's unsigned number modulo 2**64)."""
    return f"('x' || left(md5({row_bytes}), 16))::bit(64)::bigint"


def row_bytes(texts: Sequence[str | None]) -> bytes:
    """What `row_bytes_sql` gives, from the columns' canonical texts."""
    return NUL.join(NULL_BYTE if text is None else text.encode() for text in texts)


NUL, NULL_BYTE, _ROW = b"\x00", b"\xff", b"\xfe"  # FE: no more in UTF-8 than FF

# COPY's text format: a backslash, tab, newline and carriage return in a value are escaped,
# fields are separated by a tab, a NULL is \N, rows end with a newline.
_COPY_TEXT = (
    (b"\\", b"\\\\"),
    (b"\t", b"\\t"),
    (b"\n", b"\\n"),
    (b"\r", b"\\r"),
    (NUL, b"\t"),
    (NULL_BYTE, b"\\N"),
    (_ROW, b"\n"),
)


def copy_text(rows: Sequence[bytes]) -> bytes:
    """Rows' bytes as the lines of `COPY ... FROM STDIN` (text format): the escapes and the
    separators are replaced over the whole batch at once."""
    data = _ROW.join(rows) + _ROW
    for old, new in _COPY_TEXT:
        data = data.replace(old, new)
    return data


# --- what a SQLite target stores, read from PostgreSQL -----------------------------------


def sqlite_ready(column: Column[Any]) -> str:
    """SQL on a PostgreSQL source for the value a SQLite target stores: SQLAlchemy's forms,
    so nothing is converted in Python on the way (a numeric as float8: PostgreSQL rounds it
    to the nearest double, as Python's float() of the Decimal does)."""
    name = quoted(column.name)
    kind = column_kind(column)
    if kind in ("datetime", "date", "json"):
        return canonical_text(column, "postgresql")
    if kind == "boolean":
        return f"{name}::int"
    if kind == "numeric":
        return f"{name}::float8"
    return name
