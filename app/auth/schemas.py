"""Bodies of the auth routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.core.schemas import RequestModel, ResponseModel, UTCDatetime


class RevokeRequest(RequestModel):
    jti: str | None = Field(
        default=None,
        max_length=255,
        description=(
            "token id to revoke (an admin of every tenant only); omitted: the presented token"
        ),
    )
    expires_at: UTCDatetime | None = Field(
        default=None,
        description=(
            "when the revoked token expires (naive: UTC); default and latest: "
            "AUTH_MAX_TOKEN_LIFETIME_S from now, past which no token is accepted anyway"
        ),
    )


class RevokeResponse(ResponseModel):
    jti: str
    revoked: bool
    expires_at: datetime
