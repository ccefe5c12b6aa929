"""Errors of the usage domain."""

from __future__ import annotations

from app.core.errors import InvalidField


class InvalidUsageInput(InvalidField):
    """A value that passed the schema but breaks a usage rule; 422 naming the field."""
