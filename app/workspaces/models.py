"""A tenant (workspace): created on first use, named and tiered by an admin; and the record of
each offboarding, which outlives the tenant it names."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, JSONType, UTCDateTime, new_id, utcnow

DEFAULT_TIER = "free"


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = (
        # The admin listing: newest first, keyset-paginated on (created_at, id).
        Index("ix_workspaces_created_at", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    tier: Mapped[str] = mapped_column(String(32), default=DEFAULT_TIER, server_default=DEFAULT_TIER)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WorkspaceDeletion(Base):
    """Who offboarded which tenant, when, and how many rows of each table went.

    The tenant's id is `deleted_tenant_id`, not `tenant_id`: offboarding deletes the rows of
    every table with a `tenant_id` column, and this record must stay.
    """

    __tablename__ = "workspace_deletions"
    __table_args__ = (Index("ix_workspace_deletions_deleted_at", "deleted_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    deleted_tenant_id: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    tier: Mapped[str | None] = mapped_column(String(32), nullable=True)
    deleted_by: Mapped[str] = mapped_column(String(255))
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # {table: rows deleted}
    counts: Mapped[dict[str, int]] = mapped_column(JSONType)
    # {attempted, revoked, failed, timed_out}: the revocations at the providers.
    revocations: Mapped[dict[str, Any]] = mapped_column(JSONType)
