"""One JSON error shape: validation names the field, unknown fields are refused, no stack traces."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import APIRouter

from app.core.config import Settings
from app.state import app_state
from tests.conftest import TokenFactory, bearer, build_settings, running_app

ROUTE = "/api/admin/workspaces/tenant-a"
USAGE_ROUTE = f"{ROUTE}/usage"


async def test_an_unknown_field_is_refused_by_name(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    response = await client.put(
        ROUTE, headers=bearer(make_token(roles=["admin"])), json={"tier": "pro", "tierr": "x"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["fields"] == [{"field": "tierr", "message": "unknown field"}]


async def test_a_validation_error_names_the_field(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    response = await client.put(
        ROUTE, headers=bearer(make_token(roles=["admin"])), json={"name": ""}
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("name:")


async def test_a_malformed_json_body_is_a_422_not_a_500(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = {**bearer(make_token(roles=["admin"])), "content-type": "application/json"}
    response = await client.put(ROUTE, headers=headers, content=b"{not json")
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


async def test_an_unknown_route_answers_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "Not Found"}


async def test_a_bad_tenant_id_in_the_path_is_a_422(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    response = await client.get(
        "/api/admin/workspaces/bad%20tenant!",
        headers=bearer(make_token(tenants=["*"], roles=["admin"])),
    )
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "path.tenant_id"


async def test_an_unexpected_error_is_a_json_500_without_a_stack_trace(settings: Settings) -> None:
    async with running_app(settings) as (app, _):
        router = APIRouter()

        @router.get("/boom")
        async def boom() -> None:
            raise RuntimeError("internal detail that must not leak: password=hunter2")

        app.include_router(router)
        # Starlette re-raises after answering so servers can log; the client must still get JSON.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "internal_error"
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert body["request_id"] == response.headers["x-request-id"]


async def test_an_exhausted_database_pool_answers_503_not_a_hang(database_url: str) -> None:
    settings = build_settings(
        database_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=0.2
    )
    async with running_app(settings) as (app, client):
        token = build_token(settings)
        async with app_state(app).engine.connect() as held:  # the only pooled connection
            await held.exec_driver_sql("SELECT 1")
            response = await asyncio.wait_for(client.get(USAGE_ROUTE, headers=bearer(token)), 10)
        assert response.status_code == 503
        assert response.json()["error"] == "database_unavailable"
        assert (await client.get(USAGE_ROUTE, headers=bearer(token))).status_code == 200


def build_token(settings: Settings) -> str:
    from app.core.auth import mint_token

    return mint_token(settings, sub="u", tenants=["tenant-a"], roles=["admin"])


async def test_a_nul_character_in_a_body_is_a_422_on_both_databases(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = bearer(make_token(roles=["admin"]))
    response = await client.put(ROUTE, headers=headers, json={"name": "Acme\u0000Corp"})
    assert response.status_code == 422
    assert "NUL" in response.json()["detail"]
    read = await client.get(ROUTE, headers=headers)
    assert read.status_code == 404  # the refused write created nothing


async def test_an_unpaired_surrogate_in_a_body_is_a_422(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    headers = {**bearer(make_token(roles=["admin"])), "content-type": "application/json"}
    response = await client.put(ROUTE, headers=headers, content=b'{"name": "x\\ud800y"}')
    assert response.status_code == 422


async def test_a_rule_a_field_breaks_answers_the_schema_errors_shape(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    # The schema accepts any tier string; the service refuses an unknown one, in the same shape.
    response = await client.put(
        ROUTE, headers=bearer(make_token(roles=["admin"])), json={"tier": "platinum"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["fields"] == [
        {"field": "tier", "message": "unknown tier 'platinum' (known: enterprise, free, pro)"}
    ]
    assert body["detail"] == f"tier: {body['fields'][0]['message']}"


async def test_a_405_allows_every_method_of_the_path_not_just_the_first_routes(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    # GET /config/{tenant_id} is a hot route on the app; POST and DELETE live on its router.
    response = await client.put("/config/tenant-a", headers=bearer(make_token()), json={})
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert response.headers["allow"] == "GET, POST, DELETE"


async def test_a_405_on_a_path_with_one_route_allows_its_methods(
    client: httpx.AsyncClient,
) -> None:
    response = await client.delete("/livez")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


async def test_a_405_inside_one_router_allows_every_method_of_the_path(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    response = await client.put("/token-management/clients/c1", headers=bearer(make_token()))
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, PATCH, DELETE"
