"""Bodies of the auth routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.core.schemas import RequestModel, ResponseModel


class RevokeRequest(RequestModel):
    jti: str | None = Field(
        default=None,
        max_length=255,
        description=(
            "token id to revoke (an admin of every tenant only); omitted: the presented token"
        ),
    )
    expires_at: datetime | None = Field(
        default=None, description="when the revoked token expires; default: 24 hours from now"
    )


class RevokeResponse(ResponseModel):
    jti: str
    revoked: bool
    expires_at: datetime
