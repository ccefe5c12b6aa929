"""A small OAuth 2.0 authorization server on a loopback port, for tests, benchmarks and
`junction dev-provider`.

Real HTTP (stdlib `http.server` in a thread): an authorization endpoint that redirects back with a
code (or, with `consent_page`, first shows a page with Approve and Deny, as a provider shows its
user; a POST of the authorization URL with `decision=approve` is what clicking does), a token
endpoint for the `authorization_code` (with PKCE S256 checks) and `refresh_token`
grants with refresh-token rotation and reuse detection (reusing a rotated refresh token revokes
the whole grant, as strict providers do), a revoke endpoint, a configurable access-token lifetime,
switchable failures (HTTP 500, 429 with Retry-After, a delay longer than the client's timeout),
a refresh-token lifetime it reports (`refresh_token_expires_in`), a gate that holds refresh
answers until a test releases it, call counters and the times of its refreshes. A client secret
rotated at the provider (`client_secret = ...`) makes every token call answer `invalid_client`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from app.devtools.http_server import BackgroundHTTPServer


@dataclass
class Grant:
    grant_id: str
    client_id: str
    scope: str
    refresh_token: str
    access_tokens: list[str] = field(default_factory=list)
    used_refresh_tokens: set[str] = field(default_factory=set)
    revoked: bool = False


@dataclass
class PendingCode:
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None


class LocalOAuthServer:
    """Start with `start()`, stop with `stop()`; every knob is a plain attribute."""

    def __init__(
        self,
        *,
        client_id: str = "local-client",
        # A well-known value for tests on a loopback port; `junction dev-provider` makes its own.
        client_secret: str = "local-secret-0123456789",  # noqa: S107
        token_lifetime_s: int = 3600,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime_s: int | None = token_lifetime_s
        self.rotate_refresh_tokens = True
        self.issue_refresh_tokens = True  # False: like WordPress.com, access tokens only
        self.require_pkce = True
        self.client_auth = "any"  # "basic", "post" or "any"
        self.fail_status: int | None = None  # answer the token endpoint with this status
        self.fail_error: str | None = None  # ... and this OAuth error code in the body
        self.fail_headers: dict[str, str] = {}  # ... and these headers (e.g. Retry-After)
        # Reported with every refresh token issued (code and refresh grants): its lifetime.
        self.refresh_token_expires_in: int | None = None
        # While set, refresh_token grants wait for it (up to 30 s) before answering;
        # `refresh_waiting` is set as one arrives.
        self.refresh_gate: threading.Event | None = None
        self.refresh_waiting = threading.Event()
        self.delay_s = 0.0  # sleep before answering the token endpoint
        self.revoke_delay_s = 0.0  # sleep before answering the revoke endpoint
        self.echo_secrets_in_errors = False  # a sloppy provider: echo the request in errors
        self.deny_authorization = False  # the user clicks "deny"
        self.consent_page = False  # GET /authorize shows Approve / Deny instead of approving
        self.calls: Counter[str] = Counter()
        # When (time.time()) each successful refresh grant was answered, in order.
        self.refreshed_at: list[float] = []
        self.grants: dict[str, Grant] = {}
        self.codes: dict[str, PendingCode] = {}
        self.access_index: dict[str, str] = {}  # access token -> grant id
        self.refresh_index: dict[str, str] = {}  # any refresh token ever issued -> grant id
        self.last_authorize_params: dict[str, str] = {}
        self.last_token_request: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._http: BackgroundHTTPServer | None = None

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> LocalOAuthServer:
        server = self

        class Handler(_Handler):
            oauth = server

        self._http = BackgroundHTTPServer(Handler, host=self.host, port=self.port).start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None

    @property
    def base_url(self) -> str:
        assert self._http is not None, "start() the server first"
        return self._http.base_url

    def provider_urls(self) -> dict[str, str]:
        """The URLs to register as a custom provider or to override a built-in one with."""
        return {
            "authorization_url": f"{self.base_url}/authorize",
            "token_url": f"{self.base_url}/token",
            "revoke_url": f"{self.base_url}/revoke",
        }

    # --- test controls --------------------------------------------------------------------
    @property
    def token_calls(self) -> int:
        return self.calls["token"]

    @property
    def refresh_calls(self) -> int:
        return self.calls["grant:refresh_token"]

    def revoke_all_grants(self) -> None:
        with self._lock:
            for grant in self.grants.values():
                grant.revoked = True

    def active_grants(self) -> list[Grant]:
        with self._lock:
            return [g for g in self.grants.values() if not g.revoked]

    def is_access_token_valid(self, token: str) -> bool:
        with self._lock:
            grant_id = self.access_index.get(token)
            return grant_id is not None and not self.grants[grant_id].revoked

    def current_refresh_token(self) -> str | None:
        active = self.active_grants()
        return active[-1].refresh_token if active else None

    # --- protocol -----------------------------------------------------------------------
    def authorize(
        self, params: dict[str, str], decision: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """The authorization endpoint: `decision` is None for a GET, the button for a POST."""
        with self._lock:
            self.calls["authorize"] += 1
            self.last_authorize_params = dict(params)
        redirect_uri = params.get("redirect_uri")
        if not redirect_uri or params.get("client_id") != self.client_id:
            return _json(400, {"error": "invalid_request"})
        if params.get("response_type") != "code":
            return _redirect(redirect_uri, {"error": "unsupported_response_type", **_st(params)})
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if self.require_pkce and (not challenge or method != "S256"):
            return _redirect(redirect_uri, {"error": "invalid_request", **_st(params)})
        if decision is None and self.consent_page:
            return _consent_page(params)
        if self.deny_authorization or (decision is not None and decision != "approve"):
            return _redirect(redirect_uri, {"error": "access_denied", **_st(params)})
        code = secrets.token_urlsafe(24)
        with self._lock:
            self.codes[code] = PendingCode(
                client_id=self.client_id,
                redirect_uri=redirect_uri,
                scope=params.get("scope", ""),
                code_challenge=challenge,
                code_challenge_method=method,
            )
        return _redirect(redirect_uri, {"code": code, **_st(params)})

    def token(
        self, form: dict[str, str], auth_header: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        grant_type = form.get("grant_type", "")
        with self._lock:
            self.calls["token"] += 1
            self.calls[f"grant:{grant_type}"] += 1
            self.last_token_request = {"form": dict(form), "basic_auth": auth_header is not None}
        if self.delay_s:
            time.sleep(self.delay_s)
        gate = self.refresh_gate
        if gate is not None and grant_type == "refresh_token":
            self.refresh_waiting.set()
            gate.wait(30)
        if self.fail_status is not None:
            body: dict[str, Any] = {"error": self.fail_error or "server_error"}
            if self.echo_secrets_in_errors:
                body["error_description"] = f"bad request: {json.dumps(form)}"
            status, headers, payload = _json(self.fail_status, body)
            return status, {**headers, **self.fail_headers}, payload
        if not self._client_authenticated(form, auth_header):
            body = {"error": "invalid_client"}
            if self.echo_secrets_in_errors:
                body["error_description"] = f"got {json.dumps(form)} / {auth_header}"
            return _json(401, body)
        if grant_type == "authorization_code":
            return self._code_grant(form)
        if grant_type == "refresh_token":
            return self._refresh_grant(form)
        return _json(400, {"error": "unsupported_grant_type"})

    def revoke(
        self, form: dict[str, str], auth_header: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.calls["revoke"] += 1
        if self.revoke_delay_s:
            time.sleep(self.revoke_delay_s)
        if not self._client_authenticated(form, auth_header):
            return _json(401, {"error": "invalid_client"})
        token = form.get("token", "")
        with self._lock:
            grant_id = self.refresh_index.get(token) or self.access_index.get(token)
            if grant_id is not None:
                self.grants[grant_id].revoked = True
        return 200, {"Content-Type": "application/json"}, b"{}"

    def _client_authenticated(self, form: dict[str, str], auth_header: str | None) -> bool:
        if auth_header and auth_header.lower().startswith("basic ") and self.client_auth != "post":
            raw = base64.b64decode(auth_header[6:]).decode()
            cid, _, secret = raw.partition(":")
            return unquote(cid) == self.client_id and unquote(secret) == self.client_secret
        if self.client_auth == "basic":
            return False
        return (
            form.get("client_id") == self.client_id
            and form.get("client_secret") == self.client_secret
        )

    def _issue_access(self, grant: Grant) -> tuple[str, dict[str, Any]]:
        access = "at-" + secrets.token_urlsafe(24)
        grant.access_tokens.append(access)
        self.access_index[access] = grant.grant_id
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer"}
        if self.token_lifetime_s is not None:
            body["expires_in"] = self.token_lifetime_s
        if grant.scope:
            body["scope"] = grant.scope
        return access, body

    def _code_grant(self, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            pending = self.codes.pop(form.get("code", ""), None)
            if pending is None or pending.redirect_uri != form.get("redirect_uri"):
                return _json(400, {"error": "invalid_grant"})
            if pending.code_challenge is not None:
                verifier = form.get("code_verifier", "")
                digest = hashlib.sha256(verifier.encode()).digest()
                expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
                if expected != pending.code_challenge:
                    return _json(400, {"error": "invalid_grant"})
            grant = Grant(
                grant_id=secrets.token_hex(8),
                client_id=pending.client_id,
                scope=pending.scope,
                refresh_token="rt-" + secrets.token_urlsafe(24),
            )
            self.grants[grant.grant_id] = grant
            self.refresh_index[grant.refresh_token] = grant.grant_id
            _, body = self._issue_access(grant)
            if self.issue_refresh_tokens:
                body["refresh_token"] = grant.refresh_token
                self._add_refresh_token_lifetime(body)
        return _json(200, body)

    def _add_refresh_token_lifetime(self, body: dict[str, Any]) -> None:
        if self.refresh_token_expires_in is not None:
            body["refresh_token_expires_in"] = self.refresh_token_expires_in

    def _refresh_grant(self, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        presented = form.get("refresh_token", "")
        with self._lock:
            grant_id = self.refresh_index.get(presented)
            if grant_id is None:
                return _json(400, {"error": "invalid_grant"})
            grant = self.grants[grant_id]
            if grant.revoked:
                return _json(400, {"error": "invalid_grant"})
            if presented != grant.refresh_token:
                # Reuse of a rotated refresh token: someone has a stolen copy; kill the grant.
                grant.revoked = True
                return _json(400, {"error": "invalid_grant"})
            _, body = self._issue_access(grant)
            self.refreshed_at.append(time.time())
            if self.rotate_refresh_tokens:
                grant.used_refresh_tokens.add(grant.refresh_token)
                grant.refresh_token = "rt-" + secrets.token_urlsafe(24)
                self.refresh_index[grant.refresh_token] = grant.grant_id
                body["refresh_token"] = grant.refresh_token
                self._add_refresh_token_lifetime(body)
        return _json(200, body)


def _st(params: dict[str, str]) -> dict[str, str]:
    return {"state": params["state"]} if "state" in params else {}


def _json(status: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return (
        status,
        {"Content-Type": "application/json", "Cache-Control": "no-store"},
        json.dumps(body).encode(),
    )


def _consent_page(params: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """What a provider shows its user: who asks for what, and two buttons. The form posts the
    authorization request back with the button pressed; the answer is the usual redirect."""
    hidden = "\n".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items()
    )
    scope = html.escape(params.get("scope", "") or "(none)")
    client = html.escape(params.get("client_id", ""))
    back_to = html.escape(urlsplit(params.get("redirect_uri", "")).netloc)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorize {client}</title>
<style>body{{font:16px system-ui,sans-serif;max-width:32em;margin:4em auto}}
button{{font-size:1em;padding:.4em 1.2em;margin-right:1em}}</style></head>
<body><h1>Junction dev provider</h1>
<p><b>{client}</b> asks for access with the scopes <code>{scope}</code>.
Approving sends you back to <code>{back_to}</code> with a code.</p>
<form method="post" action="/authorize">
{hidden}
<button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form></body></html>
"""
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        "X-Frame-Options": "DENY",
    }
    return 200, headers, page.encode()


