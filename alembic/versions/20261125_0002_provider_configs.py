"""provider_configs: tables of app/provider_configs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "provider_configs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("provider_type", sa.String(32), nullable=False),
        sa.Column("provider_name", sa.String(100), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("config_data", JSONType, nullable=False),
        sa.Column("api_key_encrypted", sa.Text(), nullable=True),
        sa.Column("api_key_mask", sa.String(16), nullable=True),
        sa.Column("api_secret_encrypted", sa.Text(), nullable=True),
        sa.Column("api_secret_mask", sa.String(16), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["workspaces.id"],
            name=op.f("fk_provider_configs_tenant_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_configs")),
        sa.UniqueConstraint(
            "tenant_id",
            "provider_type",
            "provider_name",
            name=op.f("uq_provider_configs_tenant_id_provider_type_provider_name"),
        ),
    )
    op.create_table(
        "provider_config_versions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("config_id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("provider_type", sa.String(32), nullable=False),
        sa.Column("provider_name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("change_type", sa.String(16), nullable=False),
        sa.Column("snapshot", JSONType, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(255), nullable=False),
        sa.Column("change_reason", sa.Text(), nullable=True),
        sa.Column("source_version", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["config_id"],
            ["provider_configs.id"],
            name=op.f("fk_provider_config_versions_config_id_provider_configs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_config_versions")),
        sa.UniqueConstraint(
            "config_id", "version", name=op.f("uq_provider_config_versions_config_id_version")
        ),
    )
    op.create_index(
        "ix_provider_config_versions_tenant_id_id",
        "provider_config_versions",
        ["tenant_id", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_provider_config_versions_tenant_id_id", table_name="provider_config_versions")
    op.drop_table("provider_config_versions")
    op.drop_table("provider_configs")
