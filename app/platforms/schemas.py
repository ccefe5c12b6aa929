"""Response shapes of the connected-platforms route."""

from __future__ import annotations

from datetime import datetime

from app.core.schemas import ResponseModel


class PlatformStatus(ResponseModel):
    provider: str
    connected: bool
    status: str
    expires_at: datetime | None
    last_refreshed_at: datetime | None
    last_error: str | None
    # Where the provider says when the grant lapses (refresh_token_expires_in); `expiring`
    # inside REFRESH_TOKEN_EXPIRY_WARNING_S of it: ask the user to reconnect.
    refresh_token_expires_at: datetime | None = None
    refresh_token_expiring: bool = False


class ConnectedPlatforms(ResponseModel):
    """One branch: an entry per provider the tenant has a client for."""

    tenant_id: str
    branch_id: str
    platforms: list[PlatformStatus]


class ProviderSummary(ResponseModel):
    provider: str
    connections: int
    statuses: dict[str, int]


class PlatformsSummary(ResponseModel):
    """No branch named: per provider, how many of the tenant's connections are in each status."""

    tenant_id: str
    branch_id: None = None
    platforms: list[ProviderSummary]
