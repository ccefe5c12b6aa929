"""Bearer-token authentication: pinned algorithms, required claims, revocation, tenant access."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import jwt

from app.core.config import Settings
from app.core.errors import BadRequest, Forbidden, InvalidToken, TokenExpired, Unauthorized

logger = logging.getLogger("junction.auth")

ALL_TENANTS = "*"
ROLE_ADMIN = "admin"
ROLE_SERVICE = "service"
# Seconds of clock difference allowed on `exp` (and on the lifetime bound below).
LEEWAY_S = 5


@dataclass(frozen=True)
class Principal:
    sub: str
    tenants: frozenset[str]
    roles: frozenset[str]
    jti: str | None
    expires_at: datetime

    @cached_property
    def expires_at_s(self) -> float:
        return self.expires_at.timestamp()

    def can_access(self, tenant_id: str) -> bool:
        return ALL_TENANTS in self.tenants or tenant_id in self.tenants

    def require_tenant(self, tenant_id: str) -> str:
        if not self.can_access(tenant_id):
            raise Forbidden(f"the caller may not act for tenant '{tenant_id}'")
        return tenant_id

    def resolve_tenant(self, explicit: str | None) -> str:
        """The tenant a request acts for: the one named, or the caller's only tenant."""
        if explicit:
            return self.require_tenant(explicit)
        only = self.only_tenant
        if only is None:
            raise BadRequest("tenant_id is required: the token names more than one tenant")
        return only

    @cached_property
    def only_tenant(self) -> str | None:
        """The one tenant the token names, if it names one and not all of them."""
        concrete = [t for t in self.tenants if t != ALL_TENANTS]
        return concrete[0] if len(concrete) == 1 and ALL_TENANTS not in self.tenants else None


class TokenVerifier:
    """Validates bearer JWTs against the configured key material, and only its algorithms."""

    def __init__(self, settings: Settings) -> None:
        self.algorithms = settings.jwt_algorithms
        if "none" in [a.lower() for a in self.algorithms]:
            raise ValueError("the 'none' algorithm is never accepted")
        self.audience = settings.auth_audience
        self.issuer = settings.auth_issuer
        self._required_claims = ["exp", "aud", "sub", *(["iss"] if self.issuer else [])]
        self.max_lifetime_s = settings.auth_max_token_lifetime_s
        self._secret = settings.jwt_secret
        self._public_key = settings.auth_jwt_public_key
        self._jwks = jwt.PyJWKClient(settings.auth_jwks_url) if settings.auth_jwks_url else None
        # Tokens this process has verified, reused until their `exp`: the signature check is most
        # of a warm request's cost and its result cannot change for the same token string.
        # Revocation is checked on every request by the caller, not cached here. Bounded: a full
        # map is simply emptied.
        self._verified: dict[str, Principal] = {}
        self._max_verified = 4096

    async def _key(self, token: str) -> Any:
        if self._jwks is not None:
            # PyJWKClient fetches with urllib; keys are cached, but keep any fetch off the loop.
            signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            return signing_key.key
        return self._public_key or self._secret

    def verified_before(self, token: str) -> Principal | None:
        """The caller of a token this process verified and that has not expired since (no
        await: the hot reads ask this first); None: `verify` it."""
        known = self._verified.get(token)
        if known is not None and known.expires_at_s > time.time():
            return known
        return None

    async def verify(self, token: str) -> Principal:
        known = self.verified_before(token)
        if known is not None:
            return known
        self._verified.pop(token, None)  # expired, if there at all
        principal = await self._verify_signature_and_claims(token)
        if len(self._verified) >= self._max_verified:
            self._verified.clear()
        self._verified[token] = principal
        return principal

    async def _verify_signature_and_claims(self, token: str) -> Principal:
        try:
            key = await self._key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                # `iss` is required, not only compared, when an issuer is configured.
                options={"require": self._required_claims, "verify_iss": bool(self.issuer)},
                leeway=LEEWAY_S,
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("the token has expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {_reason(exc)}") from exc
        _check_lifetime(claims, self.max_lifetime_s)
        return _principal_from(claims)


def _check_lifetime(claims: dict[str, Any], max_lifetime_s: int) -> None:
    """Refuse a token valid for longer than the service keeps a revocation, which could
    otherwise outlive its own revocation (app/auth/service.py)."""
    exp, iat = claims["exp"], claims.get("iat")
    longest = max_lifetime_s + LEEWAY_S
    if exp - time.time() > longest or (isinstance(iat, int | float) and exp - iat > longest):
        raise InvalidToken(
            f"invalid token: valid for longer than AUTH_MAX_TOKEN_LIFETIME_S ({max_lifetime_s} s)"
        )


def _reason(exc: Exception) -> str:
    if isinstance(exc, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim '{exc.claim}'"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "algorithm not allowed"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "bad signature"
    return "malformed or unverifiable"


def _str_set(value: Any, claim: str) -> frozenset[str]:
    # A list and nothing else: a bare string would grant the whole claim ("*" every tenant,
    # "admin" the admin role) to anyone who reads it as one item.
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidToken(f"invalid token: claim '{claim}' must be a list of strings")
    return frozenset(value)


def _printable(value: str, max_length: int = 1024) -> bool:
    return value.isprintable() and len(value) <= max_length


# The revocation list stores a `jti` longer than its column by digest (app/auth/service.py
# `storage_key`), so any printable `jti` of a sane length can be revoked.
_MAX_JTI_LENGTH = 1024


def _jti(value: Any) -> str | None:
    """Optional (a token without one cannot be revoked), but never ignored when present: a `jti`
    the revocation list could not hold would make its token silently irrevocable."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or not _printable(value, _MAX_JTI_LENGTH):
        raise InvalidToken(
            f"invalid token: claim 'jti' must be a printable string of at most "
            f"{_MAX_JTI_LENGTH} characters"
        )
    return value


def _principal_from(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or not _printable(sub):
        raise Unauthorized("invalid token: claim 'sub' must be a short printable string")
    try:
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (OverflowError, OSError, ValueError):
        raise Unauthorized("invalid token: claim 'exp' is out of range") from None
    return Principal(
        sub=sub,
        tenants=_str_set(claims.get("tenants"), "tenants"),
        roles=_str_set(claims.get("roles"), "roles"),
        jti=_jti(claims.get("jti")),
        expires_at=expires_at,
    )


def mint_token(
    settings: Settings,
    *,
    sub: str,
    tenants: list[str],
    roles: list[str] | None = None,
    ttl_s: int = 3600,
    jti: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A development token signed with the local HS256 secret (the CLI and the tests use it)."""
    import uuid

    secret = settings.jwt_secret
    if not secret:
        raise RuntimeError("minting needs AUTH_JWT_SECRET (HS256); this service verifies only")
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": sub,
        "tenants": tenants,
        "roles": roles or [],
        "aud": settings.auth_audience,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_s)).timestamp()),
        "jti": jti or uuid.uuid4().hex,
    }
    if settings.auth_issuer:
        claims["iss"] = settings.auth_issuer
    claims.update(extra or {})
    return jwt.encode(claims, secret, algorithm="HS256")
