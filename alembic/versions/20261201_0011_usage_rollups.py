"""usage: daily rollups per tenant, UTC day, model and source, backfilled from the events

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The UTC day of an event, as app/usage/rollups.py computes it for each dialect.
_DAY = {
    "postgresql": "CAST(timezone('UTC', occurred_at) AS DATE)",
    "sqlite": "date(occurred_at)",
}

_BACKFILL = """
INSERT INTO usage_daily_rollups (tenant_id, day, model, source, shard, calls, prompt_tokens,
    completion_tokens, total_tokens, estimated_cost_usd, unpriced_calls, updated_at)
SELECT tenant_id, {day}, model, source, 0, count(*), sum(prompt_tokens), sum(completion_tokens),
       sum(total_tokens), coalesce(sum(estimated_cost_usd), 0),
       count(*) - count(estimated_cost_usd), CURRENT_TIMESTAMP
FROM usage_events
GROUP BY tenant_id, {day}, model, source
"""


def upgrade() -> None:
    op.create_table(
        "usage_daily_rollups",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("estimated_cost_usd", sa.Numeric(20, 10), nullable=False),
        sa.Column("unpriced_calls", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "day", "model", "source", "shard", name=op.f("pk_usage_daily_rollups")
        ),
    )
    # Every event recorded before this migration, added up once (shard 0); later events are
    # added by the same transaction that inserts them.
    op.execute(_BACKFILL.format(day=_DAY[op.get_bind().dialect.name]))


def downgrade() -> None:
    op.drop_table("usage_daily_rollups")
