"""The workspace page's AI usage: the chart's series (tokens per day, stacked by model) and the
totals per model, both from the usage domain's summaries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.usage import summaries
from app.usage.schemas import GroupBy, UsageSummary

RANGES_DAYS = (7, 30, 90)


@dataclass(frozen=True)
class UsageChart:
    days: int
    by_model: UsageSummary
    chart: dict[str, Any]  # JSON for static/console.js: {"days": [...], "series": [...]}


def window(days: int, now: datetime) -> summaries.SummaryRange:
    """The last `days` UTC days, today included."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return summaries.SummaryRange(start=today - timedelta(days=days - 1), end=now)


async def usage_chart(
    session: AsyncSession, settings: Settings, tenant_id: str, *, days: int, now: datetime
) -> UsageChart:
    """Tokens per day and model (every day of the range, zeros included), and the totals."""
    span = window(days, now)
    per_model = await summaries.summarize(
        session, settings, tenant_id, span, GroupBy.model, now=now
    )
    daily = await summaries.daily_usage_by_model(session, tenant_id, span.start, span.end)
    labels = [(span.start + timedelta(days=i)).date().isoformat() for i in range(days)]
    position = {day: i for i, day in enumerate(labels)}
    # Models in the totals' order (most tokens first): the largest band sits at the bottom.
    values = {bucket.key: [0] * days for bucket in per_model.breakdown}
    for item in daily:
        row = values.setdefault(item.model, [0] * days)
        row[position[item.day.isoformat()]] += item.figures.total_tokens
    chart = {
        "days": labels,
        "series": [{"label": model, "values": row} for model, row in values.items()],
    }
    return UsageChart(days=days, by_model=per_model, chart=chart)
