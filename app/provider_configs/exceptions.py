"""Errors of the provider_configs domain, mapped to HTTP by the foundation's one handler."""

from __future__ import annotations

from typing import Any

from app.core.errors import Conflict, DomainError, InvalidField, NotFound


class ConfigNotFound(NotFound):
    code = "config_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class VersionConflict(Conflict):
    code = "version_conflict"

    def __init__(self, detail: str, *, current_version: int, **extra: Any) -> None:
        super().__init__(detail, current_version=current_version, **extra)


class NotRestorable(InvalidField):
    code = "not_restorable"


class SecretUndecryptable(Conflict):
    """A stored secret does not decrypt (its key was removed, or the row was tampered with)."""

    code = "secret_undecryptable"


class TooManyStreams(DomainError):
    """The tenant holds as many change streams on this replica as it may."""

    status_code = 429
    code = "too_many_streams"
