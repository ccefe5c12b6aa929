"""`POST /auth/revoke`: revoke a bearer token before it expires."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.auth import service
from app.auth.schemas import RevokeRequest, RevokeResponse
from app.core.deps import CacheDep, CurrentPrincipal, SessionDep
from app.state import app_state

router = APIRouter(tags=["auth"])


@router.post("/auth/revoke", summary="Revoke a bearer token", response_model=RevokeResponse)
async def revoke_token(
    request: Request,
    principal: CurrentPrincipal,
    session: SessionDep,
    cache: CacheDep,
    body: RevokeRequest | None = None,
) -> RevokeResponse:
    """Revoke a bearer token before it expires: the presented one, or (for an admin of
    every tenant) any token by its `jti`. Every replica refuses it from then on.
    """
    body = body or RevokeRequest()
    jti, expires_at = await service.revoke(
        session, app_state(request.app).revocations, cache, principal, body.jti, body.expires_at
    )
    return RevokeResponse(jti=jti, revoked=True, expires_at=expires_at)
