"""Health, liveness, readiness and metrics: no authentication."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from app import __version__
from app.core.metrics import render_metrics, require_scrape_token
from app.core.openapi import errors
from app.health.schemas import HealthReport, Readiness
from app.state import app_state

router = APIRouter(tags=["health"])

_CHECK_TIMEOUT_S = 2.0


async def _database_ok(request: Request) -> bool:
    try:
        async with (
            asyncio.timeout(_CHECK_TIMEOUT_S),
            app_state(request.app).engine.connect() as conn,
        ):
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


async def _schema_revision(request: Request) -> str | None:
    try:
        async with (
            asyncio.timeout(_CHECK_TIMEOUT_S),
            app_state(request.app).engine.connect() as conn,
        ):
            result = await conn.execute(text("SELECT version_num FROM alembic_version"))
            revision = result.scalar()
            return str(revision) if revision is not None else None
    except Exception:
        return None


def _monitor_state(request: Request) -> str:
    state = app_state(request.app)
    monitor = state.monitoring.loop
    if monitor is None:
        return (
            "paused" if state.settings.read_only and state.settings.monitor_enabled else "disabled"
        )
    return "running" if monitor.running else "stopped"


def _keys_state(unknown_keys: int | None) -> str:
    if unknown_keys is None:
        return "counting"
    return "unknown_keys" if unknown_keys else "ok"


@router.get(
    "/api/v1/health",
    summary="Service health",
    responses={
        200: {"model": HealthReport, "description": "The database answers."},
        503: {"model": HealthReport, "description": "The database cannot be reached."},
    },
)
async def health(request: Request) -> JSONResponse:
    """The service's health: `ok`, or `degraded` when a dependency other than the database
    (the cache, the monitoring loop) is not working; 503 when the database is unreachable.
    """
    database = await _database_ok(request)
    cache = app_state(request.app).cache
    reachable = await cache.ping()
    # Answering a ping is not enough: until this replica hears the bus again (and the grace after
    # an outage has passed) its local tiers are bypassed and every read costs the database.
    cache_state = "unavailable" if not reachable else "ok" if cache.coherent else "recovering"
    monitor = _monitor_state(request)
    # Counted in the background; health only reads the last count.
    unknown_keys = app_state(request.app).key_check.current()
    checks: dict[str, Any] = {
        "database": "ok" if database else "unavailable",
        "cache": f"{cache.backend}:{cache_state}",
        "monitor": monitor,
        "keys": _keys_state(unknown_keys),
        # "read_only" while MAINTENANCE_MODE says so: reads work, writes answer 503.
        "maintenance": app_state(request.app).settings.maintenance_mode,
    }
    if unknown_keys:
        checks["secrets_under_unknown_keys"] = unknown_keys
    degraded = cache_state != "ok" or monitor == "stopped" or bool(unknown_keys)
    status = "unavailable" if not database else ("degraded" if degraded else "ok")
    return JSONResponse(
        status_code=503 if not database else 200,
        content={"status": status, "version": __version__, "checks": checks},
    )


@router.get("/livez", summary="Liveness probe")
async def livez() -> dict[str, str]:
    """Liveness for orchestrators: the process answers (no dependency is checked)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness probe",
    responses={
        200: {"model": Readiness, "description": "Ready for traffic."},
        503: {
            "model": Readiness,
            "description": "Not ready: the database does not answer or its schema is not at "
            "the expected migration.",
        },
    },
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness for orchestrators: the database answers and its schema is at the latest
    migration (503 otherwise).
    """
    expected = app_state(request.app).schema_head
    current = await _schema_revision(request)
    ready = current is not None and current == expected
    return JSONResponse(
        status_code=200 if ready else 503,
        content={
            "status": "ready" if ready else "not_ready",
            "schema": {"current": current, "expected": expected},
        },
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "The Prometheus text exposition format (version 0.0.4).",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **errors(401),
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process (of every worker with `junction serve --workers N`).

    Open unless METRICS_BEARER_TOKEN is set; then scrapers send it as a bearer token (401
    otherwise).
    """
    state = app_state(request.app)
    require_scrape_token(request.headers.get("authorization"), state.settings.metrics_bearer_token)
    body, content_type = render_metrics(state.engine, state.cache)
    return Response(content=body, media_type=content_type)
