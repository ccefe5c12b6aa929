"""Helpers of the console tests: issue a link, sign in with it over httpx, read a page's tokens."""

from __future__ import annotations

import re
from typing import Any

import httpx

from app.admin import sessions
from app.state import app_state

_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF_FIELD.search(html)
    assert found, "no csrf_token field on the page"
    return found.group(1)


async def issue_link(app: Any, subject: str = "ops@example.com") -> str:
    state = app_state(app)
    async with state.sessionmaker() as session, session.begin():
        return await sessions.issue_link(session, state.settings, subject=subject)


async def use_link(client: httpx.AsyncClient, secret: str) -> httpx.Response:
    page = await client.get("/admin/link", params={"token": secret})
    assert page.status_code == 200, page.text
    return await client.post(
        "/admin/link", data={"token": secret, "csrf_token": csrf_of(page.text)}
    )


async def signed_in(client: httpx.AsyncClient, app: Any) -> str:
    """Sign `client` in with a fresh link; the session's CSRF token."""
    response = await use_link(client, await issue_link(app))
    assert response.status_code == 303, response.text
    overview = await client.get("/admin")
    assert overview.status_code == 200, overview.text
    return csrf_of(overview.text)
