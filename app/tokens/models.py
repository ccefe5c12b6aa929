"""Tables of the tokens domain: OAuth clients, connections (token sets) and pending login states."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, JSONType, UTCDateTime, new_id, utcnow

# Stored statuses; "expiring", "expired" and "disconnected" are derived when reporting.
STATUS_ACTIVE = "active"
STATUS_REFRESH_FAILED = "refresh_failed"
STATUS_NEEDS_REAUTH = "needs_reauth"
STORED_STATUSES = (STATUS_ACTIVE, STATUS_REFRESH_FAILED, STATUS_NEEDS_REAUTH)

# A client's status: `misconfigured` when its provider refused the app itself (invalid_client,
# unauthorized_client); its connections are not refreshed until the client is edited.
CLIENT_ACTIVE = "active"
CLIENT_MISCONFIGURED = "misconfigured"
CLIENT_STATUSES = (CLIENT_ACTIVE, CLIENT_MISCONFIGURED)


class OAuthClient(Base):
    """One tenant's OAuth app credentials for one provider (built-in or a custom slug)."""

    __tablename__ = "oauth_clients"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(128), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    client_id: Mapped[str] = mapped_column(String(512))
    client_secret_enc: Mapped[str] = mapped_column(Text)
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    return_urls: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # Custom providers keep their URLs and options here; empty for built-in providers.
    provider_settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    workspace_info: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    status: Mapped[str] = mapped_column(String(32), default=CLIENT_ACTIVE, server_default="active")
    status_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OAuthConnection(Base):
    """One token set: (tenant, provider, branch_id)."""

    __tablename__ = "oauth_connections"
    __table_args__ = (
        UniqueConstraint("tenant_id", "provider", "branch_id"),
        Index("ix_oauth_connections_refresh_due_at", "refresh_due_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(128))
    client_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(64))
    branch_id: Mapped[str] = mapped_column(String(255))
    access_token_enc: Mapped[str] = mapped_column(Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    token_type: Mapped[str] = mapped_column(String(64), default="Bearer")
    scope: Mapped[str | None] = mapped_column(Text, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The lifetime (expires_in) the current access token was issued with: its refresh margin is
    # at most half of it (app/tokens/timing.py).
    token_lifetime_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Where the provider says so (refresh_token_expires_in): when the grant itself lapses.
    refresh_token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When `refresh_token_expiring` was raised for the current refresh token (once per token).
    refresh_token_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(32), default=STATUS_ACTIVE)
    last_refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(255), nullable=True)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    refresh_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Row leasing for the monitoring loop (app/monitoring); app/tokens only creates them null.
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OAuthState(Base):
    """A login in progress; keyed by the SHA-256 of the state, so the state itself is not stored."""

    __tablename__ = "oauth_states"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    client_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True
    )
    branch_id: Mapped[str] = mapped_column(String(255))
    return_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    code_verifier_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
