"""Prometheus metrics: request counts and latencies by route, database pool and cache figures."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import Unauthorized
from app.core.headers import SECURITY_HEADERS
from app.core.logging import request_id_var

if TYPE_CHECKING:  # the cache counts its operations here: no import at run time
    from app.core.cache import Cache

access_logger = logging.getLogger("junction.access")

registry = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "junction_http_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
    registry=registry,
)
LATENCY = Histogram(
    "junction_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=registry,
)
DB_POOL = Gauge(
    "junction_db_pool_connections",
    "Database pool connections by state",
    ["state"],
    registry=registry,
)


class CacheCounts:
    """Hits and misses of one cache tier instance, as plain ints (see `_CacheOperations`)."""

    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0


class _CacheOperations:
    """`junction_cache_operations_total{tier, result}`: a counter of real cache hits and misses.

    The tiers count in plain ints where the hit or miss happens and the registry sums them at
    scrape: a local hit is the whole cost of a cached read, and `Counter.inc()` (a lock) costs
    about eight times an int increment. The counts outlive their tier, so the sum never falls.
    """

    def __init__(self) -> None:
        self._counted: dict[str, list[Any]] = {}

    def track(self, tier: str, counts: Any) -> None:
        self._counted.setdefault(tier, []).append(counts)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "junction_cache_operations",
            "Cache reads since start by tier (local, shared) and result (hit, miss, error)",
            labels=["tier", "result"],
        )
        for tier, counted in sorted(self._counted.items()):
            family.add_metric([tier, "hit"], sum(c.hits for c in counted))
            family.add_metric([tier, "miss"], sum(c.misses for c in counted))
            errors = [c.errors for c in counted if hasattr(c, "errors")]
            if errors:
                family.add_metric([tier, "error"], sum(errors))
        yield family


CACHE_OPS = _CacheOperations()
registry.register(CACHE_OPS)

C = TypeVar("C")


def count_cache_operations(tier: str, counts: C) -> C:
    """Export `counts` (int `hits`, `misses` and optionally `errors`) under `tier`; returns it."""
    CACHE_OPS.track(tier, counts)
    return counts


CACHE_UP = Gauge("junction_cache_available", "1 when the shared cache answers", registry=registry)

REQUEST_ID_HEADER = b"x-request-id"

# The method is the client's choice of token (RFC 9110 allows any): a label of every one a
# client sends would let anyone grow the metric's cardinality. Others count as "OTHER".
_LABELLED_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


def _valid_request_id(value: bytes) -> str | None:
    text = value.decode("latin-1")[:128]
    return text if text and all(c.isalnum() or c in "-_.:" for c in text) else None


class RequestContextMiddleware:
    """Pure ASGI: a request id in and out, security headers, per-route metrics. (No
    BaseHTTPMiddleware overhead.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A scan, not dict(headers): this runs on every request and wants one header (the last
        # one given, as before).
        incoming = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                incoming = value
        request_id = (_valid_request_id(incoming) if incoming else None) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                headers.extend(SECURITY_HEADERS)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            elapsed = time.perf_counter() - started
            label = method if method in _LABELLED_METHODS else "OTHER"
            REQUESTS.labels(template, label, str(status)).inc()
            LATENCY.labels(template, label).observe(elapsed)
            if access_logger.isEnabledFor(logging.INFO):
                # The path only: query strings can carry OAuth codes and states.
                access_logger.info(
                    "%s %s %s %.1fms",
                    method,
                    scope.get("path", ""),
                    status,
                    elapsed * 1000,
                    extra={
                        "method": method,
                        "path": scope.get("path", ""),
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)


def require_scrape_token(authorization: str | None, expected: str | None) -> None:
    """Raise `Unauthorized` unless `expected` is unset or `authorization` is `Bearer <expected>`.

    The comparison takes the same time wherever the first difference is (no timing oracle).
    """
    if expected is None:
        return
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        raise Unauthorized("/metrics needs 'Authorization: Bearer <METRICS_BEARER_TOKEN>'")


def render_metrics(engine: AsyncEngine, cache: Cache) -> tuple[bytes, str]:
    """Collect the point-in-time gauges from the app's clients, then render everything."""
    pool = engine.pool
    # Only a queue pool counts its connections (SQLite's pools do not).
    if isinstance(pool, QueuePool):
        DB_POOL.labels("checked_out").set(pool.checkedout())
        DB_POOL.labels("idle").set(pool.checkedin())
        DB_POOL.labels("size").set(pool.size())
        DB_POOL.labels("overflow").set(max(0, pool.overflow()))
    CACHE_UP.set(1 if cache.available else 0)
    return generate_latest(registry), CONTENT_TYPE_LATEST
