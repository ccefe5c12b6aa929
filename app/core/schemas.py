"""Base pydantic models shared by every domain."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator


def check_storable(value: Any) -> None:
    """Refuse what PostgreSQL cannot store or a JSON reader cannot parse: NUL characters, lone
    surrogates and non-finite numbers (Python's JSON parser accepts NaN and Infinity). Iterative:
    a deeply nested value cannot exhaust the stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("must not contain a NUL character")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("must be valid unicode (no lone surrogates)") from None
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise ValueError("must be a finite number (no NaN or Infinity)")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _in_utc(value: datetime) -> datetime:
    # A naive time is read as UTC; an offset near the ends of the calendar can fall outside it
    # (0001-01-01T00:00:00+01:00), which Python cannot represent.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be a time between years 1 and 9999 in UTC") from None


def _whole_number(value: Any) -> Any:
    # JSON has one kind of number, so 12.0 is the integer 12 (as JSON Schema's "integer" says);
    # 12.5, "12" and true are still refused by the strict integer check that follows.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# After `Field(strict=True, ...)` on an int: a whole JSON number, however it is written.
WholeNumber = BeforeValidator(_whole_number)

# A datetime in a request body, normalized to UTC.
UTCDatetime = Annotated[datetime, AfterValidator(_in_utc)]


def bounded_object(max_depth: int, max_items: int) -> AfterValidator:
    """A free-form JSON object nested at most `max_depth` deep (the object itself is 1) with at
    most `max_items` keys and list items in all; its size in bytes is bounded by the body limit.
    Iterative, so a deep value cannot exhaust the stack."""

    def check(value: dict[str, Any]) -> dict[str, Any]:
        count = 0
        stack: list[tuple[Any, int]] = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            if depth > max_depth:
                raise ValueError(f"nested more than {max_depth} levels deep")
            children: list[Any] = list(item.values()) if isinstance(item, dict) else item
            count += len(children)
            if count > max_items:
                raise ValueError(f"more than {max_items} keys and items in all")
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
        return value

    return AfterValidator(check)


class RequestModel(BaseModel):
    """Request bodies: unknown fields are refused, so a typo is an error, not a silent no-op;
    text and numbers that one of the two databases could not store are refused on both."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        check_storable(value)
        return value


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorResponse(BaseModel):
    """Every error answer: a stable code to branch on and a sentence for people."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"example": {"error": "not_found", "detail": "no such client"}},
    )

    error: str = Field(description="a stable, machine-readable code (`snake_case`)")
    detail: str = Field(description="what went wrong and why, for a person; may change")


class FieldError(BaseModel):
    field: str = Field(description="where: `providers[0].priority`, `query.limit`, `body`")
    message: str = Field(description="the rule the value breaks")


class InvalidFieldsResponse(ErrorResponse):
    """A 422: the request's fields that break their rules, each named."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "error": "validation_error",
                "detail": "query.limit: Input should be less than or equal to 200",
                "fields": [
                    {"field": "query.limit", "message": "Input should be less than or equal to 200"}
                ],
            }
        },
    )

    fields: list[FieldError] = Field(description="one entry per field that breaks a rule")
