"""Per-caller rate limits, counted by the `limits` library: in Redis when the service has one
(every replica shares the count), in process memory without it and while Redis is unreachable.

A caller is a token's `sub` within its tenants (a `sub` is only unique within its issuer's
tenants), or the client address for a request without a valid token. The check runs in a pure
ASGI middleware ahead of routing, so a refused request costs no body read, no dependency and no
database; it is installed only when `RATE_LIMIT` is set.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

import redis.asyncio as aioredis
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import RateLimiter as LimitsStrategy
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.auth import Principal
from app.core.breaker import CircuitBreaker
from app.core.config import Settings
from app.core.errors import DomainError, error_body
from app.state import app_state

logger = logging.getLogger("junction.rate_limit")

# Probes and scrapers are the platform's, not callers': throttling them would fail health checks.
EXEMPT_PATHS = frozenset({"/livez", "/readyz", "/api/v1/health", "/metrics"})
_KEY_PREFIX = "junction:rate"
_AUTHORIZATION = b"authorization"


class TooManyRequests(DomainError):
    status_code = 429
    code = "too_many_requests"


def parse_limits(text: str) -> list[RateLimitItem]:
    """`"20/second;600/minute"` → the items; ValueError names what is wrong."""
    return list(parse_many(text))


class RateLimiter:
    """Counts hits per identity against its limits; says how long a refused caller must wait."""

    def __init__(self, settings: Settings) -> None:
        assert settings.rate_limit is not None
        self.per_caller = parse_limits(settings.rate_limit)
        self.per_address = parse_limits(settings.rate_limit_by_address or settings.rate_limit)
        # Sliding window counter: no burst of twice the limit at a window's edge (fixed window),
        # two counters per caller rather than one entry per hit (moving window).
        self._local: LimitsStrategy = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._redis: aioredis.Redis | None = None
        self._shared: LimitsStrategy | None = None
        if settings.redis_url:
            timeout = settings.cache_socket_timeout_s
            self._redis = aioredis.Redis.from_url(
                settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                # Documented by limits (the pool is ours to close), missing from its annotation.
                connection_pool=self._redis.connection_pool,  # type: ignore[arg-type]
                wrap_exceptions=True,
                key_prefix=_KEY_PREFIX,
            )
            self._shared = SlidingWindowCounterRateLimiter(storage)
        # While Redis fails, count in memory without paying its timeout on every request.
        self._breaker = CircuitBreaker(
            settings.cache_breaker_failures, settings.cache_breaker_reset_s
        )

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def retry_after(self, identity: str, items: list[RateLimitItem]) -> int | None:
        """Count one hit; None when it is within every limit, else whole seconds to wait."""
        if self._shared is not None and self._breaker.allow():
            try:
                wait = await _hit(self._shared, identity, items)
            except StorageError:
                if self._breaker.failure():
                    logger.warning("rate limits counted per process: Redis is unreachable")
            else:
                self._breaker.success()
                return wait
        return await _hit(self._local, identity, items)


async def _hit(limiter: LimitsStrategy, identity: str, items: list[RateLimitItem]) -> int | None:
    for item in items:
        if not await limiter.hit(item, identity):
            stats = await limiter.get_window_stats(item, identity)
            return max(1, math.ceil(stats.reset_time - time.time()))
    return None


def caller_identity(principal: Principal) -> str:
    tenants = ",".join(sorted(principal.tenants))
    identity = f"{principal.sub}@{tenants}"
    # Bounded keys whatever the token holds (a sub may be 1024 characters, tenants many).
    if len(identity) > 200:
        identity = hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()
    return "caller:" + identity


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _AUTHORIZATION:
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
    return None


class RateLimitMiddleware:
    """Pure ASGI: 429 with `Retry-After` for a caller over its limit, before anything else runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        state = app_state(scope["app"])
        limiter = state.rate_limiter
        assert limiter is not None
        identity, items = None, limiter.per_address
        token = _bearer_token(scope)
        if token is not None:
            try:
                # The verifier keeps verified tokens: the route's own check is a dict lookup.
                principal = await state.token_verifier.verify(token)
            except DomainError:
                pass  # an invalid token counts against its address; the route refuses it
            else:
                identity, items = caller_identity(principal), limiter.per_caller
        if identity is None:
            client = scope.get("client")
            identity = "address:" + (client[0] if client else "unknown")
        wait = await limiter.retry_after(identity, items)
        if wait is None:
            await self.app(scope, receive, send)
            return
        refused = TooManyRequests(f"too many requests; retry in {wait} s")
        response = JSONResponse(
            status_code=refused.status_code,
            content=error_body(refused.code, refused.detail),
            headers={"Retry-After": str(wait)},
        )
        await response(scope, receive, send)
