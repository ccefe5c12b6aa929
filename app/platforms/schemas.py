"""Response shapes of the connected-platforms route."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.core.schemas import ResponseModel


class PlatformStatus(ResponseModel):
    provider: str = Field(description="the provider's slug")
    connected: bool = Field(description="a usable connection exists (active or expiring)")
    status: str = Field(
        description="not_connected, active, expiring, expired, refresh_failed or needs_reauth"
    )
    expires_at: datetime | None = Field(description="when the access token expires")
    last_refreshed_at: datetime | None = Field(description="when it was last refreshed")
    last_error: str | None = Field(description="the last failure's safe reason code")
    # Where the provider says when the grant lapses (refresh_token_expires_in); `expiring`
    # inside REFRESH_TOKEN_EXPIRY_WARNING_S of it: ask the user to reconnect.
    refresh_token_expires_at: datetime | None = Field(
        default=None, description="where the provider says so: when the grant lapses"
    )
    refresh_token_expiring: bool = Field(
        default=False,
        description=(
            "the grant lapses soon (REFRESH_TOKEN_EXPIRY_WARNING_S): ask the user to reconnect"
        ),
    )


class ConnectedPlatforms(ResponseModel):
    """One branch: an entry per provider the tenant has a client for."""

    tenant_id: str = Field(description="the tenant")
    branch_id: str = Field(description="the branch")
    platforms: list[PlatformStatus] = Field(
        description="one entry per provider the tenant has a client for"
    )


class ProviderSummary(ResponseModel):
    provider: str = Field(description="the provider's slug")
    connections: int = Field(description="the tenant's connections to it")
    statuses: dict[str, int] = Field(description="how many are in each status")


class PlatformsSummary(ResponseModel):
    """No branch named: per provider, how many of the tenant's connections are in each status."""

    tenant_id: str = Field(description="the tenant")
    branch_id: None = Field(default=None, description="always null: no branch was named")
    platforms: list[ProviderSummary] = Field(description="one entry per provider")
