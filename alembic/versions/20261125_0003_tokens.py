"""tokens: tables of app/tokens

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oauth_clients",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("client_id", sa.String(512), nullable=False),
        sa.Column("client_secret_enc", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.String(2048), nullable=False),
        sa.Column("scopes", JSON, nullable=False),
        sa.Column("return_urls", JSON, nullable=False),
        sa.Column("provider_settings", JSON, nullable=False),
        sa.Column("workspace_info", JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_clients")),
    )
    op.create_index(op.f("ix_oauth_clients_tenant_id"), "oauth_clients", ["tenant_id"])

    op.create_table(
        "oauth_connections",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("client_id", sa.String(32), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("branch_id", sa.String(255), nullable=False),
        sa.Column("access_token_enc", sa.Text(), nullable=False),
        sa.Column("refresh_token_enc", sa.Text(), nullable=True),
        sa.Column("token_type", sa.String(64), nullable=False),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("last_refreshed_at", TS, nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("last_error", sa.String(255), nullable=True),
        sa.Column("failure_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("refresh_due_at", TS, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_oauth_connections_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_connections")),
        sa.UniqueConstraint(
            "tenant_id",
            "provider",
            "branch_id",
            name=op.f("uq_oauth_connections_tenant_id_provider_branch_id"),
        ),
    )
    op.create_index(op.f("ix_oauth_connections_client_id"), "oauth_connections", ["client_id"])
    op.create_index("ix_oauth_connections_refresh_due_at", "oauth_connections", ["refresh_due_at"])

    op.create_table(
        "oauth_states",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("client_id", sa.String(32), nullable=False),
        sa.Column("branch_id", sa.String(255), nullable=False),
        sa.Column("return_url", sa.String(2048), nullable=True),
        sa.Column("redirect_uri", sa.String(2048), nullable=False),
        sa.Column("code_verifier_enc", sa.Text(), nullable=True),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_oauth_states_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_states")),
    )
    op.create_index(op.f("ix_oauth_states_client_id"), "oauth_states", ["client_id"])
    op.create_index(op.f("ix_oauth_states_expires_at"), "oauth_states", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_oauth_states_expires_at"), table_name="oauth_states")
    op.drop_index(op.f("ix_oauth_states_client_id"), table_name="oauth_states")
    op.drop_table("oauth_states")
    op.drop_index("ix_oauth_connections_refresh_due_at", table_name="oauth_connections")
    op.drop_index(op.f("ix_oauth_connections_client_id"), table_name="oauth_connections")
    op.drop_table("oauth_connections")
    op.drop_index(op.f("ix_oauth_clients_tenant_id"), table_name="oauth_clients")
    op.drop_table("oauth_clients")
