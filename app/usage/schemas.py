"""Request and response bodies of the usage routes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import AwareDatetime, Field

from app.core.deps import TENANT_ID_PATTERN
from app.core.schemas import RequestModel, ResponseModel

MAX_BATCH = 1000
MAX_TOKENS_PER_CALL = 1_000_000_000
# PostgreSQL text cannot hold a NUL character.
_NO_NUL = r"^[^\x00]*$"


class UsageEventIn(RequestModel):
    """One AI call, as reported by the backend that made it."""

    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    model: str = Field(min_length=1, max_length=128, pattern=_NO_NUL)
    # strict: 12.5, "12" or true are refused rather than silently coerced.
    prompt_tokens: int = Field(ge=0, le=MAX_TOKENS_PER_CALL, strict=True)
    completion_tokens: int = Field(ge=0, le=MAX_TOKENS_PER_CALL, strict=True)
    source: str = Field(
        min_length=1,
        max_length=64,
        pattern=_NO_NUL,
        description="the feature that made the call, e.g. ai_reply",
    )
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=_NO_NUL,
        description="idempotency key per tenant: a repeat is a no-op that returns the first event",
    )
    occurred_at: AwareDatetime | None = Field(
        default=None, description="when the call happened (timezone required); default: now"
    )


class UsageEventRead(ResponseModel):
    id: str
    tenant_id: str
    request_id: str | None
    model: str
    source: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated_cost_usd: Decimal | None = Field(
        description="USD as an exact decimal string; null when the model has no price"
    )
    occurred_at: datetime
    recorded_at: datetime
    duplicate: bool = Field(
        description="true when request_id was seen before: this is the first event, unchanged"
    )


class UsageBatchRead(ResponseModel):
    items: list[UsageEventRead]
    created: int
    duplicates: int


class GroupBy(StrEnum):
    model = "model"
    day = "day"
    source = "source"


class UsageFigures(ResponseModel):
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated_cost_usd: Decimal = Field(description="sum over priced calls, exact decimal string")
    unpriced_calls: int = Field(description="calls whose model has no price (not in the cost)")


class UsageBucket(UsageFigures):
    key: str = Field(description="the model, the source, or the UTC day (YYYY-MM-DD)")


class LimitFigures(ResponseModel):
    tokens: int | None
    calls: int | None


class PeriodQuota(ResponseModel):
    period: str = Field(description="the current month, YYYY-MM (UTC)")
    tier: str
    limits: LimitFigures = Field(description="null: no limit for this tier")
    used: LimitFigures
    remaining: LimitFigures
    exceeded: bool
    resets_at: datetime


class QuotaRead(PeriodQuota):
    tenant_id: str


class UsageSummary(ResponseModel):
    tenant_id: str
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    group_by: GroupBy
    totals: UsageFigures
    breakdown: list[UsageBucket]
    current_period: PeriodQuota
