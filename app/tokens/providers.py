"""The provider registry: each OAuth 2.0 authorization server described as data, not code."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.core.config import ConfigurationError, Settings

BODY_FORMATS = ("form", "json")
CLIENT_AUTH_METHODS = ("basic", "post")
CUSTOM_SLUG = re.compile(r"^[a-z0-9_]{2,40}$")
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
_CUSTOM_CACHE_SIZE = 1024

# The built-in providers. Every URL can be overridden per provider with OAUTH_PROVIDER_OVERRIDES
# (staging, and the tests' local authorization server).
# Both Google products share Google's OAuth endpoints and behaviour; only their scopes differ.
_GOOGLE: dict[str, Any] = {
    "authorization_url": "https://accounts.google.com/o/oauth2/v2/auth",
    "token_url": "https://oauth2.googleapis.com/token",
    "revoke_url": "https://oauth2.googleapis.com/revoke",
    "scope_separator": " ",
    # Without these Google issues no refresh token on a second consent.
    "extra_authorize_params": {"access_type": "offline", "prompt": "consent"},
    "body_format": "form",
    "client_auth": "post",
    "pkce": True,
    "refresh_margin_s": 300,
    "tokens_expire": True,
}

BUILTIN_PROVIDERS: dict[str, dict[str, Any]] = {
    "google_search_console": {
        **_GOOGLE,
        "display_name": "Google Search Console",
        "default_scopes": ["https://www.googleapis.com/auth/webmasters.readonly"],
    },
    "google_business_profile": {
        **_GOOGLE,
        "display_name": "Google Business Profile",
        "default_scopes": ["https://www.googleapis.com/auth/business.manage"],
    },
    "bing_webmaster": {
        "display_name": "Bing Webmaster Tools",
        "authorization_url": "https://www.bing.com/webmasters/oauth/authorize",
        "token_url": "https://www.bing.com/webmasters/oauth/token",
        # Bing documents a distinct endpoint for the refresh grant.
        "refresh_url": "https://www.bing.com/webmasters/oauth/token/refresh",
        "revoke_url": None,
        "default_scopes": ["webmaster.manage"],
        "scope_separator": " ",
        "extra_authorize_params": {},
        "body_format": "form",
        "client_auth": "post",
        "pkce": False,
        "refresh_margin_s": 300,
        "tokens_expire": True,
    },
    "wordpress": {
        "display_name": "WordPress.com",
        "authorization_url": "https://public-api.wordpress.com/oauth2/authorize",
        "token_url": "https://public-api.wordpress.com/oauth2/token",
        "revoke_url": None,
        "default_scopes": ["global"],
        "scope_separator": " ",
        "extra_authorize_params": {},
        "body_format": "form",
        "client_auth": "post",
        "pkce": False,
        "refresh_margin_s": 0,
        # WordPress.com access tokens do not expire and come without a refresh token.
        "tokens_expire": False,
    },
    "wix": {
        "display_name": "Wix",
        "authorization_url": "https://www.wix.com/installer/install",
        "token_url": "https://www.wixapis.com/oauth/access",
        "revoke_url": None,
        "default_scopes": [],
        "scope_separator": ",",
        "extra_authorize_params": {},
        # Wix names the standard parameters differently on its install page.
        "authorize_param_names": {"client_id": "appId", "redirect_uri": "redirectUrl"},
        "body_format": "json",
        "client_auth": "post",
        "pkce": False,
        # Wix access tokens live five minutes; refresh a minute before.
        "refresh_margin_s": 60,
        "tokens_expire": True,
        "token_type_required": False,
    },
}

URL_FIELDS = ("authorization_url", "token_url", "refresh_url", "revoke_url")
# The timing options (app/tokens/timing.py) a provider may set besides its URLs.
TIMING_FIELDS = ("refresh_margin_s", "min_refresh_interval_s")
OVERRIDABLE_FIELDS = (*URL_FIELDS, *TIMING_FIELDS)
# Options a custom provider may set when its client is registered.
CUSTOM_FIELDS = (
    *URL_FIELDS,
    "scope_separator",
    "body_format",
    "client_auth",
    "pkce",
    *TIMING_FIELDS,
)


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    display_name: str
    authorization_url: str
    token_url: str
    refresh_url: str | None = None
    revoke_url: str | None = None
    default_scopes: tuple[str, ...] = ()
    scope_separator: str = " "
    extra_authorize_params: dict[str, str] = field(default_factory=dict)
    authorize_param_names: dict[str, str] = field(default_factory=dict)
    body_format: str = "form"
    client_auth: str = "basic"
    pkce: bool = True
    refresh_margin_s: int = 300
    # The least time between two automatic refreshes of one connection, for providers that
    # refuse early refreshes; None: TOKEN_REFRESH_MIN_INTERVAL_S.
    min_refresh_interval_s: float | None = None
    tokens_expire: bool = True
    token_type_required: bool = True
    custom: bool = False

    @property
    def effective_refresh_url(self) -> str:
        return self.refresh_url or self.token_url

    def capabilities(self) -> dict[str, Any]:
        data = asdict(self)
        data["default_scopes"] = list(self.default_scopes)
        data["supports_refresh"] = self.tokens_expire
        data["supports_revoke"] = self.revoke_url is not None
        return data


def validate_url(value: str, *, field_name: str, allow_loopback_http: bool = True) -> str:
    """An absolute https URL; http only for localhost / 127.0.0.1 (local development and tests).

    Checked as the HTTP client will read it, so a URL accepted here cannot fail at call time.
    """
    # urlsplit silently drops tabs and newlines (as browsers do); httpx refuses them.
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ValueError(f"{field_name}: must not contain whitespace or control characters")
    try:
        httpx.URL(value)
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port outside 0-65535, which httpx would refuse
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(f"{field_name}: not a valid URL") from exc
    if not parts.netloc or not parts.hostname:
        raise ValueError(f"{field_name}: must be an absolute URL")
    if parts.username or parts.password:
        raise ValueError(f"{field_name}: must not carry credentials")
    if parts.fragment:
        raise ValueError(f"{field_name}: must not have a fragment")
    if parts.scheme == "https":
        return value
    if parts.scheme == "http" and allow_loopback_http and parts.hostname in LOOPBACK_HOSTS:
        return value
    raise ValueError(f"{field_name}: must be an https URL (http only for localhost)")


def _spec_from_data(name: str, data: dict[str, Any], *, custom: bool) -> ProviderSpec:
    for url_field in URL_FIELDS:
        url = data.get(url_field)
        if url is not None:
            validate_url(str(url), field_name=url_field)
    if data.get("body_format", "form") not in BODY_FORMATS:
        raise ValueError(f"body_format: one of {', '.join(BODY_FORMATS)}")
    if data.get("client_auth", "basic") not in CLIENT_AUTH_METHODS:
        raise ValueError(f"client_auth: one of {', '.join(CLIENT_AUTH_METHODS)}")
    values = dict(data)
    values["default_scopes"] = tuple(values.get("default_scopes", ()))
    # Each spec its own copy: built-in entries share a base (the Google ones).
    values["extra_authorize_params"] = dict(values.get("extra_authorize_params") or {})
    values.setdefault("display_name", name)
    return ProviderSpec(name=name, custom=custom, **values)


def custom_spec(name: str, provider_settings: dict[str, Any]) -> ProviderSpec:
    """The spec of a tenant's custom provider, from the settings stored with its client."""
    data = {k: v for k, v in provider_settings.items() if k in CUSTOM_FIELDS and v is not None}
    return _spec_from_data(name, data, custom=True)


