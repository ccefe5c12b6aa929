"""GET /token-management/connections: a tenant's connections, filtered, paginated, counted."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import bearer
from tests.monitoring.factories import make_client, make_connection

ROUTE = "/token-management/connections"


async def listing(
    client: httpx.AsyncClient, token: str, expected: int = 200, **params: Any
) -> dict[str, Any]:
    response = await client.get(ROUTE, params=params, headers=bearer(token))
    assert response.status_code == expected, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_lists_each_connection_with_its_reported_status(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    gsc = await make_client(app, provider="google_search_console")
    await make_connection(app, gsc, branch_id="fresh", expires_in_s=3600)
    await make_connection(app, gsc, branch_id="lapsed", expires_in_s=-10)
    await make_connection(app, gsc, branch_id="soon", expires_in_s=30)  # inside the margin
    await make_connection(app, gsc, branch_id="dead", status="needs_reauth", last_error="x")
    body = await listing(client, make_token())
    statuses = {item["branch_id"]: item["status"] for item in body["items"]}
    assert statuses == {
        "dead": "needs_reauth",
        "fresh": "active",
        "lapsed": "expired",
        "soon": "expiring",
    }
    dead = next(item for item in body["items"] if item["branch_id"] == "dead")
    assert dead["last_error"] == "x" and dead["client_status"] == "active"
    assert "access_token" not in dead and "refresh_token" not in str(body).replace(
        "refresh_token_expires_at", ""
    )


async def test_counts_cover_every_status_and_ignore_the_status_filter(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    gsc = await make_client(app, provider="google_search_console")
    wix = await make_client(app, provider="wix")
    await make_connection(app, gsc, branch_id="a")
    await make_connection(app, gsc, branch_id="b", status="refresh_failed")
    await make_connection(app, wix, branch_id="c", status="needs_reauth")
    body = await listing(client, make_token(), status="refresh_failed")
    assert [item["branch_id"] for item in body["items"]] == ["b"]
    assert body["total"] == 3
    assert body["counts"] == {
        "active": 1,
        "expiring": 0,
        "expired": 0,
        "refresh_failed": 1,
        "needs_reauth": 1,
    }
    only_wix = await listing(client, make_token(), provider="wix")
    assert [item["branch_id"] for item in only_wix["items"]] == ["c"]
    assert only_wix["total"] == 1 and only_wix["counts"]["needs_reauth"] == 1


async def test_filters_by_branch(client: httpx.AsyncClient, app: Any, make_token: Any) -> None:
    gsc = await make_client(app, provider="google_search_console")
    wix = await make_client(app, provider="wix")
    await make_connection(app, gsc, branch_id="shop-1")
    await make_connection(app, wix, branch_id="shop-1")
    await make_connection(app, wix, branch_id="shop-2")
    body = await listing(client, make_token(), branch_id="shop-1")
    assert [(i["provider"], i["branch_id"]) for i in body["items"]] == [
        ("google_search_console", "shop-1"),
        ("wix", "shop-1"),
    ]
    assert body["total"] == 2


async def test_pages_through_every_connection_once_in_order(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    gsc = await make_client(app, provider="google_search_console")
    wix = await make_client(app, provider="wix")
    expected = []
    for number in range(7):
        branch = f"b-{number}"
        await make_connection(app, gsc, branch_id=branch)
        await make_connection(app, wix, branch_id=branch)
        expected += [("google_search_console", branch), ("wix", branch)]
    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = await listing(client, make_token(), **params)
        pages += 1
        seen += [(item["provider"], item["branch_id"]) for item in body["items"]]
        assert body["total"] == 14
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(expected)
    assert pages == 5


async def test_another_tenants_connections_are_not_listed(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    theirs = await make_client(app, tenant_id="tenant-b", provider="wix")
    await make_connection(app, theirs, branch_id="secret-branch")
    body = await listing(client, make_token())
    assert body["items"] == [] and body["total"] == 0
    refused = await client.get(
        ROUTE, params={"tenant_id": "tenant-b"}, headers=bearer(make_token())
    )
    assert refused.status_code == 403


async def test_bad_filters_and_cursors_are_clear_4xx(
    client: httpx.AsyncClient, app: Any, make_token: Any
) -> None:
    token = make_token()
    for params in (
        {"status": "sleeping"},
        {"provider": "Not A Provider"},
        {"limit": 0},
        {"limit": 10_000},
        {"branch_id": "../etc"},
    ):
        body = await listing(client, token, expected=422, **params)
        assert body["error"] and body["fields"], params
    for cursor in ("garbage", "eyJrIjogWyJhIl19", "eyJrIjogWzEsIDJdfQ"):
        body = await listing(client, token, expected=400, cursor=cursor)
        assert body["error"] == "invalid_cursor"


async def test_needs_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get(ROUTE)
    assert response.status_code == 401
