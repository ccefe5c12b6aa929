"""monitoring webhooks: per-tenant endpoints and the delivery outbox

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "monitoring_webhooks",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret_enc", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_monitoring_webhooks")),
    )
    op.create_table(
        "monitoring_webhook_deliveries",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(255), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["monitoring_events.id"],
            name=op.f("fk_monitoring_webhook_deliveries_event_id_monitoring_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_webhook_deliveries")),
    )
    op.create_index(
        op.f("ix_monitoring_webhook_deliveries_event_id"),
        "monitoring_webhook_deliveries",
        ["event_id"],
    )
    op.create_index(
        op.f("ix_monitoring_webhook_deliveries_next_attempt_at"),
        "monitoring_webhook_deliveries",
        ["next_attempt_at"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_monitoring_webhook_deliveries_next_attempt_at"),
        table_name="monitoring_webhook_deliveries",
    )
    op.drop_index(
        op.f("ix_monitoring_webhook_deliveries_event_id"),
        table_name="monitoring_webhook_deliveries",
    )
    op.drop_table("monitoring_webhook_deliveries")
    op.drop_table("monitoring_webhooks")
