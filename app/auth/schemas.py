"""Bodies of the auth routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from app.core.schemas import RequestModel, ResponseModel, UTCDatetime


class RevokeRequest(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"jti": "3f0c9a6e-2b1d-4c55-9d0e-8a7b6c5d4e3f"}]}
    )

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
    jti: str = Field(description="the revoked token's id")
    revoked: bool = Field(description="it is revoked now")
    expires_at: datetime = Field(
        description="until when the revocation is kept (the token's expiry)"
    )
