"""Pagination cursors: the wire formats already handed out keep decoding, and bad ones are 400s."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.core.pagination import InvalidCursor, RowIdCursor, TimeIdCursor

# Cursors as the history and events listings encoded them before they shared this module.
ISSUED_ROW_ID_CURSOR = "djE6NDI"  # v1:42
ISSUED_TIME_ID_CURSOR = "eyJ0IjogIjIwMjQtMDUtMDFUMTQ6MDA6MDArMDI6MDAiLCAiaSI6ICJldnQtMSJ9"


def test_an_issued_row_id_cursor_still_decodes() -> None:
    assert RowIdCursor.decode(ISSUED_ROW_ID_CURSOR) == RowIdCursor(42)
    assert RowIdCursor(42).encode() == ISSUED_ROW_ID_CURSOR


def test_an_issued_time_id_cursor_still_decodes_in_utc() -> None:
    cursor = TimeIdCursor.decode(ISSUED_TIME_ID_CURSOR)
    assert cursor == TimeIdCursor(datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "evt-1")
    assert cursor.at.tzinfo is UTC
    assert TimeIdCursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize(
    "cursor",
    ["djI6NDI", "djE6MA", "djE6LTE", "djE6OTIyMzM3MjAzNjg1NDc3NTgwOA", "!!!", "djE6eA", "_w"],
)
def test_a_row_id_cursor_not_made_here_is_invalid(cursor: str) -> None:
    # v2:42, v1:0, v1:-1, v1:2**63, not base64, v1:x, a byte that is not UTF-8
    with pytest.raises(InvalidCursor) as raised:
        RowIdCursor.decode(cursor)
    assert raised.value.status_code == 400
    assert raised.value.code == "invalid_cursor"
    assert raised.value.detail == "cursor: not a cursor this service returned"


@pytest.mark.parametrize(
    "cursor",
    [
        "eyJ0IjogIjIwMjQtMDUtMDFUMTQ6MDA6MDAiLCAiaSI6ICJldnQtMSJ9",  # a naive time
        "e30",  # {}
        "WzFd",  # [1]
        "bm90IGpzb24",  # not json
        ISSUED_ROW_ID_CURSOR,
    ],
)
def test_a_time_id_cursor_not_made_here_is_invalid(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as raised:
        TimeIdCursor.decode(cursor)
    assert raised.value.code == "invalid_cursor"
    assert raised.value.detail == "cursor: not a cursor returned by this listing"