def _redirect(redirect_uri: str, params: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    separator = "&" if urlsplit(redirect_uri).query else "?"
    return 302, {"Location": redirect_uri + separator + urlencode(params)}, b""


class _Handler(BaseHTTPRequestHandler):
    oauth: LocalOAuthServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY the second waits for the
    # client's delayed ACK (~40 ms a request), which would dominate every refresh measured.
    disable_nagle_algorithm = True

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            return  # a client that gave up (a cancelled refresh in a shutdown test)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return  # keep test output quiet

    def _send(self, result: tuple[int, dict[str, str], bytes]) -> None:
        status, headers, body = result
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        if (self.headers.get("Content-Type") or "").startswith("application/json"):
            data = json.loads(raw or "{}")
            return {str(k): str(v) for k, v in data.items()}
        return dict(parse_qsl(raw, keep_blank_values=True))

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        if parts.path == "/authorize":
            self._send(self.oauth.authorize(dict(parse_qsl(parts.query))))
        else:
            self._send(_json(404, {"error": "not_found"}))

    def do_POST(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        path = parts.path
        form = self._form()
        auth = self.headers.get("Authorization")
        if path == "/authorize":
            # The consent form, or the authorization URL posted as it is (`curl -d
            # decision=approve "$URL"`): the request's parameters from either place.
            params = {**dict(parse_qsl(parts.query)), **form}
            self._send(self.oauth.authorize(params, decision=params.pop("decision", "")))
        elif path in ("/token", "/token/refresh"):
            self._send(self.oauth.token(form, auth))
        elif path == "/revoke":
            self._send(self.oauth.revoke(form, auth))
        else:
            self._send(_json(404, {"error": "not_found"}))
