"""Request and response bodies of the token-management routes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from app.core.deps import TENANT_ID_PATTERN
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

    authorization_url: str | None = Field(default=None, max_length=2048)
    token_url: str | None = Field(default=None, max_length=2048)
    refresh_url: str | None = Field(default=None, max_length=2048)
    revoke_url: str | None = Field(default=None, max_length=2048)
    scope_separator: str | None = Field(default=None, min_length=1, max_length=3)
    body_format: Literal["form", "json"] | None = None
    client_auth: Literal["basic", "post"] | None = None
    pkce: bool | None = None
    refresh_margin_s: int | None = Field(default=None, ge=0, le=86400)
    min_refresh_interval_s: float | None = Field(default=None, ge=0, le=3600)

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
    tenant_id: str | None = Field(default=None, pattern=TENANT_ID_PATTERN)
    provider: str = Field(pattern=PROVIDER_PATTERN)
    name: str = Field(min_length=1, max_length=255)
    client_id: str = Field(min_length=1, max_length=512)
    client_secret: str = Field(min_length=1, max_length=4096)
    redirect_uri: str | None = Field(default=None, max_length=2048)
    scopes: list[str] | None = None
    return_urls: list[str] = Field(default_factory=list)
    workspace_info: WorkspaceInfo | None = None


class ClientUpdate(_ClientFields):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    client_id: str | None = Field(default=None, min_length=1, max_length=512)
    client_secret: str | None = Field(default=None, min_length=1, max_length=4096)
    redirect_uri: str | None = Field(default=None, max_length=2048)
    scopes: list[str] | None = None
    return_urls: list[str] | None = None
    workspace_info: WorkspaceInfo | None = None


class ClientOut(ResponseModel):
    """A registered client. The secret is never returned, not even masked."""

    id: str
    tenant_id: str
    provider: str
    name: str
    client_id: str
    has_client_secret: bool = True
    redirect_uri: str
    scopes: list[str]
    return_urls: list[str]
    provider_settings: dict[str, Any]
    workspace_info: dict[str, Any] | None
    # `misconfigured` when the provider refused the app itself (status_reason: its error code,
    # e.g. invalid_client); its connections are not refreshed until the client is edited.
    status: str = Field(
        description="active, or misconfigured: the provider refused the app (see status_reason)"
    )
    status_reason: str | None
    status_changed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ClientList(ResponseModel):
    items: list[ClientOut]


class ProviderOut(ResponseModel):
    name: str
    display_name: str
    authorization_url: str
    token_url: str
    refresh_url: str | None
    revoke_url: str | None
    default_scopes: list[str]
    scope_separator: str
    extra_authorize_params: dict[str, str]
    body_format: str
    client_auth: str
    pkce: bool
    refresh_margin_s: int
    min_refresh_interval_s: float | None
    tokens_expire: bool
    supports_refresh: bool
    supports_revoke: bool


class ProviderList(ResponseModel):
    providers: list[ProviderOut]
    custom_providers: str = (
        "register a client with a new lowercase slug as provider and its authorization_url and "
        "token_url to use any other standards-compliant OAuth 2.0 provider"
    )


class LoginOut(ResponseModel):
    authorization_url: str
    state: str
    expires_at: datetime


class TokenOut(ResponseModel):
    provider: str
    branch_id: str
    access_token: str
    token_type: str
    expires_at: datetime | None
    scope: str | None


class RefreshRequest(RequestModel):
    tenant_id: str | None = Field(default=None, pattern=TENANT_ID_PATTERN)
    branch_id: str = Field(pattern=BRANCH_ID_PATTERN)
    provider: str = Field(pattern=PROVIDER_PATTERN)


class DisconnectOut(ResponseModel):
    provider: str
    branch_id: str
    disconnected: bool
    revoked_at_provider: bool


class CallbackOut(ResponseModel):
    status: str
    provider: str
    branch_id: str
    expires_at: datetime | None


class ConnectionOut(ResponseModel):
    """One connection as its tenant's dashboards show it: no token, no secret."""

    id: str = Field(description="Junction's id of the connection")
    provider: str
    branch_id: str
    client_id: str = Field(description="Junction's id of the client it was made with")
    status: str = Field(
        description="active, expiring, expired, refresh_failed or needs_reauth, by the same "
        "rule as /platforms/connected"
    )
    client_status: str = Field(
        description="the client's: misconfigured when the provider refused the app itself"
    )
    expires_at: datetime | None = Field(description="when the access token expires")
    last_refreshed_at: datetime | None
    last_error: str | None = Field(description="the last failure's safe reason code")
    next_attempt_at: datetime | None = Field(
        description="after a failure: no automatic refresh before this"
    )
    refresh_token_expires_at: datetime | None = Field(
        description="where the provider says so: when the grant lapses and a new login is needed"
    )
    created_at: datetime
    updated_at: datetime


class ConnectionPage(ResponseModel):
    """A page of a tenant's connections, and the counts of all that match the filters other
    than `status` (so a dashboard's status tabs come with one call)."""

    items: list[ConnectionOut]
    next_cursor: str | None
    total: int = Field(description="connections matching provider and branch_id")
    counts: dict[str, int] = Field(description="of those, how many are in each status")
