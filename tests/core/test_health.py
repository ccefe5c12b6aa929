"""Health, liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from sqlalchemy import text

from app.core import migrations
from app.core.config import Settings
from app.main import create_app
from app.state import app_state
from tests.conftest import bearer, build_settings, running_app


async def test_health_reports_ok_with_database_and_cache(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["cache"].endswith(":ok")
    assert body["version"]


async def test_livez_answers_without_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/livez")
    assert response.status_code == 200


async def test_readyz_checks_the_schema_is_at_head(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    schema = response.json()["schema"]
    assert schema["current"] == schema["expected"] is not None


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/livez")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert 'junction_http_requests_total{method="GET",route="/livez",status="200"}' in response.text
    assert "junction_db_pool_connections" in response.text
    assert "junction_cache_available" in response.text


async def test_request_id_is_returned_and_echoed(client: httpx.AsyncClient) -> None:
    fresh = await client.get("/livez")
    assert len(fresh.headers["x-request-id"]) >= 16
    echoed = await client.get("/livez", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"


async def test_metrics_need_the_bearer_token_when_one_is_set(database_url: str) -> None:
    settings = build_settings(database_url, metrics_bearer_token="scrape-token-0123456789")
    async with running_app(settings) as (_app, client):
        missing = await client.get("/metrics")
        wrong = await client.get("/metrics", headers=bearer("scrape-token-012345678X"))
        right = await client.get("/metrics", headers=bearer("scrape-token-0123456789"))
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    assert "junction_http_requests_total" not in wrong.text
    assert right.status_code == 200
    assert "junction_http_requests_total" in right.text


async def test_a_method_a_client_invents_is_counted_as_other(client: httpx.AsyncClient) -> None:
    await client.request("BREWCOFFEE", "/livez")
    text = (await client.get("/metrics")).text
    assert "BREWCOFFEE" not in text
    assert 'junction_http_requests_total{method="OTHER",route="/livez",status="405"}' in text


def _validator(schema_name: str) -> Any:
    document = create_app(Settings(_env_file=None)).openapi()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


async def test_health_and_readiness_answer_the_bodies_their_documents_declare(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/junction.db"
    await asyncio.to_thread(migrations.upgrade, url)
    async with running_app(build_settings(url, redis_url=None)) as (app, client):
        health = await client.get("/api/v1/health")
        ready = await client.get("/readyz")
        # A schema behind this code's: readiness answers 503 with the same report.
        async with app_state(app).engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        behind = await client.get("/readyz")
    assert health.status_code == ready.status_code == 200
    assert behind.status_code == 503
    assert behind.json() == {
        "status": "not_ready",
        "schema": {"current": "0001", "expected": migrations.head_revision()},
    }
    assert list(_validator("HealthReport").iter_errors(health.json())) == []
    for answer in (ready, behind):
        assert list(_validator("Readiness").iter_errors(answer.json())) == []
