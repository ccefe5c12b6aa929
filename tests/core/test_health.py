"""Health, liveness, readiness and metrics."""

from __future__ import annotations

import httpx


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
