"""The console in a real browser: Playwright driving Debian's Chromium against a uvicorn server.

Screenshots of every page: var/test-artifacts/console/<backend>/*.png.
"""

from __future__ import annotations

from typing import Any

import httpx
from playwright.async_api import expect

from app.devtools.oauth_provider import LocalOAuthServer
from tests.admin.conftest import admin_link, screenshot
from tests.conftest import IS_POSTGRES, REDIS_URL, TokenFactory, bearer, postgres_only
from tests.oauth_fixtures import connect_branch, register_client
from tests.replica_server import ReplicaServer


async def _sign_in(page: Any, server: ReplicaServer, database_url: str) -> None:
    await page.goto(admin_link(server, database_url))
    await page.get_by_role("button", name="Open the console").click()
    await page.wait_for_url(f"{server.base_url}/admin")


async def _preview_rollback_to_1(
    page: Any, server: ReplicaServer, tenant_id: str, config_id: str, reason: str
) -> None:
    """Open the configuration's history page and preview a rollback to its version 1."""
    await page.goto(f"{server.base_url}/admin/configs/{tenant_id}/{config_id}")
    await page.get_by_label("Version to restore").fill("1")
    await page.get_by_label("Reason (required)").fill(reason)
    await page.get_by_role("button", name="Preview the rollback").click()


async def _connect(
    api: httpx.AsyncClient, token: str, oauth: LocalOAuthServer, tenant_id: str
) -> None:
    """Two custom providers on the local OAuth server, a connection on each."""
    for provider, branch in (("local_oauth", "branch-1"), ("other_oauth", "branch-2")):
        registered = await register_client(
            api,
            token,
            oauth,
            provider=provider,
            tenant_id=tenant_id,
            **oauth.provider_urls(),
            refresh_margin_s=60,
        )
        await connect_branch(
            api,
            token,
            oauth,
            branch,
            provider=provider,
            client_pk=registered["id"],
            tenant_id=tenant_id,
        )


async def _seed(api: httpx.AsyncClient, make_token: TokenFactory, tenant_id: str) -> str:
    """A workspace with usage and a configuration with two versions; the config's id."""
    admin = bearer(make_token(tenants=["*"], roles=["admin"]))
    service = bearer(make_token(tenants=[tenant_id], roles=["service"]))
    assert (
        await api.put(
            f"/api/admin/workspaces/{tenant_id}",
            json={"name": "Acme", "tier": "pro"},
            headers=admin,
        )
    ).status_code == 200
    for model, tokens in (("gpt-4o", 1200), ("gpt-4o-mini", 300)):
        body = {
            "tenant_id": tenant_id,
            "model": model,
            "prompt_tokens": tokens,
            "completion_tokens": 100,
            "source": "chat",
        }
        assert (await api.post("/usage/openai", json=body, headers=service)).status_code in (
            200,
            201,
        )
    for zoom in (10, 12):
        written = await api.post(
            f"/config/{tenant_id}",
            json={
                "map_providers": [
                    {
                        "provider_name": "mapbox",
                        "priority": "primary",
                        "enabled": True,
                        "config_data": {"zoom": zoom},
                        "api_key": "sk-secret-1234",
                    }
                ],
                "change_reason": f"zoom {zoom}",
            },
            headers=service,
        )
        assert written.status_code == 200, written.text
    document = written.json()
    return str(document["map_providers"][0]["id"])


