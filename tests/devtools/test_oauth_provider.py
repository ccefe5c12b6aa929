"""The dev provider's consent page: a person approves or denies, and Junction gets the answer."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urlencode

import httpx
import pytest

from app.devtools.dev_provider import client_registration
from app.devtools.oauth_provider import LocalOAuthServer
from tests.conftest import TokenFactory, bearer
from tests.oauth_fixtures import callback_params


@pytest.fixture
def consenting_server() -> Iterator[LocalOAuthServer]:
    server = LocalOAuthServer()
    server.consent_page = True
    server.require_pkce = False
    server.start()
    try:
        yield server
    finally:
        server.stop()


class _Form(HTMLParser):
    """The form's fields and its buttons, as a browser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}
        self.buttons: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = values["action"]
        elif tag == "input" and values.get("type") == "hidden":
            self.fields[values["name"]] = values["value"]
        elif tag == "button":
            self.buttons.append(values["value"])


def _authorize_url(server: LocalOAuthServer, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": server.client_id,
        "redirect_uri": "http://127.0.0.1:1/callback",
        "state": "s-1",
        **extra,
    }
    return f"{server.base_url}/authorize?{urlencode(params)}"


def _consent_form(server: LocalOAuthServer, **extra: str) -> _Form:
    page = httpx.get(_authorize_url(server, **extra))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    form = _Form()
    form.feed(page.text)
    return form


def test_the_authorization_url_shows_approve_and_deny(consenting_server: LocalOAuthServer) -> None:
    form = _consent_form(consenting_server, scope="read write")
    assert form.buttons == ["approve", "deny"]
    assert form.action == "/authorize"
    assert form.fields["state"] == "s-1"
    assert form.fields["scope"] == "read write"


def test_the_page_escapes_what_the_request_carries(consenting_server: LocalOAuthServer) -> None:
    hostile = '"><script>alert(1)</script>'
    page = httpx.get(_authorize_url(consenting_server, state=hostile, scope=hostile))
    assert "<script>" not in page.text
    form = _Form()
    form.feed(page.text)
    assert form.fields["state"] == hostile


def test_approving_redirects_with_a_code_that_buys_tokens(
    consenting_server: LocalOAuthServer,
) -> None:
    form = _consent_form(consenting_server)
    answer = httpx.post(
        consenting_server.base_url + form.action, data={**form.fields, "decision": "approve"}
    )
    assert answer.status_code == 302
    params = callback_params(answer.headers["location"])
    assert params["state"] == "s-1"
    tokens = httpx.post(
        consenting_server.base_url + "/token",
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": form.fields["redirect_uri"],
            "client_id": consenting_server.client_id,
            "client_secret": consenting_server.client_secret,
        },
    )
    assert tokens.status_code == 200
    assert tokens.json()["refresh_token"]


def test_denying_redirects_with_access_denied(consenting_server: LocalOAuthServer) -> None:
    form = _consent_form(consenting_server)
    answer = httpx.post(
        consenting_server.base_url + form.action, data={**form.fields, "decision": "deny"}
    )
    assert answer.status_code == 302
    assert callback_params(answer.headers["location"]) == {"error": "access_denied", "state": "s-1"}


async def test_a_person_clicking_approve_connects_the_branch(
    client: httpx.AsyncClient, make_token: TokenFactory, consenting_server: LocalOAuthServer
) -> None:
    consenting_server.require_pkce = True
    headers = bearer(make_token(roles=["service"]))
    registration = client_registration(consenting_server, "http://localhost:8000")
    registered = await client.post("/token-management/clients", json=registration, headers=headers)
    assert registered.status_code == 201, registered.text
    login = await client.get(
        f"/token-management/oauth/login/{registered.json()['id']}",
        params={"branch_id": "me"},
        headers=headers,
    )
    async with httpx.AsyncClient() as browser:
        page = await browser.get(login.json()["authorization_url"])
        form = _Form()
        form.feed(page.text)
        assert form.fields["code_challenge_method"] == "S256"
        approved = await browser.post(
            consenting_server.base_url + form.action, data={**form.fields, "decision": "approve"}
        )
    callback = httpx.URL(approved.headers["location"])
    answer = await client.get(callback.path, params=dict(callback.params))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "connected"
    token = await client.get(
        "/token-management/tokens/me", params={"provider": "dev_provider"}, headers=headers
    )
    assert token.status_code == 200
    assert consenting_server.is_access_token_valid(token.json()["access_token"])
