"""Base pydantic models shared by every domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator


def _find_nul(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_nul(key, path) or _find_nul(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_nul(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


class RequestModel(BaseModel):
    """Request bodies: unknown fields are refused, so a typo is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="after")
    def _refuse_nul_characters(self) -> RequestModel:
        # PostgreSQL cannot store NUL in text; refusing it everywhere keeps both databases alike.
        # Runs after the fields' own validators, which can name the field more precisely.
        for name, value in self.__dict__.items():
            where = _find_nul(value, name)
            if where is not None:
                raise ValueError(f"{where}: NUL characters are not allowed")
        return self


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorResponse(BaseModel):
    error: str
    detail: str


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def utc_iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