async def test_every_page_after_signing_in_with_an_admin_link(
    page: Any,
    console_server: ReplicaServer,
    database_url: str,
    api: httpx.AsyncClient,
    make_token: TokenFactory,
    oauth_server: LocalOAuthServer,
    tenant_id: str,
) -> None:
    token = make_token(tenants=[tenant_id], roles=["admin"])
    await _connect(api, token, oauth_server, tenant_id)
    config_id = await _seed(api, make_token, tenant_id)
    await page.goto(admin_link(console_server, database_url))
    await screenshot(page, "link")  # what the printed link opens: one button, nothing spent
    await page.get_by_role("button", name="Open the console").click()
    await page.wait_for_url(f"{console_server.base_url}/admin")

    await page.get_by_role("heading", name="Overview").wait_for()
    by_provider = page.locator("[aria-labelledby=connections-h]")
    assert await by_provider.get_by_role("row", name="local_oauth").count() == 1
    events = page.locator("[aria-labelledby=events-h]")
    assert await events.get_by_role("link", name=tenant_id).count() == 2  # connected, twice
    await screenshot(page, "overview")

    await page.get_by_role("link", name="Workspaces", exact=True).click()
    await page.get_by_label("Search by id or name").fill(tenant_id)
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("link", name=tenant_id).wait_for()
    assert await page.locator("#workspace-rows tbody tr").count() == 1
    await screenshot(page, "workspaces")

    await page.get_by_role("link", name=tenant_id).click()
    await page.get_by_role("heading", name=f"Workspace {tenant_id}").wait_for()
    await page.locator("#usage-chart[data-drawn=true]").wait_for()
    totals = page.locator("#usage-totals")
    assert "gpt-4o-mini" in await totals.inner_text()
    await screenshot(page, "workspace")

    await page.get_by_role("link", name="90 days").click()
    await page.locator("#usage-totals caption", has_text="last 90 days").wait_for()
    await page.locator("#usage-chart[data-drawn=true]").wait_for()

    await page.get_by_role("link", name="Provider configurations").click()
    await page.get_by_label("Workspace id").fill(tenant_id)
    await page.get_by_role("button", name="Show").click()
    await page.get_by_role("link", name="History of mapbox").wait_for()
    body = await page.locator("main").inner_text()
    assert "sk-secret-1234" not in body and "1234" in body  # masked: last four only
    await screenshot(page, "configs")

    await page.get_by_role("link", name="History of mapbox").click()
    await page.wait_for_url(f"**/admin/configs/{tenant_id}/{config_id}")
    assert await page.locator("#history tbody tr").count() == 2
    await screenshot(page, "config-history")
    await page.get_by_label("From version").fill("1")
    await page.get_by_label("To version").fill("2")
    await page.get_by_role("button", name="Compare").click()
    change = page.locator("tr[data-field='config_data.zoom']")
    await expect(change.locator(".removed")).to_have_text("10")
    await expect(change.locator(".added")).to_have_text("12")
    await screenshot(page, "config-diff")

    await page.goto(f"{console_server.base_url}/admin/sign-in")
    await screenshot(page, "sign-in")


async def test_connections_filter_by_provider_and_status(
    page: Any,
    console_server: ReplicaServer,
    database_url: str,
    api: httpx.AsyncClient,
    make_token: TokenFactory,
    oauth_server: LocalOAuthServer,
    tenant_id: str,
) -> None:
    await _connect(api, make_token(tenants=[tenant_id], roles=["admin"]), oauth_server, tenant_id)
    await _sign_in(page, console_server, database_url)
    await page.goto(f"{console_server.base_url}/admin/workspaces/{tenant_id}")
    rows = page.locator("#connection-table tbody tr[data-provider]")
    assert await rows.count() == 2

    await page.get_by_label("Provider").select_option("other_oauth")
    await expect(rows).to_have_count(1)
    assert await rows.first.get_attribute("data-provider") == "other_oauth"
    await screenshot(page, "workspace-filtered")

    await page.get_by_label("Status").select_option("needs_reauth")
    await page.get_by_text("No connection matches.").wait_for()
    await page.get_by_label("Status").select_option("active")
    await expect(rows).to_have_count(1)
    await page.get_by_label("Provider").select_option("")
    await expect(rows).to_have_count(2)


async def test_force_refresh_from_the_console_reaches_the_oauth_server(
    page: Any,
    console_server: ReplicaServer,
    database_url: str,
    api: httpx.AsyncClient,
    make_token: TokenFactory,
    oauth_server: LocalOAuthServer,
    tenant_id: str,
) -> None:
    await _connect(api, make_token(tenants=[tenant_id], roles=["admin"]), oauth_server, tenant_id)
    before = oauth_server.refresh_calls
    await _sign_in(page, console_server, database_url)
    await page.goto(f"{console_server.base_url}/admin/workspaces/{tenant_id}")
    asked: list[str] = []

    async def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    await page.get_by_role("button", name="Force a refresh of local_oauth / branch-1").click()
    await page.locator("#connection-notice", has_text="Refreshed local_oauth / branch-1").wait_for()
    assert asked == ["Refresh local_oauth / branch-1 now?"]
    assert oauth_server.refresh_calls == before + 1

    await page.get_by_role("button", name="Disconnect local_oauth / branch-1").click()
    await page.locator("#connection-notice", has_text="Disconnected local_oauth").wait_for()
    # The list reloads without the disconnected connection.
    await expect(page.locator("#connection-table tbody tr[data-provider]")).to_have_count(1)
    await screenshot(page, "workspace-refreshed")


