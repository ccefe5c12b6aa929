"""The console's forms when the input is wrong: a page (with the console's headers) rather than
the API's JSON, nothing written; a blank reason refused; a CSRF token of any characters is a
mismatch, not an error; htmx restoring a page gets the page; a history longer than a page."""

from __future__ import annotations

from typing import Any

import httpx

from app.admin.router import PAGE_SIZE
from app.admin.security import CONTENT_SECURITY_POLICY
from app.admin.sessions import SIGN_IN_COOKIE
from tests.admin.console import signed_in
from tests.conftest import TokenFactory, bearer

TENANT = "tenant-a"


async def _config_with_versions(
    client: httpx.AsyncClient, make_token: TokenFactory, versions: int
) -> str:
    service = bearer(make_token([TENANT], roles=["service"]))
    for zoom in range(versions):
        body = {
            "map_providers": [{"provider_name": "mapbox", "config_data": {"zoom": zoom}}],
            "change_reason": f"zoom {zoom}",
        }
        written = await client.post(f"/config/{TENANT}", json=body, headers=service)
        assert written.status_code == 200, written.text
    return str(written.json()["map_providers"][0]["id"])


async def _zoom(client: httpx.AsyncClient, make_token: TokenFactory) -> int:
    service = bearer(make_token([TENANT], roles=["service"]))
    document = (await client.get(f"/config/{TENANT}", headers=service)).json()
    return int(document["map_providers"][0]["config_data"]["zoom"])


async def test_a_form_the_schema_refuses_is_a_console_page_and_writes_nothing(
    client: httpx.AsyncClient, app: Any, make_token: TokenFactory
) -> None:
    config_id = await _config_with_versions(client, make_token, 2)
    csrf = await signed_in(client, app)
    response = await client.post(
        f"/admin/configs/{TENANT}/{config_id}/rollback",
        data={"csrf_token": csrf, "version": "one", "expected_version": "2", "reason": "r"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")
    assert CONTENT_SECURITY_POLICY in response.headers.get_list("content-security-policy")
    assert "version" in response.text
    assert await _zoom(client, make_token) == 1


async def test_a_rollback_the_api_would_refuse_is_refused_as_a_page(
    client: httpx.AsyncClient, app: Any, make_token: TokenFactory
) -> None:
    config_id = await _config_with_versions(client, make_token, 2)
    csrf = await signed_in(client, app)
    for field, value in (
        ("reason", "   "),
        ("reason", "a\x00b"),
        ("version", str(2**31)),
        ("expected_version", str(2**31)),
    ):
        form = {"csrf_token": csrf, "version": "1", "expected_version": "2", "reason": "why"}
        for action in ("rollback/preview", "rollback"):
            response = await client.post(
                f"/admin/configs/{TENANT}/{config_id}/{action}", data={**form, field: value}
            )
            assert response.status_code == 422, (field, value, action)
            assert response.headers["content-type"].startswith("text/html")
            assert field in response.text
    assert await _zoom(client, make_token) == 1


async def test_a_csrf_token_outside_ascii_is_refused_not_an_error(
    client: httpx.AsyncClient, app: Any
) -> None:
    await signed_in(client, app)
    response = await client.post(
        "/admin/workspaces/tenant-a/tier", data={"tier": "pro", "csrf_token": "jeton-é"}
    )
    assert response.status_code == 403
    # The sign-in form's double submit: its cookie is set, the form's value is not it.
    assert (await client.get("/admin/sign-in")).status_code == 200
    assert client.cookies.get(SIGN_IN_COOKIE, path="/admin")
    sign_in = await client.post(
        "/admin/sign-in", data={"bearer_token": "x", "csrf_token": "jeton-é"}
    )
    assert sign_in.status_code == 403
    assert "expired" in sign_in.text  # refused by the comparison, not for a missing cookie


async def test_htmx_restoring_a_page_from_history_gets_the_whole_page(
    client: httpx.AsyncClient, app: Any
) -> None:
    await signed_in(client, app)
    fragment = await client.get("/admin/workspaces", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    restored = await client.get(
        "/admin/workspaces",
        headers={"HX-Request": "true", "HX-History-Restore-Request": "true"},
    )
    assert restored.status_code == 200 and "<html" in restored.text


async def test_a_long_history_pages_and_an_older_version_can_still_be_restored(
    client: httpx.AsyncClient, app: Any, make_token: TokenFactory
) -> None:
    versions = PAGE_SIZE + 3
    config_id = await _config_with_versions(client, make_token, versions)
    csrf = await signed_in(client, app)
    first = await client.get(f"/admin/configs/{TENANT}/{config_id}")
    assert first.text.count("<tr data-version=") == PAGE_SIZE
    assert f'name="expected_version" value="{versions}"' in first.text
    older_link = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
    older = await client.get(f"/admin/configs/{TENANT}/{config_id}{older_link}")
    assert older.text.count("<tr data-version=") == 3
    assert '<tr data-version="1">' in older.text
    # The rollback form of an older page still rolls back from the newest version.
    assert f'name="expected_version" value="{versions}"' in older.text
    rolled = await client.post(
        f"/admin/configs/{TENANT}/{config_id}/rollback",
        data={
            "csrf_token": csrf,
            "version": "1",
            "expected_version": str(versions),
            "reason": "the first zoom",
        },
    )
    assert rolled.status_code == 303, rolled.text
    assert await _zoom(client, make_token) == 0
