"""OAuth 2.0 wire protocol: authorization URLs, PKCE, and the token and revoke calls."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx

from app.core import netguard
from app.tokens.exceptions import ProviderError
from app.tokens.providers import ProviderSpec

# A provider's `error` value is kept only when it looks like an OAuth error code, so a provider
# that echoes a request back cannot smuggle a secret into our errors or logs.
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")
# The longest token lifetime kept (ten years).
MAX_EXPIRES_IN_S = 10 * 365 * 86400
# A provider's Retry-After is honoured within these bounds: at least a second, at most an hour
# (a provider asking for a day is answered by the usual backoff past the hour).
MIN_RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 3600.0


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    token_type: str
    expires_in: int | None
    refresh_token: str | None
    scope: str | None
    # Where the provider says so: how long the refresh token (this one, or the one kept) lives.
    refresh_token_expires_in: int | None = None


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str


def new_state() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


def state_key(state: str) -> str:
    """States are stored by hash: a database reader cannot complete someone else's login."""
    return hashlib.sha256(state.encode()).hexdigest()


def new_code_verifier() -> str:
    return secrets.token_urlsafe(48)  # 64 characters, inside RFC 7636's 43..128


def code_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def authorization_url(
    spec: ProviderSpec,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: list[str],
    state: str,
    challenge: str | None,
) -> str:
    names = spec.authorize_param_names
    params: dict[str, str] = {
        "response_type": "code",
        names.get("client_id", "client_id"): client_id,
        names.get("redirect_uri", "redirect_uri"): redirect_uri,
        "state": state,
    }
    if scopes:
        params["scope"] = spec.scope_separator.join(scopes)
    if challenge is not None:
        params["code_challenge"] = challenge
        params["code_challenge_method"] = "S256"
    params.update(spec.extra_authorize_params)
    return with_query(spec.authorization_url, params)


def with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _basic_auth(credentials: ClientCredentials) -> str:
    # RFC 6749 §2.3.1: both parts form-urlencoded before base64.
    raw = f"{quote(credentials.client_id, safe='')}:{quote(credentials.client_secret, safe='')}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


async def _token_call(
    http: httpx.AsyncClient,
    spec: ProviderSpec,
    url: str,
    credentials: ClientCredentials,
    body: dict[str, str],
    *,
    allow_private: bool,
) -> dict[str, Any]:
    headers = {"Accept": "application/json"}
    payload = dict(body)
    if spec.client_auth == "basic":
        headers["Authorization"] = _basic_auth(credentials)
    else:
        payload["client_id"] = credentials.client_id
        payload["client_secret"] = credentials.client_secret
    # A custom provider's URL was chosen by a tenant (built-in ones and their overrides come from
    # the operator): it is called only at an address checked to be public.
    send = partial(netguard.post, http, allow_private=allow_private) if spec.custom else http.post
    try:
        if spec.body_format == "json":
            response = await send(url, json=payload, headers=headers)
        else:
            response = await send(url, data=payload, headers=headers)
    except netguard.UnsafeDestination:
        # That tenant's misconfiguration, like any provider failure.
        raise ProviderError("unsafe_destination") from None
    # `from None`: httpx's exception names the URL and request; keep only a safe code.
    except httpx.TimeoutException:
        raise ProviderError("timeout") from None
    except httpx.HTTPError:
        raise ProviderError("network_error") from None
    data = _parse_body(response)
    if response.status_code >= 400 or "error" in data:
        retry_after_s = None
        if response.status_code in (429, 503):
            retry_after_s = retry_after_seconds(response.headers.get("Retry-After"))
        raise ProviderError(
            _error_code(data, response.status_code),
            status_code=response.status_code,
            retry_after_s=retry_after_s,
        )
    return data


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (RFC 9110: delay-seconds or an HTTP date) as seconds from now,
    bounded to [MIN_RETRY_AFTER_S, MAX_RETRY_AFTER_S]; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value) if len(value) <= 12 else MAX_RETRY_AFTER_S
    else:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:  # RFC 850 / asctime forms carry no zone: GMT by definition
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, MIN_RETRY_AFTER_S), MAX_RETRY_AFTER_S)


