"""Workspace bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.core.schemas import RequestModel, ResponseModel


class WorkspaceUpdate(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    tier: str | None = Field(default=None, min_length=1, max_length=32)


class WorkspaceRead(ResponseModel):
    tenant_id: str
    name: str | None
    tier: str
    created_at: datetime
    updated_at: datetime


class WorkspacePage(ResponseModel):
    items: list[WorkspaceRead]
    next_cursor: str | None


class RevocationsRead(ResponseModel):
    connections: int
    attempted: int
    revoked: int
    failed: int
    timed_out: int


class WorkspaceDeletionRead(ResponseModel):
    id: str
    tenant_id: str
    name: str | None
    tier: str | None
    deleted_by: str
    deleted_at: datetime
    counts: dict[str, int]
    revocations: RevocationsRead


class WorkspaceDeletionPage(ResponseModel):
    items: list[WorkspaceDeletionRead]
    next_cursor: str | None
