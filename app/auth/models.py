"""Revoked token ids, kept until the token would have expired anyway."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime, utcnow


class RevokedToken(Base):
    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Indexed: each sync reads what was revoked since the previous one.
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    revoked_by: Mapped[str] = mapped_column(String(255))
