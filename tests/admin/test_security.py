"""The console's security properties over plain HTTP: links, sessions, cookies, CSRF, CSP."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import httpx
from sqlalchemy import update

from app.admin.models import AdminSession
from app.admin.security import CONTENT_SECURITY_POLICY
from app.admin.sessions import SESSION_COOKIE, digest
from app.core.db import utcnow
from app.state import app_state
from app.workspaces.models import Workspace
from tests.admin.console import csrf_of, issue_link, signed_in, use_link
from tests.conftest import TokenFactory


async def test_a_link_opens_a_session(client: httpx.AsyncClient, app: Any) -> None:
    response = await use_link(client, await issue_link(app))
    assert response.status_code == 303
    assert response.headers["location"] == "/admin"
    assert (await client.get("/admin")).status_code == 200


async def test_a_link_works_once(client: httpx.AsyncClient, app: Any) -> None:
    secret = await issue_link(app)
    assert (await use_link(client, secret)).status_code == 303
    client.cookies.clear()
    again = await use_link(client, secret)
    assert again.status_code == 401
    assert "already used or expired" in again.text
    assert (await client.get("/admin")).status_code == 303


async def test_an_expired_link_opens_nothing(client: httpx.AsyncClient, app: Any) -> None:
    secret = await issue_link(app)
    async with app_state(app).sessionmaker() as session, session.begin():
        await session.execute(
            update(AdminSession)
            .where(AdminSession.token_hash == digest(secret))
            .values(expires_at=utcnow())
        )
    assert (await use_link(client, secret)).status_code == 401


async def test_links_are_stored_only_hashed(client: httpx.AsyncClient, app: Any) -> None:
    secret = await issue_link(app)
    async with app_state(app).sessionmaker() as session:
        row = await session.get(AdminSession, digest(secret))
        assert row is not None
        assert secret not in (row.token_hash, row.csrf_token)


async def test_the_session_cookie_is_httponly_strict_and_scoped(
    client: httpx.AsyncClient, app: Any
) -> None:
    response = await use_link(client, await issue_link(app))
    cookie = next(
        value
        for name, value in response.headers.multi_items()
        if name == "set-cookie" and value.startswith(SESSION_COOKIE)
    )
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert "path=/admin" in flags
    assert any(flag.startswith("expires=") for flag in flags)
    # ENVIRONMENT=test is a development environment: plain http on localhost.
    assert "secure" not in flags


async def test_outside_dev_the_session_cookie_is_secure(database_url: str) -> None:
    from tests.conftest import build_settings, running_app

    production = build_settings(
        database_url,
        environment="production",
        auth_jwt_secret="x7Qm2v9LpR4tW8zK1nB6cY3hF5jD0sGa",
        encryption_keys="k1:Y29uc29sZS10ZXN0cy1rZXktb2YtMzItYnl0ZXMhISE=",
    )
    async with running_app(production) as (app, _):
        # Secure cookies come back over https only.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://junction.test") as tls:
            response = await use_link(tls, await issue_link(app))
        assert response.status_code == 303
        cookie = response.headers["set-cookie"].lower()
        assert "; secure" in cookie


async def test_console_pages_send_a_strict_csp(client: httpx.AsyncClient, app: Any) -> None:
    await signed_in(client, app)
    for path in ("/admin", "/admin/workspaces", "/admin/configs", "/admin/sign-in"):
        response = await client.get(path)
        policies = response.headers.get_list("content-security-policy")
        assert CONTENT_SECURITY_POLICY in policies, path
        assert not any("unsafe-" in policy for policy in policies)
        assert response.headers["x-frame-options"] == "DENY"
        assert "<script>" not in response.text  # every script is a file: <script src=...>


async def test_without_a_session_pages_send_to_the_sign_in(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/workspaces")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/sign-in"


async def _tier(app: Any, tenant_id: str) -> str:
    async with app_state(app).sessionmaker() as session:
        workspace = await session.get(Workspace, tenant_id)
        assert workspace is not None
        return workspace.tier


async def _workspace(app: Any, tenant_id: str) -> None:
    async with app_state(app).sessionmaker() as session, session.begin():
        session.add(Workspace(id=tenant_id, tier="free"))


async def test_a_session_without_its_csrf_token_changes_nothing(
    client: httpx.AsyncClient, app: Any
) -> None:
    await _workspace(app, "tenant-a")
    csrf = await signed_in(client, app)
    for attempt in ({}, {"csrf_token": "not-the-token"}):
        response = await client.post(
            "/admin/workspaces/tenant-a/tier", data={"tier": "pro", **attempt}
        )
        assert response.status_code == 403
        assert "CSRF" in response.text
    wrong_header = await client.post(
        "/admin/workspaces/tenant-a/tier", data={"tier": "pro"}, headers={"X-CSRF-Token": "x"}
    )
    assert wrong_header.status_code == 403
    assert await _tier(app, "tenant-a") == "free"

    done = await client.post(
        "/admin/workspaces/tenant-a/tier", data={"tier": "pro"}, headers={"X-CSRF-Token": csrf}
    )
    assert done.status_code == 303
    assert await _tier(app, "tenant-a") == "pro"


async def test_a_csrf_token_without_the_session_changes_nothing(
    client: httpx.AsyncClient, app: Any
) -> None:
    await _workspace(app, "tenant-a")
    csrf = await signed_in(client, app)
    client.cookies.clear()
    response = await client.post(
        "/admin/workspaces/tenant-a/tier", data={"tier": "pro", "csrf_token": csrf}
    )
    assert response.status_code == 401
    assert await _tier(app, "tenant-a") == "free"


async def _sign_in_with_token(client: httpx.AsyncClient, token: str) -> httpx.Response:
    page = await client.get("/admin/sign-in")
    return await client.post(
        "/admin/sign-in", data={"bearer_token": token, "csrf_token": csrf_of(page.text)}
    )


async def test_an_admin_of_every_tenant_signs_in_with_a_bearer_token(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    response = await _sign_in_with_token(client, make_token(tenants=["*"], roles=["admin"]))
    assert response.status_code == 303
    assert (await client.get("/admin")).status_code == 200


async def test_other_bearer_tokens_are_refused(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    refused = {
        "one tenant's admin": make_token(tenants=["tenant-a"], roles=["admin"]),
        "every tenant, no admin role": make_token(tenants=["*"], roles=["service"]),
        "not a token": "not-a-jwt",
    }
    for name, token in refused.items():
        response = await _sign_in_with_token(client, token)
        assert response.status_code in (401, 403), name
        assert SESSION_COOKIE not in client.cookies, name
    assert (await client.get("/admin")).status_code == 303


async def test_the_sign_in_form_needs_its_own_csrf_token(
    client: httpx.AsyncClient, make_token: TokenFactory
) -> None:
    await client.get("/admin/sign-in")
    response = await client.post(
        "/admin/sign-in",
        data={"bearer_token": make_token(tenants=["*"], roles=["admin"]), "csrf_token": "x"},
    )
    assert response.status_code == 403
    assert SESSION_COOKIE not in client.cookies


async def test_sign_out_ends_the_session(client: httpx.AsyncClient, app: Any) -> None:
    csrf = await signed_in(client, app)
    session_cookie = client.cookies[SESSION_COOKIE]
    response = await client.post("/admin/sign-out", data={"csrf_token": csrf})
    assert response.status_code == 303
    client.cookies.set(SESSION_COOKIE, session_cookie, path="/admin")
    assert (await client.get("/admin")).status_code == 303


class _Controls(HTMLParser):
    """The form controls of a page and the ids its labels name."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.labelled: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "label" and found.get("for"):
            self.labelled.add(str(found["for"]))
        if tag in ("select", "textarea") or (tag == "input" and found.get("type") != "hidden"):
            self.controls.append(found)


async def test_every_form_control_has_a_label(client: httpx.AsyncClient, app: Any) -> None:
    await _workspace(app, "tenant-a")
    await signed_in(client, app)
    pages = ["/admin/sign-in", "/admin", "/admin/workspaces", "/admin/workspaces/tenant-a"]
    pages.append("/admin/configs?tenant_id=tenant-a")
    for path in pages:
        response = await client.get(path)
        assert response.status_code == 200, path
        parser = _Controls()
        parser.feed(response.text)
        for control in parser.controls:
            assert control.get("aria-label") or control.get("id") in parser.labelled, (
                path,
                control,
            )
