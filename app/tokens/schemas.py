"""Request and response bodies of the token-management routes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from app.core.deps import TENANT_ID_PATTERN
from app.core.pagination import NextCursor
from app.core.schemas import RequestModel, ResponseModel, bounded_object
from app.tokens.providers import validate_url

# The caller's own key for whom a connection is made: a user, a branch, a site.
BRANCH_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,254}$"
PROVIDER_PATTERN = r"^[a-z0-9_]{2,40}$"
_SCOPE = re.compile(r"^[\x21-\x7e]{1,512}$")
# Junction's id of a registered client in a path; PostgreSQL text cannot hold a NUL character.
CLIENT_ID_PATTERN = r"^[^\x00]{1,64}$"
# The caller's own notes about the workspace a client serves, stored and returned as given.
WorkspaceInfo = Annotated[dict[str, Any], bounded_object(max_depth=8, max_items=500)]


def _check_scopes(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if len(value) > 50:
        raise ValueError("at most 50 scopes")
    for scope in value:
        if not _SCOPE.match(scope):
            raise ValueError(f"invalid scope {scope[:40]!r}: printable, no spaces, 1-512 chars")
    return value


def _check_urls(value: list[str] | None, field_name: str) -> list[str] | None:
    if value is None:
        return None
    if len(value) > 50:
        raise ValueError("at most 50 URLs")
    return [validate_url(url, field_name=field_name) for url in value]


def _check_optional_url(value: str | None, field_name: str) -> str | None:
    return None if value is None else validate_url(value, field_name=field_name)


class _CustomProviderFields(RequestModel):
    """The options of a custom provider; refused for built-in providers."""

    authorization_url: str | None = Field(
        description="custom providers: the provider's authorization endpoint (https)",
        default=None,
        max_length=2048,
    )
    token_url: str | None = Field(
        description="custom providers: the provider's token endpoint (https)",
        default=None,
        max_length=2048,
    )
    refresh_url: str | None = Field(
        description="custom providers: where refresh grants go, when not the token endpoint",
        default=None,
        max_length=2048,
    )
    revoke_url: str | None = Field(
        description="custom providers: the provider's revocation endpoint (RFC 7009), if any",
        default=None,
        max_length=2048,
    )
    scope_separator: str | None = Field(
        description=(
            "custom providers: how scopes are joined in the authorization URL (default a space)"
        ),
        default=None,
        min_length=1,
        max_length=3,
    )
    body_format: Literal["form", "json"] | None = Field(
        default=None,
        description="custom providers: how token requests are encoded: `form` (RFC 6749) or `json`",
    )
    client_auth: Literal["basic", "post"] | None = Field(
        default=None,
        description=(
            "custom providers: client credentials in an HTTP Basic header (`basic`)"
            " or in the body (`post`)"
        ),
    )
    pkce: bool | None = Field(
        default=None,
        description="custom providers: send a PKCE S256 challenge with the authorization request",
    )
    refresh_margin_s: int | None = Field(
        description=(
            "how long before expiry a token is refreshed, at most (capped at half "
            "the token's lifetime)"
        ),
        default=None,
        ge=0,
        le=86400,
    )
    min_refresh_interval_s: float | None = Field(
        description="the least time between two automatic refreshes of one connection",
        default=None,
        ge=0,
        le=3600,
    )

    @field_validator("authorization_url", "token_url", "refresh_url", "revoke_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_optional_url(value, "url")

    def custom_settings(self) -> dict[str, Any]:
        fields = (
            "authorization_url",
            "token_url",
            "refresh_url",
            "revoke_url",
            "scope_separator",
            "body_format",
            "client_auth",
            "pkce",
            "refresh_margin_s",
            "min_refresh_interval_s",
        )
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}


class _ClientFields(_CustomProviderFields):
    """Validation shared by the create and edit bodies of a client."""

    @field_validator("redirect_uri", check_fields=False)
    @classmethod
    def _redirect_uri(cls, value: str | None) -> str | None:
        return _check_optional_url(value, "redirect_uri")

    @field_validator("scopes", check_fields=False)
    @classmethod
    def _scopes(cls, value: list[str] | None) -> list[str] | None:
        return _check_scopes(value)

    @field_validator("return_urls", check_fields=False)
    @classmethod
    def _return_urls(cls, value: list[str] | None) -> list[str] | None:
        return _check_urls(value, "return_urls")


class ClientCreate(_ClientFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "provider": "google_search_console",
                    "name": "Search Console for Acme",
                    "client_id": "123456789-abc.apps.googleusercontent.com",
                    "client_secret": "GOCSPX-example-secret",
                    "redirect_uri": "https://junction.example.com/token-management/auth/callback",
                    "scopes": ["https://www.googleapis.com/auth/webmasters.readonly"],
                    "return_urls": ["https://app.example.com/integrations"],
                }
            ]
        }
    )

    tenant_id: str | None = Field(
        description="the tenant that owns the client; default: the token's only tenant",
        default=None,
        pattern=TENANT_ID_PATTERN,
    )
    provider: str = Field(
        description=(
            "a built-in provider's slug (see /token-management/providers) or a new "
            "lowercase slug for a custom one"
        ),
        pattern=PROVIDER_PATTERN,
    )
    name: str = Field(description="a name for people: shown in lists", min_length=1, max_length=255)
    client_id: str = Field(
        description="the OAuth client id the provider issued to the app",
        min_length=1,
        max_length=512,
    )
    client_secret: str = Field(
        description="the OAuth client secret; stored encrypted, never returned",
        min_length=1,
        max_length=4096,
    )
    redirect_uri: str | None = Field(
        description=(
            "the callback registered at the provider; default: OAUTH_CALLBACK_URL (this "
            "service's /token-management/auth/callback), 422 when neither is set"
        ),
        default=None,
        max_length=2048,
    )
    scopes: list[str] | None = Field(
        default=None, description="the scopes to ask for; default: the provider's default scopes"
    )
    return_urls: list[str] = Field(
        description="where a browser may be sent after the callback (exact URLs)",
        default_factory=list,
    )
    workspace_info: WorkspaceInfo | None = Field(
        default=None,
        description="the caller's own notes about the workspace it serves, kept as given",
    )


class ClientUpdate(_ClientFields):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"client_secret": "GOCSPX-rotated-secret"}]}
    )

    name: str | None = Field(description="a new name", default=None, min_length=1, max_length=255)
    client_id: str | None = Field(
        description="a new OAuth client id", default=None, min_length=1, max_length=512
    )
    client_secret: str | None = Field(
        description=(
            "a new OAuth client secret (after a rotation at the provider); recovers"
            " a misconfigured client"
        ),
        default=None,
        min_length=1,
        max_length=4096,
    )
    redirect_uri: str | None = Field(
        description="a new callback URL", default=None, max_length=2048
    )
    scopes: list[str] | None = Field(
        default=None, description="the scopes to ask for in new logins"
    )
    return_urls: list[str] | None = Field(
        default=None, description="replaces the allowed return URLs"
    )
    workspace_info: WorkspaceInfo | None = Field(
        default=None, description="replaces the caller's notes"
    )


class ClientOut(ResponseModel):
    """A registered client. The secret is never returned, not even masked."""

    id: str = Field(
        description="Junction's id of the client (in /token-management/clients/{client_id})"
    )
    tenant_id: str = Field(description="the tenant that owns it")
    provider: str = Field(description="the provider's slug")
    name: str = Field(description="its name for people")
    client_id: str = Field(description="the OAuth client id issued by the provider")
    has_client_secret: bool = Field(
        default=True, description="a secret is stored (it is never returned)"
    )
    redirect_uri: str = Field(description="the callback URL sent to the provider")
    scopes: list[str] = Field(description="the scopes logins ask for")
    return_urls: list[str] = Field(description="where a browser may be sent after the callback")
    provider_settings: dict[str, Any] = Field(
        description="a custom provider's endpoints and options; empty for a built-in one"
    )
    workspace_info: dict[str, Any] | None = Field(description="the caller's notes, as given")
    # `misconfigured` when the provider refused the app itself (status_reason: its error code,
    # e.g. invalid_client); its connections are not refreshed until the client is edited.
    status: str = Field(
        description="active, or misconfigured: the provider refused the app (see status_reason)"
    )
    status_reason: str | None = Field(
        description="why it is misconfigured: the provider's error code, e.g. `invalid_client`"
    )
    status_changed_at: datetime | None = Field(description="when the status last changed")
    created_at: datetime = Field(description="when it was registered")
    updated_at: datetime = Field(description="when it was last edited")


class ClientList(ResponseModel):
    items: list[ClientOut] = Field(description="the tenant's clients")


class ProviderOut(ResponseModel):
    name: str = Field(description="the slug to register a client with")
    display_name: str = Field(description="the name for people")
    authorization_url: str = Field(description="where logins start")
    token_url: str = Field(description="where codes are exchanged for tokens")
    refresh_url: str | None = Field(
        description="where refresh grants go, when not the token endpoint"
    )
    revoke_url: str | None = Field(description="the revocation endpoint, when the provider has one")
    default_scopes: list[str] = Field(description="the scopes asked for when a client names none")
    scope_separator: str = Field(description="how scopes are joined in the authorization URL")
    extra_authorize_params: dict[str, str] = Field(
        description="parameters added to every authorization URL (e.g. `access_type=offline`)"
    )
    body_format: str = Field(description="how token requests are encoded: `form` or `json`")
    client_auth: str = Field(description="how the client authenticates: `basic` or `post`")
    pkce: bool = Field(description="whether logins carry a PKCE challenge")
    refresh_margin_s: int = Field(
        description=(
            "how long before expiry tokens are refreshed, at most (capped at half a"
            " token's lifetime)"
        )
    )
    min_refresh_interval_s: float | None = Field(
        description=(
            "the least time between two automatic refreshes of one connection, when"
            " the provider needs one"
        )
    )
    tokens_expire: bool = Field(description="whether its access tokens expire")
    supports_refresh: bool = Field(description="whether it issues refresh tokens")
    supports_revoke: bool = Field(description="whether tokens can be revoked at the provider")


class ProviderList(ResponseModel):
    providers: list[ProviderOut] = Field(description="the built-in providers")
    custom_providers: str = Field(
        default=(
            "register a client with a new lowercase slug as provider and its authorization_url "
            "and token_url to use any other standards-compliant OAuth 2.0 provider"
        ),
        description="how to use a provider that is not built in",
    )


class LoginOut(ResponseModel):
    authorization_url: str = Field(description="the provider's page to send the browser to")
    state: str = Field(description="the login's single-use state (also in the URL)")
    expires_at: datetime = Field(description="the login must complete before this")


class TokenOut(ResponseModel):
    provider: str = Field(description="the provider's slug")
    branch_id: str = Field(description="the branch the connection belongs to")
    access_token: str = Field(
        description="the access token to call the provider with; do not log it"
    )
    token_type: str = Field(description="as the provider says, usually `Bearer`")
    expires_at: datetime | None = Field(
        description="when the token expires; null when the provider's tokens do not"
    )
    scope: str | None = Field(description="the scopes granted, as the provider says")


class RefreshRequest(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"branch_id": "branch-42", "provider": "google_search_console"}]
        }
    )

    tenant_id: str | None = Field(
        description="the tenant; default: the token's only tenant",
        default=None,
        pattern=TENANT_ID_PATTERN,
    )
    branch_id: str = Field(
        description="the branch whose connection to refresh", pattern=BRANCH_ID_PATTERN
    )
    provider: str = Field(description="the provider's slug", pattern=PROVIDER_PATTERN)


class DisconnectOut(ResponseModel):
    provider: str = Field(description="the provider's slug")
    branch_id: str = Field(description="the branch")
    disconnected: bool = Field(description="a connection was there and is now deleted")
    revoked_at_provider: bool = Field(
        description="the provider confirmed the revocation of its tokens"
    )


class CallbackOut(ResponseModel):
    status: str = Field(description="`connected`")
    provider: str = Field(description="the provider's slug")
    branch_id: str = Field(description="the branch the connection was made for")
    expires_at: datetime | None = Field(description="when the new access token expires")


class ConnectionOut(ResponseModel):
    """One connection as its tenant's dashboards show it: no token, no secret."""

    id: str = Field(description="Junction's id of the connection")
    provider: str = Field(description="the provider's slug")
    branch_id: str = Field(description="the branch the connection belongs to")
    client_id: str = Field(description="Junction's id of the client it was made with")
    status: str = Field(
        description="active, expiring, expired, refresh_failed or needs_reauth, by the same "
        "rule as /platforms/connected"
    )
    client_status: str = Field(
        description="the client's: misconfigured when the provider refused the app itself"
    )
    expires_at: datetime | None = Field(description="when the access token expires")
    last_refreshed_at: datetime | None = Field(description="when its token was last refreshed")
    last_error: str | None = Field(description="the last failure's safe reason code")
    next_attempt_at: datetime | None = Field(
        description="after a failure: no automatic refresh before this"
    )
    refresh_token_expires_at: datetime | None = Field(
        description="where the provider says so: when the grant lapses and a new login is needed"
    )
    created_at: datetime = Field(description="when it was first connected")
    updated_at: datetime = Field(description="when its row last changed")


class ConnectionPage(ResponseModel):
    """A page of a tenant's connections, and the counts of all that match the filters other
    than `status` (so a dashboard's status tabs come with one call)."""

    items: list[ConnectionOut] = Field(description="this page's connections")
    next_cursor: NextCursor
    total: int = Field(description="connections matching provider and branch_id")
    counts: dict[str, int] = Field(description="of those, how many are in each status")
