"""The console's one-time sign-in links and its server-side sessions, in one table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime, utcnow

KIND_LINK = "link"
KIND_SESSION = "session"


class AdminSession(Base):
    """A one-time link (`kind='link'`, spent once `used_at` is set) or an open console session.

    Only the SHA-256 of the secret the browser holds is stored: a copy of the table opens no
    console. Rows are in the database, not in one process, so every replica sees every session.
    """

    __tablename__ = "admin_sessions"
    __table_args__ = (Index("ix_admin_sessions_expires_at", "expires_at"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(255))
    # The session's CSRF token (a session row only): worthless without the session cookie.
    csrf_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
