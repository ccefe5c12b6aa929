"""Tables of the provider_configs domain: the current configurations and their version history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, JSONType, UTCDateTime, utcnow

# SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid), not a BIGINT.
VersionIdType = BigInteger().with_variant(Integer(), "sqlite")


class ProviderConfig(Base):
    """One provider of one type for one tenant. A delete keeps the row (`deleted`), so the version
    counter never restarts and a rollback can bring the configuration back under the same id."""

    __tablename__ = "provider_configs"
    __table_args__ = (UniqueConstraint("tenant_id", "provider_type", "provider_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128), ForeignKey("workspaces.id"))
    provider_type: Mapped[str] = mapped_column(String(32))
    provider_name: Mapped[str] = mapped_column(String(100))
    priority: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean)
    config_data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # Ciphertexts bound to (table, column, tenant, id); the masks ("****" + last four) are kept
    # beside them so reads never decrypt.
    api_key_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    api_key_mask: Mapped[str | None] = mapped_column(String(16), nullable=True)
    api_secret_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    api_secret_mask: Mapped[str | None] = mapped_column(String(16), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(255), nullable=True)


class ProviderConfigVersion(Base):
    """One committed change of one configuration: a full snapshot of its state after the change."""

    __tablename__ = "provider_config_versions"
    __table_args__ = (
        UniqueConstraint("config_id", "version"),
        Index("ix_provider_config_versions_tenant_id_id", "tenant_id", "id"),
    )

    # Increasing with insertion: history pages newest first on it.
    id: Mapped[int] = mapped_column(VersionIdType, primary_key=True, autoincrement=True)
    config_id: Mapped[str] = mapped_column(String(32), ForeignKey("provider_configs.id"))
    tenant_id: Mapped[str] = mapped_column(String(128))
    provider_type: Mapped[str] = mapped_column(String(32))
    provider_name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    change_type: Mapped[str] = mapped_column(String(16))
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSONType)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_by: Mapped[str] = mapped_column(String(255))
    change_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    source_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
