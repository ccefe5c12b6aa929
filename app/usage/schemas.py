"""Request and response bodies of the usage routes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, ConfigDict, Field, JsonValue

from app.core.deps import TENANT_ID_PATTERN
from app.core.schemas import RequestModel, ResponseModel, WholeNumber

MAX_BATCH = 1000
MAX_TOKENS_PER_CALL = 1_000_000_000
# PostgreSQL text cannot hold a NUL character.
_NO_NUL = r"^[^\x00]*$"


# A count of tokens in one call: a whole JSON number, checked strictly after that one conversion.
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS_PER_CALL, strict=True), WholeNumber]


def _token_count(description: str) -> Any:
    return Field(default=None, description=description)


EVENT_EXAMPLE: dict[str, JsonValue] = {
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


class PromptTokensDetails(RequestModel):
    """OpenAI's `usage.prompt_tokens_details`, as the API returned it."""

    cached_tokens: TokenCount | None = _token_count(
        "prompt tokens read from the prompt cache (part of prompt_tokens, at the cached rate)"
    )
    audio_tokens: TokenCount | None = _token_count("accepted as OpenAI sends it; not stored")


class CompletionTokensDetails(RequestModel):
    """OpenAI's `usage.completion_tokens_details`, as the API returned it."""

    reasoning_tokens: TokenCount | None = _token_count(
        "tokens the model spent reasoning (part of completion_tokens, at the reasoning rate)"
    )
    audio_tokens: TokenCount | None = _token_count("accepted as OpenAI sends it; not stored")
    accepted_prediction_tokens: TokenCount | None = _token_count(
        "accepted as OpenAI sends it; not stored"
    )
    rejected_prediction_tokens: TokenCount | None = _token_count(
        "accepted as OpenAI sends it; not stored"
    )


class UsageEventIn(RequestModel):
    """One AI call, as reported by the backend that made it."""

    model_config = ConfigDict(json_schema_extra={"examples": [EVENT_EXAMPLE]})

    tenant_id: str = Field(
        description=("the workspace the call is billed to"), pattern=TENANT_ID_PATTERN
    )
    model: str = Field(
        description=("the model, as the provider names it: `gpt-4o-mini`"),
        min_length=1,
        max_length=128,
        pattern=_NO_NUL,
    )
    prompt_tokens: TokenCount = Field(
        description="prompt (input) tokens, as the provider reported (`usage.prompt_tokens`)"
    )
    completion_tokens: TokenCount = Field(
        description="completion (output) tokens (`usage.completion_tokens`)"
    )
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
    id: str = Field(description="the event's id")
    tenant_id: str = Field(description="the workspace")
    request_id: str | None = Field(description="the idempotency key it was recorded with")
    model: str = Field(description="the model")
    source: str = Field(description="the feature that made the call")
    prompt_tokens: int = Field(description="prompt tokens")
    completion_tokens: int = Field(description="completion tokens")
    total_tokens: int = Field(description="prompt plus completion tokens")
    cached_tokens: int = Field(description="of prompt_tokens, read from the prompt cache")
    reasoning_tokens: int = Field(description="of completion_tokens, spent reasoning")
    estimated_cost_usd: Decimal | None = Field(
        description="USD as an exact decimal string; null when the model has no price"
    )
    price_version: str | None = Field(
        description="the price the cost was computed with (`model@effective-date:fingerprint`);"
        " null when the model has no price"
    )
    occurred_at: datetime = Field(description="when the call happened")
    recorded_at: datetime = Field(description="when Junction recorded it")
    duplicate: bool = Field(
        description="true when request_id was seen before: this is the first event, unchanged"
    )


class UsageBatchRead(ResponseModel):
    items: list[UsageEventRead] = Field(description="one entry per event sent, in order")
    created: int = Field(description="events recorded now")
    duplicates: int = Field(
        description=("events whose request_id was seen before (not counted again)")
    )


class GroupBy(StrEnum):
    model = "model"
    day = "day"
    source = "source"


class UsageFigures(ResponseModel):
    calls: int = Field(description="AI calls")
    prompt_tokens: int = Field(description="prompt (input) tokens")
    completion_tokens: int = Field(description="completion (output) tokens")
    total_tokens: int = Field(description="prompt plus completion tokens")
    cached_tokens: int = Field(description="of prompt_tokens, read from the prompt cache")
    reasoning_tokens: int = Field(description="of completion_tokens, spent reasoning")
    estimated_cost_usd: Decimal = Field(description="sum over priced calls, exact decimal string")
    unpriced_calls: int = Field(description="calls whose model has no price (not in the cost)")


class UsageBucket(UsageFigures):
    key: str = Field(description="the model, the source, or the UTC day (YYYY-MM-DD)")


class LimitFigures(ResponseModel):
    tokens: int | None = Field(description="tokens (prompt plus completion)")
    calls: int | None = Field(description="calls")


class PeriodQuota(ResponseModel):
    period: str = Field(description="the current month, YYYY-MM (UTC)")
    tier: str = Field(description="the workspace's tier")
    limits: LimitFigures = Field(description="null: no limit for this tier")
    used: LimitFigures = Field(description="used so far this period")
    remaining: LimitFigures = Field(description="left this period (null: no limit)")
    exceeded: bool = Field(description="a limit is reached")
    resets_at: datetime = Field(
        description="when the period ends and the counters start again: the first instant of "
        "the next month (UTC)"
    )


class QuotaRead(PeriodQuota):
    tenant_id: str = Field(description="the workspace")


class UsageSummary(ResponseModel):
    tenant_id: str = Field(description="the workspace")
    from_: datetime = Field(description="the range's start (inclusive)", serialization_alias="from")
    to: datetime = Field(description="the range's end (exclusive)")
    group_by: GroupBy = Field(description="how the breakdown is grouped")
    totals: UsageFigures = Field(description="the whole range")
    breakdown: list[UsageBucket] = Field(description="one bucket per model, source or day")
    current_period: PeriodQuota = Field(
        description=("the workspace's counters against its tier's limits this period")
    )


MAX_ALERT_THRESHOLDS = 10


class AlertThresholdsIn(RequestModel):
    """The workspace's alert thresholds, in percent of each of its tier's monthly limits."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"percents": [50, 80, 100]}]})

    percents: list[Annotated[int, Field(ge=1, le=1000, strict=True), WholeNumber]] = Field(
        max_length=MAX_ALERT_THRESHOLDS,
        description="1 to 1000 (over 100: usage past the limit, which is reported, not "
        "enforced); at most 10, duplicates ignored; [] turns the alerts off",
    )


class AlertThresholdsRead(ResponseModel):
    tenant_id: str = Field(description="the workspace")
    percents: list[int] = Field(description="ascending")
    is_default: bool = Field(description="true: never set for this workspace, the defaults apply")