async def test_a_declined_confirmation_refreshes_nothing(
    page: Any,
    console_server: ReplicaServer,
    database_url: str,
    api: httpx.AsyncClient,
    make_token: TokenFactory,
    oauth_server: LocalOAuthServer,
    tenant_id: str,
) -> None:
    await _connect(api, make_token(tenants=[tenant_id], roles=["admin"]), oauth_server, tenant_id)
    await _sign_in(page, console_server, database_url)
    await page.goto(f"{console_server.base_url}/admin/workspaces/{tenant_id}")

    async def decline(dialog: Any) -> None:
        await dialog.dismiss()

    page.on("dialog", decline)
    before = oauth_server.refresh_calls
    await page.get_by_role("button", name="Disconnect local_oauth / branch-1").click()
    await page.get_by_role("button", name="Force a refresh of local_oauth / branch-1").click()
    await page.wait_for_timeout(300)
    assert oauth_server.refresh_calls == before
    listed = await api.get(
        "/token-management/connections",
        params={"tenant_id": tenant_id},
        headers=bearer(make_token(tenants=[tenant_id])),
    )
    assert listed.json()["total"] == 2


async def test_rollback_through_the_console_shows_in_the_api(
    page: Any,
    console_server: ReplicaServer,
    database_url: str,
    api: httpx.AsyncClient,
    make_token: TokenFactory,
    tenant_id: str,
) -> None:
    config_id = await _seed(api, make_token, tenant_id)
    await _sign_in(page, console_server, database_url)
    await _preview_rollback_to_1(
        page, console_server, tenant_id, config_id, "zoom 12 broke the map"
    )
    change = page.locator("tr[data-field='config_data.zoom']")
    await expect(change.locator(".removed")).to_have_text("12")
    await expect(change.locator(".added")).to_have_text("10")
    await screenshot(page, "config-rollback-preview")
    await page.get_by_role("button", name="Roll back").click()
    await page.get_by_text("Done: rolled back.").wait_for()
    await screenshot(page, "config-rolled-back")

    member = bearer(make_token(tenants=[tenant_id]))
    current = (await api.get(f"/config/{tenant_id}", headers=member)).json()
    assert current["map_providers"][0]["config_data"] == {"zoom": 10}
    assert current["map_providers"][0]["version"] == 3
    history = (await api.get(f"/config/{tenant_id}/history", headers=member)).json()["items"]
    newest = history[0]
    assert (newest["change_type"], newest["source_version"]) == ("rolled_back", 1)
    assert newest["change_reason"] == "zoom 12 broke the map"
    assert newest["changed_by"] == "console-admin"


async def test_a_stale_rollback_page_gets_the_409(
    page: Any,
    console_server: ReplicaServer,
    database_url: str,
    api: httpx.AsyncClient,
    make_token: TokenFactory,
    tenant_id: str,
) -> None:
    config_id = await _seed(api, make_token, tenant_id)
    await _sign_in(page, console_server, database_url)
    service = bearer(make_token(tenants=[tenant_id], roles=["service"]))
    await _preview_rollback_to_1(page, console_server, tenant_id, config_id, "back to 10")
    await page.get_by_role("button", name="Roll back").wait_for()
    # Someone else writes while the preview is open.
    written = await api.post(
        f"/config/{tenant_id}",
        json={
            "map_providers": [
                {
                    "provider_name": "mapbox",
                    "priority": "primary",
                    "enabled": True,
                    "config_data": {"zoom": 16},
                }
            ]
        },
        headers=service,
    )
    assert written.status_code == 200
    async with page.expect_response(lambda r: r.url.endswith("/rollback")) as answer:
        await page.get_by_role("button", name="Roll back").click()
    assert (await answer.value).status == 409
    await page.locator("[data-code=version_conflict]").wait_for()
    await screenshot(page, "config-conflict")
    page.console_errors.clear()  # the browser logs the 409 itself
    current = (await api.get(f"/config/{tenant_id}", headers=service)).json()
    assert current["map_providers"][0]["config_data"] == {"zoom": 16}


