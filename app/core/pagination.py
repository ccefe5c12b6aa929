"""Keyset pagination cursors: one opaque encoding (unpadded base64url) and one error for all.

A cursor is handed to callers and comes back in a later request, so each kind's wire format is
fixed once issued: change it only with a new prefix or key, and keep decoding the old one.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Self

from fastapi import Query
from pydantic import Field

from app.core.errors import BadRequest

# Every listing's page: the same bounds, parameters and wording, so clients page them alike.
MAX_PAGE_SIZE = 200
PageLimit = Annotated[
    int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"items per page, 1 to {MAX_PAGE_SIZE}")
]
PageCursor = Annotated[
    str | None,
    Query(
        max_length=1024,
        description="the `next_cursor` of the previous page; omitted: the first page",
    ),
]
NextCursor = Annotated[
    str | None,
    Field(description="pass it as `cursor` to read the next page; null on the last page"),
]


class InvalidCursor(BadRequest):
    code = "invalid_cursor"


def _pack(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unpack(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


# What a malformed cursor raises on its way through base64, UTF-8, JSON and the field checks
# (OverflowError: a time that leaves the calendar once moved to UTC, 0001-01-01T00:00:00+01:00).
_MALFORMED = (ValueError, binascii.Error, UnicodeDecodeError, KeyError, TypeError, OverflowError)


class _Cursor:
    # The 400's detail, each listing's own wording (callers may match on it).
    invalid_detail: ClassVar[str]

    @classmethod
    def _parse(cls, raw: bytes) -> Self:
        raise NotImplementedError

    @classmethod
    def decode(cls, cursor: str) -> Self:
        """The position a cursor names; `InvalidCursor` for anything this service did not make."""
        try:
            return cls._parse(_unpack(cursor))
        except _MALFORMED as exc:
            raise InvalidCursor(cls.invalid_detail) from exc


# Row ids are 64-bit; a cursor outside that range was not made here.
_MAX_ROW_ID = 2**63 - 1


@dataclass(frozen=True)
class RowIdCursor(_Cursor):
    """Continue below a row id: `v1:<id>`."""

    invalid_detail: ClassVar[str] = "cursor: not a cursor this service returned"
    row_id: int

    def encode(self) -> str:
        return _pack(f"v1:{self.row_id}".encode())

    @classmethod
    def _parse(cls, raw: bytes) -> Self:
        prefix, _, value = raw.decode().partition(":")
        if prefix != "v1":
            raise ValueError(prefix)
        row_id = int(value)
        if not 0 < row_id <= _MAX_ROW_ID:
            raise ValueError(value)
        return cls(row_id)


@dataclass(frozen=True)
class TimeIdCursor(_Cursor):
    """Continue below (a UTC moment, an id): `{"t": <ISO 8601>, "i": <id>}`."""

    invalid_detail: ClassVar[str] = "cursor: not a cursor returned by this listing"
    at: datetime
    id: str

    def encode(self) -> str:
        return _pack(json.dumps({"t": self.at.isoformat(), "i": self.id}).encode())

    @classmethod
    def _parse(cls, raw: bytes) -> Self:
        data: Any = json.loads(raw)
        at = datetime.fromisoformat(data["t"])
        row_id = data["i"]
        if at.tzinfo is None or not isinstance(row_id, str):
            raise ValueError("incomplete cursor")
        # The id goes into a query: text the database cannot hold (a NUL, a lone surrogate,
        # which JSON's \ud800 escape can carry) was never issued here.
        if "\x00" in row_id:
            raise ValueError("NUL in cursor id")
        row_id.encode("utf-8")  # UnicodeEncodeError, a ValueError, for a lone surrogate
        return cls(at.astimezone(UTC), row_id)


@dataclass(frozen=True)
class KeyCursor(_Cursor):
    """Continue after a tuple of strings (a listing ordered by a unique key of text columns):
    `{"k": [<str>, ...]}`; `width` is the listing's key length, checked on the way in."""

    invalid_detail: ClassVar[str] = "cursor: not a cursor returned by this listing"
    keys: tuple[str, ...]

    def encode(self) -> str:
        return _pack(json.dumps({"k": list(self.keys)}).encode())

    @classmethod
    def decode_keys(cls, cursor: str, width: int) -> tuple[str, ...]:
        """The key a cursor names, of `width` strings; `InvalidCursor` otherwise."""
        keys = cls.decode(cursor).keys
        if len(keys) != width:
            raise InvalidCursor(cls.invalid_detail)
        return keys

    @classmethod
    def _parse(cls, raw: bytes) -> Self:
        data: Any = json.loads(raw)
        keys = data["k"]
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise ValueError("malformed key")
        for key in keys:
            # Keys go into a query: text the database cannot hold was never issued here.
            if "\x00" in key:
                raise ValueError("NUL in cursor key")
            key.encode("utf-8")
        return cls(tuple(keys))
