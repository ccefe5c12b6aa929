"""How a refresh ended (`RefreshOutcome`), apart from the refresh path so that what it writes on
the row (app/tokens/refresh_writes.py) can name its results without importing it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class RefreshResult(StrEnum):
    """How a refresh ended: `RefreshOutcome.result`, and the monitoring loop's count per result.

    ERROR and ABANDONED are the loop's own (its refresher raised; shutdown came first); the
    refresh path never returns them. CLIENT_MISCONFIGURED: the connection's client is (or was
    just found) refused by its provider; the connection row is left as it was.
    """

    REFRESHED = "refreshed"
    NEEDS_REAUTH = "needs_reauth"
    REFRESH_FAILED = "refresh_failed"
    CLIENT_MISCONFIGURED = "client_misconfigured"
    SKIPPED = "skipped"
    NOT_FOUND = "not_found"
    ERROR = "error"
    ABANDONED = "abandoned"


@dataclass
class RefreshOutcome:
    connection_id: str
    result: RefreshResult
    status: str
    error: str | None
    # When the connection is next due, as written, or as found by a refresh that skipped.
    refresh_due_at: datetime | None = None
    # The monitoring lease of `lease_owner` was cleared in the write that stored the outcome.
    lease_released: bool = False
