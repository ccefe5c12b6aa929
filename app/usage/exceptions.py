"""Errors of the usage domain."""

from __future__ import annotations

from app.core.errors import InvalidInput


class InvalidUsageInput(InvalidInput):
    """A value that passed the schema but breaks a usage rule; 422 naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", fields=[{"field": field, "message": message}])
