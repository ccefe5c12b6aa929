"""Errors of the workspaces domain."""

from __future__ import annotations

from app.core.errors import NotFound


class WorkspaceNotFound(NotFound):
    code = "workspace_not_found"

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"no workspace '{tenant_id}'")