class ProviderRegistry:
    """Built-in providers with the settings' overrides applied; custom ones come from clients."""

    def __init__(self, settings: Settings) -> None:
        # The timing rule reads its settings (floor, default interval) from here.
        self.settings = settings
        self._builtin: dict[str, ProviderSpec] = {}
        self._custom: dict[tuple[str, str], ProviderSpec] = {}
        unknown = set(settings.oauth_provider_overrides) - set(BUILTIN_PROVIDERS)
        if unknown:
            raise ConfigurationError(
                "OAUTH_PROVIDER_OVERRIDES: unknown provider(s) " + ", ".join(sorted(unknown))
            )
        for name, data in BUILTIN_PROVIDERS.items():
            spec = _spec_from_data(name, data, custom=False)
            overrides = settings.oauth_provider_overrides.get(name, {})
            bad = set(overrides) - set(OVERRIDABLE_FIELDS)
            if bad:
                raise ConfigurationError(
                    f"OAUTH_PROVIDER_OVERRIDES[{name}]: cannot override " + ", ".join(sorted(bad))
                )
            try:
                for url_field in URL_FIELDS:
                    if overrides.get(url_field):
                        validate_url(str(overrides[url_field]), field_name=url_field)
            except ValueError as exc:
                raise ConfigurationError(f"OAUTH_PROVIDER_OVERRIDES[{name}]: {exc}") from exc
            self._builtin[name] = replace(spec, **overrides) if overrides else spec

    def is_builtin(self, name: str) -> bool:
        return name in self._builtin

    def all_builtin(self) -> list[ProviderSpec]:
        return list(self._builtin.values())

    def resolve(self, provider: str, provider_settings: dict[str, Any] | None) -> ProviderSpec:
        """The spec for a client: its built-in provider, or its own custom provider."""
        spec = self._builtin.get(provider)
        if spec is not None:
            return spec
        # Custom specs are parsed once per distinct settings, not on every token read.
        key = (provider, json.dumps(provider_settings or {}, sort_keys=True))
        spec = self._custom.get(key)
        if spec is None:
            spec = custom_spec(provider, provider_settings or {})
            if len(self._custom) >= _CUSTOM_CACHE_SIZE:
                self._custom.clear()
            self._custom[key] = spec
        return spec
