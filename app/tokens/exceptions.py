"""Domain errors of the tokens domain, each mapped to an HTTP answer by the core handler."""

from __future__ import annotations

from app.core.errors import BadRequest, Conflict, InvalidField, NotFound, ServiceUnavailable


class ClientNotFound(NotFound):
    code = "client_not_found"


class ConnectionNotFound(NotFound):
    code = "connection_not_found"


class InvalidState(BadRequest):
    """A callback's state is unknown, already used or expired."""

    code = "invalid_state"


class StateExpired(InvalidState):
    code = "state_expired"


class NeedsReauth(Conflict):
    """The provider refused the grant (or the stored token no longer decrypts); a user must log
    in again."""

    code = "needs_reauth"


class RefreshNotSupported(Conflict):
    """The provider issued no refresh token for this connection."""

    code = "refresh_not_supported"


class ReturnUrlNotAllowed(InvalidField):
    code = "return_url_not_allowed"

    def __init__(self) -> None:
        super().__init__("return_url", "not in this client's allowed return URLs")


class UnsafeDestination(InvalidField):
    """A custom provider URL that resolves to an address Junction must not send secrets to."""

    code = "unsafe_destination"


class RefreshUnavailable(ServiceUnavailable):
    """The provider could not refresh the token: a read of an expired token, or a forced
    refresh. Always 503 (retry after `retry_at`, the end of the cooldown, when known)."""

    code = "refresh_failed"


class ClientMisconfigured(ServiceUnavailable):
    """A read of an expired token (or a forced refresh) whose client the provider refused: no
    provider call is made until the client is edited. The same code as any refresh failure."""

    code = "refresh_failed"


class RefreshInProgress(ServiceUnavailable):
    """Another worker holds the refresh lock for longer than a reader is willing to wait."""

    code = "refresh_in_progress"


class ProviderError(Exception):
    """A provider call failed. `code` is a short safe reason: the provider's own `error` code
    (e.g. "invalid_grant"), "http_503", "timeout", "network_error" or "invalid_response";
    nothing the provider echoed (tokens, secrets) is kept."""

    def __init__(
        self, code: str, *, status_code: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(code)
        self.code = code
        self.status_code = status_code
        # A 429's (or 503's) Retry-After, in seconds from now, already bounded.
        self.retry_after_s = retry_after_s

    @property
    def revokes_grant(self) -> bool:
        # `no_refresh_token`: an expired token with nothing to refresh it is as dead as a
        # revoked grant.
        return self.code in {"invalid_grant", "no_refresh_token"}

    @property
    def rejects_client(self) -> bool:
        """The provider refused the OAuth app itself (a rotated secret, a deleted app): every
        connection of its client fails alike, until the client is edited."""
        return self.code in {"invalid_client", "unauthorized_client"}
