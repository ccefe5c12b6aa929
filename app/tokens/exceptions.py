"""Domain errors of the tokens domain, each mapped to an HTTP answer by the core handler."""

from __future__ import annotations

from app.core.errors import BadRequest, Conflict, NotFound, ServiceUnavailable


class ClientNotFound(NotFound):
    code = "client_not_found"


class ConnectionNotFound(NotFound):
    code = "connection_not_found"


class InvalidState(BadRequest):
    """A callback's state is unknown, already used or expired."""

    code = "invalid_state"


class NeedsReauth(Conflict):
    """The provider refused the grant; a user must log in again."""

    code = "needs_reauth"


class RefreshUnavailable(ServiceUnavailable):
    """The token is expired and the last refresh failed; retry after the cooldown."""

    code = "refresh_failed"


class RefreshInProgress(ServiceUnavailable):
    """Another worker holds the refresh lock for longer than a reader is willing to wait."""

    code = "refresh_in_progress"


class ProviderError(Exception):
    """A provider call failed. `code` is a short safe reason: the provider's own `error` code
    (e.g. "invalid_grant"), "http_503", "timeout", "network_error" or "invalid_response";
    nothing the provider echoed (tokens, secrets) is kept."""

    def __init__(self, code: str, *, status_code: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.status_code = status_code

    @property
    def revokes_grant(self) -> bool:
        # `no_refresh_token`: an expired token with nothing to refresh it is as dead as a
        # revoked grant.
        return self.code in {"invalid_grant", "no_refresh_token"}
