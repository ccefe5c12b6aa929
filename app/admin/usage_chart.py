"""The workspace page's AI usage: the chart's series and the totals, from the usage summaries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.usage import service as usage_service
from app.usage.schemas import GroupBy, UsageSummary

RANGES_DAYS = (7, 30, 90)


@dataclass(frozen=True)
class UsageChart:
    days: int
    by_model: UsageSummary
    chart: dict[str, Any]  # JSON for static/console.js: {"days": [...], "series": [...]}


def window(days: int, now: datetime) -> usage_service.SummaryRange:
    """The last `days` UTC days, today included."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return usage_service.SummaryRange(start=today - timedelta(days=days - 1), end=now)


async def usage_chart(
    session: AsyncSession, settings: Settings, tenant_id: str, *, days: int, now: datetime
) -> UsageChart:
    """Tokens per day (every day of the range, zeros included) and the totals per model."""
    span = window(days, now)
    per_day = await usage_service.summarize(
        session, settings, tenant_id, span, GroupBy.day, now=now
    )
    per_model = await usage_service.summarize(
        session, settings, tenant_id, span, GroupBy.model, now=now
    )
    labels = [(span.start + timedelta(days=i)).date().isoformat() for i in range(days)]
    tokens = {bucket.key: bucket.total_tokens for bucket in per_day.breakdown}
    chart = {
        "days": labels,
        "series": [{"label": "all models", "values": [tokens.get(day, 0) for day in labels]}],
    }
    return UsageChart(days=days, by_model=per_model, chart=chart)