def _parse_body(response: httpx.Response) -> dict[str, Any]:
    text = response.text
    try:
        data = json.loads(text)
    except ValueError:
        data = dict(parse_qsl(text)) if "=" in text else {}
    return data if isinstance(data, dict) else {}


def _error_code(data: dict[str, Any], status_code: int) -> str:
    error = data.get("error")
    if isinstance(error, str) and _ERROR_CODE.match(error):
        return error
    return f"http_{status_code}"


def parse_token_response(data: dict[str, Any], spec: ProviderSpec) -> TokenSet:
    """Validate a token endpoint's answer; anything malformed is `invalid_response`."""
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise ProviderError("invalid_response")
    token_type = data.get("token_type")
    if token_type is None and not spec.token_type_required:
        token_type = "Bearer"
    if not isinstance(token_type, str) or not token_type or len(token_type) > 64:
        raise ProviderError("invalid_response")
    expires_in = data.get("expires_in")
    if expires_in is not None:
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses; and a string
        # too long for int() is past any lifetime we keep anyway.
        if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
            expires_in = int(expires_in) if len(expires_in) <= 12 else MAX_EXPIRES_IN_S
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 0:
            raise ProviderError("invalid_response")
        # A lifetime past the calendar's end cannot be stored as a date; decades is "long-lived".
        expires_in = min(expires_in, MAX_EXPIRES_IN_S)
    refresh_token = data.get("refresh_token")
    if refresh_token is not None and (not isinstance(refresh_token, str) or not refresh_token):
        raise ProviderError("invalid_response")
    refresh_token_expires_in = _lifetime_s(data.get("refresh_token_expires_in"))
    scope = data.get("scope")
    if isinstance(scope, list):
        scope = spec.scope_separator.join(str(s) for s in scope)
    if scope is not None and not isinstance(scope, str):
        raise ProviderError("invalid_response")
    return TokenSet(
        access_token=access_token,
        token_type=token_type,
        expires_in=expires_in,
        refresh_token=refresh_token,
        scope=scope,
        refresh_token_expires_in=refresh_token_expires_in,
    )


def _lifetime_s(value: Any) -> int | None:
    """An optional lifetime in seconds beside the ones OAuth requires: a malformed one is
    ignored (the token itself is fine), a huge one capped like `expires_in`."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value) if len(value) <= 12 else MAX_EXPIRES_IN_S
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return min(value, MAX_EXPIRES_IN_S)


# `allow_private` (the settings' is_dev) lets a custom provider live on a private or loopback
# address; outside development every custom endpoint is checked before each call.


async def exchange_code(
    http: httpx.AsyncClient,
    spec: ProviderSpec,
    credentials: ClientCredentials,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str | None,
    allow_private: bool,
) -> TokenSet:
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier is not None:
        body["code_verifier"] = code_verifier
    data = await _token_call(
        http, spec, spec.token_url, credentials, body, allow_private=allow_private
    )
    return parse_token_response(data, spec)


async def refresh_grant(
    http: httpx.AsyncClient,
    spec: ProviderSpec,
    credentials: ClientCredentials,
    *,
    refresh_token: str,
    allow_private: bool,
) -> TokenSet:
    body = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    data = await _token_call(
        http, spec, spec.effective_refresh_url, credentials, body, allow_private=allow_private
    )
    return parse_token_response(data, spec)


async def revoke_token(
    http: httpx.AsyncClient,
    spec: ProviderSpec,
    credentials: ClientCredentials,
    *,
    token: str,
    token_type_hint: str,
    allow_private: bool,
) -> None:
    """RFC 7009 revocation; a no-op for providers without a revoke URL."""
    if spec.revoke_url is None:
        return
    await _token_call(
        http,
        spec,
        spec.revoke_url,
        credentials,
        {"token": token, "token_type_hint": token_type_hint},
        allow_private=allow_private,
    )
