"""Budget alerts: per-workspace thresholds on the tier's monthly limits, each crossing recorded
once per period as a `usage_threshold_crossed` monitoring event (delivered by its webhooks)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import BigInteger, bindparam, cast, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.db import dialect_insert, is_postgres
from app.monitoring import service as monitoring_service
from app.usage.models import UsageAlertSettings, UsageCounter, UsageThresholdCrossing
from app.workspaces import service as workspace_service
from app.workspaces.models import DEFAULT_TIER, Workspace

DEFAULT_ALERT_PERCENTS = (50, 80, 100)
EVENT_THRESHOLD_CROSSED = "usage_threshold_crossed"
METRICS = ("tokens", "calls")


@dataclass(frozen=True)
class AlertSettings:
    percents: list[int]
    is_default: bool


async def get_alert_settings(session: AsyncSession, tenant_id: str) -> AlertSettings:
    percents = await session.scalar(
        select(UsageAlertSettings.percents).where(UsageAlertSettings.tenant_id == tenant_id)
    )
    return _alert_settings_of(percents)


def _alert_settings_of(percents: list[int] | None) -> AlertSettings:
    """A stored row's thresholds; no row: the defaults."""
    if percents is None:
        return AlertSettings(percents=list(DEFAULT_ALERT_PERCENTS), is_default=True)
    return AlertSettings(percents=sorted(percents), is_default=False)


async def put_alert_settings(
    session: AsyncSession, tenant_id: str, percents: Sequence[int], *, now: datetime
) -> AlertSettings:
    """Replace the tenant's thresholds (an empty list: no alerts). Crossings already recorded
    this period stay recorded; a new threshold below today's usage fires at the next period."""
    await workspace_service.ensure_workspace(session, tenant_id)
    ordered = sorted(set(percents))
    statement = dialect_insert(session, UsageAlertSettings).values(
        tenant_id=tenant_id, percents=ordered, updated_at=now
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={"percents": statement.excluded.percents, "updated_at": now},
        )
    )
    return AlertSettings(percents=ordered, is_default=False)


@dataclass(frozen=True)
class Added:
    """What a transaction added to one tenant's period."""

    tenant_id: str
    period: str
    tokens: int
    calls: int


@dataclass(frozen=True)
class Budget:
    """A workspace's tier and alert thresholds, as a recording transaction reads them."""

    tier: str
    alerts: AlertSettings


async def budgets(session: AsyncSession, tenant_ids: Iterable[str]) -> dict[str, Budget]:
    """The tier and thresholds of each of these tenants that has a workspace, in one query."""
    rows = await session.execute(_BUDGETS, {"tenant_ids": sorted(tenant_ids)})
    return {
        tenant_id: Budget(tier=tier or DEFAULT_TIER, alerts=_alert_settings_of(percents))
        for tenant_id, tier, percents in rows
    }


async def record_crossings(
    session: AsyncSession,
    settings: Settings,
    added: Sequence[Added],
    budgets: Mapping[str, Budget],
    *,
    now: datetime,
) -> None:
    """Record each threshold the added usage crossed, in the caller's transaction.

    Exact across concurrent transactions and replicas: on PostgreSQL each (tenant, period) is
    checked under a transaction-scoped advisory lock, taken after the counters were added to and
    held to the commit, so the checks run one after another and each reads every earlier
    writer's committed counters (READ COMMITTED takes a new snapshot per statement). A check's
    range (total - added, total] then follows the previous one's without a gap or an overlap,
    and a threshold is crossed by exactly one transaction. The crossing's primary key
    (tenant, period, metric, percent) is the second guard: once per threshold per period.
    `budgets` has each tenant's tier and thresholds, read earlier in the same transaction.
    """
    limits_by_tier = workspace_service.tier_limits(settings)
    for item in sorted(added, key=lambda a: (a.tenant_id, a.period)):
        budget = budgets[item.tenant_id]
        tier, alert = budget.tier, budget.alerts
        limits = {m: limits_by_tier.get(tier, {}).get(m) for m in METRICS}
        if all(limit is None for limit in limits.values()):
            continue
        if not alert.percents:
            continue
        await _serialize(session, item.tenant_id, item.period)
        totals = await _period_totals(session, item.tenant_id, item.period)
        for metric, limit in limits.items():
            if limit is None or limit <= 0:
                continue
            after = totals[metric]
            before = after - (item.tokens if metric == "tokens" else item.calls)
            for percent in alert.percents:
                threshold = -(-limit * percent // 100)  # ceil: 80% of 1,001 is 801
                if before < threshold <= after:
                    await _record(
                        session, item, tier, metric, percent, threshold, limit, after, now
                    )


# The statements each recorded event batch runs, built once (constructing them per batch cost
# more Python time than running them).
_workspaces = Workspace.__table__
_alert_settings = UsageAlertSettings.__table__
_counters = UsageCounter.__table__
_BUDGETS = (
    select(_workspaces.c.id, _workspaces.c.tier, _alert_settings.c.percents)
    .select_from(
        _workspaces.outerjoin(_alert_settings, _alert_settings.c.tenant_id == _workspaces.c.id)
    )
    .where(_workspaces.c.id.in_(bindparam("tenant_ids", expanding=True)))
)
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_PERIOD_TOTALS = select(
    cast(func.coalesce(func.sum(_counters.c.total_tokens), 0), BigInteger),
    cast(func.coalesce(func.sum(_counters.c.calls), 0), BigInteger),
).where(_counters.c.tenant_id == bindparam("tenant_id"), _counters.c.period == bindparam("period"))


async def _serialize(session: AsyncSession, tenant_id: str, period: str) -> None:
    if not is_postgres(session):
        return  # SQLite has one writer at a time
    digest = hashlib.sha256(f"usage-alerts:{tenant_id}:{period}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    await session.execute(_LOCK, {"key": key})


async def _period_totals(session: AsyncSession, tenant_id: str, period: str) -> dict[str, int]:
    params = {"tenant_id": tenant_id, "period": period}
    row = (await session.execute(_PERIOD_TOTALS, params)).one()
    return {"tokens": int(row[0]), "calls": int(row[1])}


async def _record(
    session: AsyncSession,
    item: Added,
    tier: str,
    metric: str,
    percent: int,
    threshold: int,
    limit: int,
    used: int,
    now: datetime,
) -> None:
    statement = (
        dialect_insert(session, UsageThresholdCrossing)
        .values(
            tenant_id=item.tenant_id,
            period=item.period,
            metric=metric,
            percent=percent,
            threshold=threshold,
            limit_value=limit,
            used=used,
            crossed_at=now,
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "period", "metric", "percent"])
        .returning(UsageThresholdCrossing.tenant_id)
    )
    if (await session.execute(statement)).first() is None:
        return  # already recorded this period
    year, month = (int(part) for part in item.period.split("-"))
    resets_at = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    details: Mapping[str, object] = {
        "metric": metric,
        "percent": percent,
        "threshold": threshold,
        "limit": limit,
        "used": used,
        "period": item.period,
        "tier": tier,
        "resets_at": resets_at.isoformat(),
    }
    await monitoring_service.record_event(
        session,
        tenant_id=item.tenant_id,
        event_type=EVENT_THRESHOLD_CROSSED,
        provider="usage",
        reason=f"{metric} reached {percent}% of the {tier} tier's monthly limit "
        f"({used:,} of {limit:,} in {item.period})",
        details=dict(details),
        occurred_at=now,
    )
