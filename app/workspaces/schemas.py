"""Workspace bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from app.core.pagination import NextCursor
from app.core.schemas import RequestModel, ResponseModel


class WorkspaceUpdate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Acme Inc.", "tier": "pro"}]}
    )

    name: str | None = Field(
        description="a name for people", default=None, min_length=1, max_length=255
    )
    tier: str | None = Field(
        description="the usage tier (its limits come from the tier table)",
        default=None,
        min_length=1,
        max_length=32,
    )


class WorkspaceRead(ResponseModel):
    tenant_id: str = Field(description="the tenant")
    name: str | None = Field(description="its name for people")
    tier: str = Field(description="its usage tier")
    created_at: datetime = Field(description="when it was created")
    updated_at: datetime = Field(description="when it was last changed")


class WorkspacePage(ResponseModel):
    items: list[WorkspaceRead] = Field(description="this page's workspaces, in tenant order")
    next_cursor: NextCursor


class RevocationsRead(ResponseModel):
    connections: int = Field(description="connections the tenant had")
    attempted: int = Field(description="revocations tried at providers")
    revoked: int = Field(description="confirmed by the provider")
    failed: int = Field(description="refused or failed")
    timed_out: int = Field(description="not answered in time")


class WorkspaceDeletionRead(ResponseModel):
    id: str = Field(description="the deletion record's id")
    tenant_id: str = Field(description="the tenant deleted")
    name: str | None = Field(description="its name then")
    tier: str | None = Field(description="its tier then")
    deleted_by: str = Field(description="who deleted it (the token's subject)")
    deleted_at: datetime = Field(description="when")
    counts: dict[str, int] = Field(description="rows deleted per table")
    revocations: RevocationsRead = Field(description="what the revocations at providers gave")


class WorkspaceDeletionPage(ResponseModel):
    items: list[WorkspaceDeletionRead] = Field(description="this page's deletions, newest first")
    next_cursor: NextCursor
