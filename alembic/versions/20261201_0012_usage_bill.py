"""usage: cached and reasoning tokens on events, counters and rollups; each event's price version

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("usage_events", "usage_counters", "usage_daily_rollups")


def upgrade() -> None:
    for table in _TABLES:
        # Existing rows reported neither: 0, which is what their cost assumed.
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("cached_tokens", sa.BigInteger(), nullable=False, server_default="0")
            )
            batch.add_column(
                sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False, server_default="0")
            )
    with op.batch_alter_table("usage_events") as batch:
        # NULL for events costed before prices had versions; `junction usage rerate` sets it.
        batch.add_column(sa.Column("price_version", sa.String(160), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("price_version")
    for table in reversed(_TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("reasoning_tokens")
            batch.drop_column("cached_tokens")
