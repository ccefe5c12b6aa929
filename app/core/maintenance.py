"""MAINTENANCE_MODE=read_only: reads keep working, nothing writes to the database.

For a cutover or a backup (docs/operations.md): every replica restarted with the setting keeps
answering reads while `junction copy-db` copies a database nobody writes. Three layers:

- requests that write by their method (everything but GET, HEAD and OPTIONS) answer 503
  `maintenance` with `Retry-After` before any route runs (`MaintenanceMiddleware`);
- GETs that would write refuse where they would, before any side effect outside the database:
  a login's callback before the code is exchanged, a token refresh before the provider is
  called (it may rotate the refresh token, which could then not be stored); a token read
  serves a still-valid token without refreshing it, and does not record `last_used_at`;
- the background writers (the monitoring loop, the webhook dispatcher, the revocation purge)
  do not run, and as the net under all of it, the app's engine refuses any statement that
  writes (`refuse_writes_on`), so a write nobody thought of answers 503, never reaches the
  database.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.config import Settings
from app.core.errors import ServiceUnavailable, error_body

READ_ONLY = "read_only"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DETAIL = "the service is read-only for maintenance; reads work, retry writes after Retry-After"
_WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|MERGE|CREATE|ALTER|DROP|TRUNCATE)\b", re.I)
_WRITES_IN_CTE = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.I)


class ReadOnlyMaintenance(ServiceUnavailable):
    code = "maintenance"

    def __init__(self, retry_after_s: int, detail: str = _DETAIL) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


def refuse_writes(settings: Settings) -> None:
    """Raise `ReadOnlyMaintenance` in read-only mode: call it before a write's side effects."""
    if settings.read_only:
        raise ReadOnlyMaintenance(settings.maintenance_retry_after_s)


def _writes(statement: str) -> bool:
    if _WRITES.match(statement):
        return True
    return statement.lstrip()[:4].upper() == "WITH" and bool(_WRITES_IN_CTE.search(statement))


def refuse_writes_on(engine: AsyncEngine, settings: Settings) -> None:
    """In read-only mode, make `engine` refuse every statement that writes (nothing is listened
    for otherwise, so the mode costs nothing when it is off)."""
    if not settings.read_only:
        return

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _refuse(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        if _writes(statement):
            raise ReadOnlyMaintenance(settings.maintenance_retry_after_s)


class MaintenanceMiddleware:
    """Pure ASGI: in read-only mode, 503 for every request whose method writes."""

    def __init__(self, app: ASGIApp, *, retry_after_s: int) -> None:
        self.app = app
        self._body = json.dumps(error_body("maintenance", _DETAIL)).encode()
        self._headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._body)).encode()),
            (b"retry-after", str(retry_after_s).encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 503, "headers": self._headers})
        await send({"type": "http.response.body", "body": self._body})
