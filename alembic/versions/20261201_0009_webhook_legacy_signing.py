"""webhooks: mark the registrations made before Standard Webhooks signing

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("monitoring_webhooks") as batch:
        batch.add_column(
            sa.Column("legacy_signing", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # Every webhook registered so far holds a secret its receiver verifies the old way (any text,
    # HMAC over "<timestamp>.<body>"): it keeps getting what it got, beside the standard headers.
    webhooks = sa.table("monitoring_webhooks", sa.column("legacy_signing", sa.Boolean()))
    op.execute(webhooks.update().values(legacy_signing=True))


def downgrade() -> None:
    with op.batch_alter_table("monitoring_webhooks") as batch:
        batch.drop_column("legacy_signing")
