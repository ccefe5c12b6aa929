"""monitoring: tables of app/monitoring

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The lease columns and the refresh_due_at index on oauth_connections belong to 0003 (tokens).
    op.create_table(
        "monitoring_events",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("branch_id", sa.String(255), nullable=False),
        sa.Column("connection_id", sa.String(32), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_events")),
    )
    op.create_index(
        "ix_monitoring_events_tenant_id_occurred_at",
        "monitoring_events",
        ["tenant_id", "occurred_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_monitoring_events_tenant_id_occurred_at", table_name="monitoring_events")
    op.drop_table("monitoring_events")
