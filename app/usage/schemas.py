"""Request and response bodies of the usage routes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, ConfigDict, Field

from app.core.deps import TENANT_ID_PATTERN
from app.core.schemas import RequestModel, ResponseModel

MAX_BATCH = 1000
MAX_TOKENS_PER_CALL = 1_000_000_000
# PostgreSQL text cannot hold a NUL character.
_NO_NUL = r"^[^\x00]*$"


def _token_count(description: str) -> Any:
    return Field(default=None, ge=0, le=MAX_TOKENS_PER_CALL, strict=True, description=description)


class PromptTokensDetails(RequestModel):
    """OpenAI's `usage.prompt_tokens_details`, as the API returned it."""

    cached_tokens: int | None = _token_count(
        "prompt tokens read from the prompt cache (part of prompt_tokens, at the cached rate)"
    )
    audio_tokens: int | None = _token_count("accepted as OpenAI sends it; not stored")


class CompletionTokensDetails(RequestModel):
    """OpenAI's `usage.completion_tokens_details`, as the API returned it."""

    reasoning_tokens: int | None = _token_count(
        "tokens the model spent reasoning (part of completion_tokens, at the reasoning rate)"
    )
    audio_tokens: int | None = _token_count("accepted as OpenAI sends it; not stored")
    accepted_prediction_tokens: int | None = _token_count("accepted as OpenAI sends it; not stored")
    rejected_prediction_tokens: int | None = _token_count("accepted as OpenAI sends it; not stored")


class UsageEventIn(RequestModel):
    """One AI call, as reported by the backend that made it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tenant_id": "tenant-a",
                    "model": "gpt-4o",
                    "prompt_tokens": 1200,
                    "completion_tokens": 350,
                    "source": "ai_reply",
                    "request_id": "chatcmpl-8x2f",
                    "prompt_tokens_details": {"cached_tokens": 1024},
                    "completion_tokens_details": {"reasoning_tokens": 0},
                    "occurred_at": "2026-11-30T14:05:00Z",
                }
            ]
        }
    )

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
    prompt_tokens_details: PromptTokensDetails | None = Field(
        default=None, description="optional: how many of the prompt tokens were cached"
    )
    completion_tokens_details: CompletionTokensDetails | None = Field(
        default=None, description="optional: how many of the completion tokens were reasoning"
    )

    @property
    def cached_tokens(self) -> int:
        details = self.prompt_tokens_details
        return (details.cached_tokens or 0) if details else 0

    @property
    def reasoning_tokens(self) -> int:
        details = self.completion_tokens_details
        return (details.reasoning_tokens or 0) if details else 0


class UsageEventRead(ResponseModel):
    id: str
    tenant_id: str
    request_id: str | None
    model: str
    source: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = Field(description="of prompt_tokens, read from the prompt cache")
    reasoning_tokens: int = Field(description="of completion_tokens, spent reasoning")
    estimated_cost_usd: Decimal | None = Field(
        description="USD as an exact decimal string; null when the model has no price"
    )
    price_version: str | None = Field(
        description="the price the cost was computed with (`model@effective-date:fingerprint`);"
        " null when the model has no price"
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
    cached_tokens: int = Field(description="of prompt_tokens, read from the prompt cache")
    reasoning_tokens: int = Field(description="of completion_tokens, spent reasoning")
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
