"""usage alerts: per-workspace thresholds, the crossings (once per period), event details

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "usage_alert_settings",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("percents", _JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_usage_alert_settings")),
    )
    op.create_table(
        "usage_threshold_crossings",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=False),
        sa.Column("limit_value", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("crossed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "period", "metric", "percent", name=op.f("pk_usage_threshold_crossings")
        ),
    )
    with op.batch_alter_table("monitoring_events") as batch:
        batch.add_column(sa.Column("details", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("monitoring_events") as batch:
        batch.drop_column("details")
    op.drop_table("usage_threshold_crossings")
    op.drop_table("usage_alert_settings")
