"""connections: token lifetime, refresh-token expiry, client status, client events, delivery log

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_connections") as batch:
        # The lifetime the current access token was issued with (expires_in), for its margin.
        batch.add_column(sa.Column("token_lifetime_s", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("refresh_token_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        # When `refresh_token_expiring` was raised for the current refresh token (once each).
        batch.add_column(
            sa.Column("refresh_token_warned_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("oauth_clients") as batch:
        batch.add_column(
            sa.Column("status", sa.String(32), nullable=False, server_default="active")
        )
        batch.add_column(sa.Column("status_reason", sa.String(255), nullable=True))
        batch.add_column(sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("monitoring_events") as batch:
        # A client's event (client_misconfigured) concerns no single connection.
        batch.alter_column("connection_id", existing_type=sa.String(32), nullable=True)
        batch.add_column(sa.Column("client_id", sa.String(32), nullable=True))
    with op.batch_alter_table("monitoring_webhook_deliveries") as batch:
        # Whose webhook receives it: the event's tenant, or "*" for the operator's webhook.
        batch.add_column(sa.Column("webhook_tenant_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_status_code", sa.Integer(), nullable=True))
    deliveries = sa.table(
        "monitoring_webhook_deliveries",
        sa.column("tenant_id", sa.String),
        sa.column("webhook_tenant_id", sa.String),
        sa.column("event_id", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    events = sa.table(
        "monitoring_events",
        sa.column("id", sa.String),
        sa.column("occurred_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        deliveries.update().values(
            webhook_tenant_id=deliveries.c.tenant_id,
            created_at=sa.select(events.c.occurred_at)
            .where(events.c.id == deliveries.c.event_id)
            .scalar_subquery(),
        )
    )
    with op.batch_alter_table("monitoring_webhook_deliveries") as batch:
        batch.alter_column("webhook_tenant_id", existing_type=sa.String(128), nullable=False)
        batch.alter_column("created_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    # The delivery log: one webhook's deliveries, newest first, keyset-paginated.
    op.create_index(
        op.f("ix_monitoring_webhook_deliveries_webhook_tenant_id_created_at"),
        "monitoring_webhook_deliveries",
        ["webhook_tenant_id", "created_at", "id"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_monitoring_webhook_deliveries_webhook_tenant_id_created_at"),
        table_name="monitoring_webhook_deliveries",
    )
    with op.batch_alter_table("monitoring_webhook_deliveries") as batch:
        batch.drop_column("last_status_code")
        batch.drop_column("last_attempt_at")
        batch.drop_column("created_at")
        batch.drop_column("webhook_tenant_id")
    op.execute("DELETE FROM monitoring_events WHERE connection_id IS NULL")
    with op.batch_alter_table("monitoring_events") as batch:
        batch.drop_column("client_id")
        batch.alter_column("connection_id", existing_type=sa.String(32), nullable=False)
    with op.batch_alter_table("oauth_clients") as batch:
        batch.drop_column("status_changed_at")
        batch.drop_column("status_reason")
        batch.drop_column("status")
    with op.batch_alter_table("oauth_connections") as batch:
        batch.drop_column("refresh_token_warned_at")
        batch.drop_column("refresh_token_expires_at")
        batch.drop_column("token_lifetime_s")
