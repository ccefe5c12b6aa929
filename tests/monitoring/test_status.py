"""GET /monitoring/status, the loop's health check and its Prometheus figures."""

from __future__ import annotations

from typing import Any

import httpx

from app.core.config import Settings
from app.monitoring.lifecycle import build_monitor
from app.state import app_state
from tests.conftest import bearer, build_settings, running_app
from tests.monitoring.factories import make_client, make_connection


async def test_status_needs_the_admin_role(client: httpx.AsyncClient, make_token: Any) -> None:
    response = await client.get("/monitoring/status", headers=bearer(make_token(roles=["service"])))
    assert response.status_code == 403


async def test_status_counts_stored_statuses_per_provider(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    gsc = await make_client(app, provider="google_search_console")
    wix = await make_client(app, tenant_id="tenant-b", provider="wix")
    await make_connection(app, gsc, branch_id="a")
    await make_connection(app, gsc, branch_id="b", status="needs_reauth")
    await make_connection(app, wix, branch_id="a", status="refresh_failed")
    response = await client.get(
        "/monitoring/status", headers=bearer(make_token(tenants=["*"], roles=["admin"]))
    )
    assert response.status_code == 200
    providers = {p["provider"]: p for p in response.json()["providers"]}
    assert providers["google_search_console"]["total"] == 2
    assert providers["google_search_console"]["statuses"] == {
        "active": 1,
        "refresh_failed": 0,
        "needs_reauth": 1,
    }
    assert providers["wix"]["statuses"]["refresh_failed"] == 1


async def test_status_says_not_running_when_the_loop_is_disabled(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    response = await client.get(
        "/monitoring/status", headers=bearer(make_token(tenants=["*"], roles=["admin"]))
    )
    body = response.json()
    assert body["running"] is False
    assert body["last_tick"] is None


async def test_an_enabled_loop_runs_with_the_app_and_reports_its_ticks(
    database_url: str, make_token: Any
) -> None:
    settings = build_settings(database_url, monitor_enabled=True, monitor_interval_s=0.05)
    async with running_app(settings) as (app, client):
        health = (await client.get("/api/v1/health")).json()
        assert health["checks"]["monitor"] == "running"
        await app_state(app).monitoring.loop.run_once()
        response = await client.get(
            "/monitoring/status", headers=bearer(make_token(tenants=["*"], roles=["admin"]))
        )
        body = response.json()
        assert body["running"] is True
        assert body["last_tick"]["due"] == 0
        assert body["last_tick"]["duration_s"] is not None
    assert app_state(app).monitoring.loop.running is False


async def test_metrics_expose_the_loop_figures(database_url: str) -> None:
    settings: Settings = build_settings(database_url, monitor_enabled=True, monitor_interval_s=0.05)
    async with running_app(settings) as (app, client):
        await app_state(app).monitoring.loop.run_once()
        text = (await client.get("/metrics")).text
    assert "junction_monitor_running 1.0" in text
    assert "junction_monitor_last_tick_duration_seconds" in text
    assert 'junction_monitor_last_tick_connections{outcome="due"}' in text


async def test_status_needs_an_admin_of_every_tenant(
    client: httpx.AsyncClient, make_token: Any
) -> None:
    token = make_token(tenants=["tenant-a"], roles=["admin"])
    response = await client.get("/monitoring/status", headers=bearer(token))
    assert response.status_code == 403


_CUSTOM_SETTINGS = {
    "authorization_url": "https://auth.example.com/authorize",
    "token_url": "https://auth.example.com/token",
}


async def test_custom_provider_names_never_become_metric_labels(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    acme = await make_client(app, provider="acme_private_name", provider_settings=_CUSTOM_SETTINGS)
    other = await make_client(
        app, tenant_id="tenant-b", provider="other_tenant_slug", provider_settings=_CUSTOM_SETTINGS
    )
    wix = await make_client(app, provider="wix")
    await make_connection(app, acme, branch_id="a")
    await make_connection(app, other, branch_id="a")
    await make_connection(app, wix, branch_id="a")
    admin = bearer(make_token(tenants=["*"], roles=["admin"]))
    status = (await client.get("/monitoring/status", headers=admin)).json()
    # The admin's own status report keeps the names; only the public metrics fold them.
    assert {p["provider"] for p in status["providers"]} >= {"acme_private_name", "wix"}
    text = (await client.get("/metrics")).text
    assert "acme_private_name" not in text
    assert "other_tenant_slug" not in text
    assert 'junction_monitor_connections{provider="custom",status="active"} 2.0' in text
    assert 'junction_monitor_connections{provider="wix",status="active"} 1.0' in text


async def test_the_loop_counts_refreshes_of_custom_providers_under_one_label(
    client: httpx.AsyncClient, app: Any
) -> None:
    acme = await make_client(app, provider="acme_refresh_slug", provider_settings=_CUSTOM_SETTINGS)
    await make_connection(app, acme, refresh_due_in_s=-60, expires_in_s=30)
    state = app_state(app)
    tick = await build_monitor(state.settings, state.sessionmaker, state.tokens).run_once()
    assert tick.due == 1
    text = (await client.get("/metrics")).text
    assert "acme_refresh_slug" not in text
    assert 'junction_monitor_refreshes_total{provider="custom"' in text
