"""workspaces: the listing's index and the record of each offboarding

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # The admin listing: newest first, keyset-paginated on (created_at, id).
    op.create_index(op.f("ix_workspaces_created_at"), "workspaces", ["created_at", "id"])
    op.create_table(
        "workspace_deletions",
        sa.Column("id", sa.String(32), nullable=False),
        # Not `tenant_id`: offboarding deletes every table's rows with that column.
        sa.Column("deleted_tenant_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("tier", sa.String(32), nullable=True),
        sa.Column("deleted_by", sa.String(255), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("counts", _JSON, nullable=False),
        sa.Column("revocations", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_deletions")),
    )
    op.create_index(
        op.f("ix_workspace_deletions_deleted_tenant_id"),
        "workspace_deletions",
        ["deleted_tenant_id"],
    )
    op.create_index(
        op.f("ix_workspace_deletions_deleted_at"), "workspace_deletions", ["deleted_at", "id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_workspace_deletions_deleted_at"), table_name="workspace_deletions")
    op.drop_index(
        op.f("ix_workspace_deletions_deleted_tenant_id"), table_name="workspace_deletions"
    )
    op.drop_table("workspace_deletions")
    op.drop_index(op.f("ix_workspaces_created_at"), table_name="workspaces")