async def test_the_session_cookie_without_its_csrf_token_changes_nothing(
    page: Any,
    console_server: ReplicaServer,
    database_url: str,
    api: httpx.AsyncClient,
    make_token: TokenFactory,
    tenant_id: str,
) -> None:
    admin = bearer(make_token(tenants=["*"], roles=["admin"]))
    await api.put(f"/api/admin/workspaces/{tenant_id}", json={"tier": "free"}, headers=admin)
    await _sign_in(page, console_server, database_url)
    # The browser's own request context: it sends the session cookie, as a forged form would.
    for extra in ({}, {"csrf_token": "forged"}):
        response = await page.request.post(
            f"{console_server.base_url}/admin/workspaces/{tenant_id}/tier",
            form={"tier": "enterprise", **extra},
        )
        assert response.status == 403
    workspace = await api.get(f"/api/admin/workspaces/{tenant_id}", headers=admin)
    assert workspace.json()["tier"] == "free"

    # The page's own form carries the token and succeeds.
    await page.goto(f"{console_server.base_url}/admin/workspaces/{tenant_id}")
    await page.get_by_label("Workspace tier").select_option("enterprise")
    await page.get_by_role("button", name="Save the tier").click()
    await page.get_by_text("Done: tier.").wait_for()
    workspace = await api.get(f"/api/admin/workspaces/{tenant_id}", headers=admin)
    assert workspace.json()["tier"] == "enterprise"


async def test_keyboard_reaches_the_navigation_and_forms(
    page: Any, console_server: ReplicaServer, database_url: str
) -> None:
    await _sign_in(page, console_server, database_url)
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Overview")).to_be_focused()
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/admin/workspaces")
    await page.keyboard.press("Tab")  # the skip link
    await page.keyboard.press("Enter")
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Search by id or name")).to_be_focused()


async def test_a_change_through_one_replicas_console_shows_through_the_other(
    page: Any,
    console_server: ReplicaServer,
    database_url: str,
    api: httpx.AsyncClient,
    make_token: TokenFactory,
    tenant_id: str,
) -> None:
    admin = bearer(make_token(tenants=["*"], roles=["admin"]))
    await api.put(f"/api/admin/workspaces/{tenant_id}", json={"tier": "free"}, headers=admin)
    other = ReplicaServer(database_url, REDIS_URL if IS_POSTGRES else None)
    try:
        await _sign_in(page, console_server, database_url)
        await page.goto(f"{console_server.base_url}/admin/workspaces/{tenant_id}")
        await page.get_by_label("Workspace tier").select_option("enterprise")
        await page.get_by_role("button", name="Save the tier").click()
        await page.get_by_text("Done: tier.").wait_for()
        # The session is in the database: the other replica knows it (the cookie is per host).
        await page.goto(f"{other.base_url}/admin/workspaces/{tenant_id}")
        await expect(page.get_by_label("Workspace tier")).to_have_value("enterprise")
        await screenshot(page, "workspace-other-replica")
    finally:
        other.stop()


@postgres_only
async def test_a_rollback_through_one_replicas_console_is_what_the_others_api_serves(
    page: Any,
    console_server: ReplicaServer,
    database_url: str,
    api: httpx.AsyncClient,
    make_token: TokenFactory,
    tenant_id: str,
) -> None:
    config_id = await _seed(api, make_token, tenant_id)
    member = bearer(make_token(tenants=[tenant_id]))
    other = ReplicaServer(database_url, REDIS_URL)
    try:
        async with httpx.AsyncClient(base_url=other.base_url) as through_other:
            # The other replica has the current document (zoom 12) in its caches.
            for _ in range(2):
                warm = await through_other.get(f"/config/{tenant_id}", headers=member)
                assert warm.json()["map_providers"][0]["config_data"] == {"zoom": 12}
            await _sign_in(page, console_server, database_url)
            await _preview_rollback_to_1(page, console_server, tenant_id, config_id, "back to 10")
            await page.get_by_role("button", name="Roll back").click()
            await page.get_by_text("Done: rolled back.").wait_for()
            # The console's answer came after the change was committed and every replica's
            # caches were told: the other replica serves the rolled-back document at once.
            served = await through_other.get(f"/config/{tenant_id}", headers=member)
        assert served.json()["map_providers"][0]["config_data"] == {"zoom": 10}
        assert served.json()["map_providers"][0]["version"] == 3
    finally:
        other.stop()
