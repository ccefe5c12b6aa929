"""The whole bill: cached and reasoning tokens on events, dated prices, and `usage rerate`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from app.cli import main
from app.core.config import Settings
from app.state import app_state
from app.usage import rerate
from app.usage.models import UsageCounter, UsageDailyRollup, UsageEvent
from app.usage.prices import COST_QUANTUM, PriceTable
from tests.conftest import TokenFactory, bearer, build_settings, running_app
from tests.usage.conftest import Post, Summary, event_body

# Whole UTC days in the past, so summaries of them read the rollups.
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=5)


async def test_cached_and_reasoning_tokens_are_stored_and_priced(post_usage: Post) -> None:
    body = event_body(
        model="gpt-4o",
        prompt_tokens=1000,
        completion_tokens=500,
        prompt_tokens_details={"cached_tokens": 800, "audio_tokens": 0},
        completion_tokens_details={"reasoning_tokens": 100, "accepted_prediction_tokens": 0},
    )
    response = await post_usage(body)
    assert response.status_code == 201
    event = response.json()
    assert (event["cached_tokens"], event["reasoning_tokens"]) == (800, 100)
    # 200 * 2.50 + 800 * 1.25 + 500 * 10.00 (reasoning at the completion rate) per 1M
    assert Decimal(event["estimated_cost_usd"]) == Decimal("0.0065")
    assert event["price_version"].startswith("gpt-4o@")


async def test_an_event_without_details_is_recorded_as_before(post_usage: Post) -> None:
    event = (await post_usage(event_body(prompt_tokens=1000, completion_tokens=500))).json()
    assert (event["cached_tokens"], event["reasoning_tokens"]) == (0, 0)
    assert Decimal(event["estimated_cost_usd"]) == Decimal("0.0075")


@pytest.mark.parametrize(
    ("details", "field"),
    [
        ({"prompt_tokens_details": {"cached_tokens": 1001}}, "prompt_tokens_details.cached_tokens"),
        (
            {"completion_tokens_details": {"reasoning_tokens": 501}},
            "completion_tokens_details.reasoning_tokens",
        ),
    ],
)
async def test_more_cached_or_reasoning_tokens_than_the_whole_is_refused(
    post_usage: Post, details: dict[str, Any], field: str
) -> None:
    response = await post_usage(event_body(prompt_tokens=1000, completion_tokens=500, **details))
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == field


async def test_a_non_integer_cached_count_is_refused(post_usage: Post) -> None:
    response = await post_usage(event_body(prompt_tokens_details={"cached_tokens": "12"}))
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "prompt_tokens_details.cached_tokens"


async def test_the_summary_adds_up_cached_and_reasoning_tokens(
    post_usage: Post, summary: Summary
) -> None:
    for hours in (1, 30):  # one inside a whole day (rollups), one on the partial edge
        await post_usage(
            event_body(
                occurred_at=(DAY + timedelta(hours=hours)).isoformat(),
                prompt_tokens_details={"cached_tokens": 10},
                completion_tokens_details={"reasoning_tokens": 5},
            )
        )
    body = await summary(**{"from": DAY.isoformat(), "to": (DAY + timedelta(hours=36)).isoformat()})
    assert (body["totals"]["cached_tokens"], body["totals"]["reasoning_tokens"]) == (20, 10)


async def test_an_event_is_priced_at_the_price_in_effect_when_it_occurred(
    database_url: str, make_token: TokenFactory
) -> None:
    prices = {"gpt-4o": [{"prompt": 5, "effective_from": DAY.date().isoformat()}]}
    settings = build_settings(database_url, usage_model_prices=prices)
    headers = bearer(make_token(tenants=["tenant-a"], roles=["service"]))
    async with running_app(settings) as (_, client):
        before = await client.post(
            "/usage/openai",
            json=event_body(
                occurred_at=(DAY - timedelta(minutes=1)).isoformat(),
                prompt_tokens=1_000_000,
                completion_tokens=0,
            ),
            headers=headers,
        )
        after = await client.post(
            "/usage/openai",
            json=event_body(
                occurred_at=DAY.isoformat(), prompt_tokens=1_000_000, completion_tokens=0
            ),
            headers=headers,
        )
    assert Decimal(before.json()["estimated_cost_usd"]) == Decimal("2.5")
    assert Decimal(after.json()["estimated_cost_usd"]) == Decimal("5")
    assert before.json()["price_version"] != after.json()["price_version"]


# --- rerate ------------------------------------------------------------------------------------


def _corrected(settings: Settings) -> PriceTable:
    # A correction: gpt-4o's prompt price was 3.00 from DAY on, not 2.50.
    return PriceTable.from_settings(
        settings.model_copy(
            update={
                "usage_model_prices": {
                    "gpt-4o": [{"prompt": 3, "effective_from": DAY.date().isoformat()}]
                }
            }
        )
    )


async def _seed_for_rerate(post_usage: Post) -> None:
    events = [
        event_body(
            occurred_at=(DAY + timedelta(hours=h)).isoformat(),
            prompt_tokens=1_000_000,
            completion_tokens=0,
        )
        for h in (2, 26, 50)
    ]
    events.append(
        event_body(
            model="o3-mini",
            occurred_at=(DAY + timedelta(hours=3)).isoformat(),
            prompt_tokens=1_000_000,
            completion_tokens=0,
        )
    )
    assert (await post_usage(events)).status_code == 201


async def _rerate(
    app: Any, prices: PriceTable, start: datetime, end: datetime
) -> rerate.RerateResult:
    return await rerate.rerate_range(
        app_state(app).sessionmaker, prices, start, end, batch=2, now=datetime.now(UTC)
    )


async def _costs(app: Any) -> dict[str, Any]:
    async with app_state(app).sessionmaker() as session:
        events = (
            await session.execute(
                select(
                    UsageEvent.occurred_at, UsageEvent.model, UsageEvent.estimated_cost_usd
                ).order_by(UsageEvent.occurred_at)
            )
        ).all()
        counters = (await session.execute(select(UsageCounter.estimated_cost_usd))).scalars().all()
        rollups = (
            (await session.execute(select(UsageDailyRollup.estimated_cost_usd))).scalars().all()
        )
    return {
        "events": [Decimal(str(cost)).quantize(COST_QUANTUM) for _, _, cost in events],
        "counters": sum((Decimal(str(c)) for c in counters), Decimal(0)).quantize(COST_QUANTUM),
        "rollups": sum((Decimal(str(c)) for c in rollups), Decimal(0)).quantize(COST_QUANTUM),
    }


async def test_rerate_reprices_the_range_and_counters_and_rollups_follow(
    app: Any, post_usage: Post, summary: Summary
) -> None:
    await _seed_for_rerate(post_usage)
    # Only the first two days: the event at DAY + 50 h keeps its old price.
    result = await _rerate(app, _corrected(app_state(app).settings), DAY, DAY + timedelta(days=2))
    assert (result.scanned, result.changed) == (3, 2)
    costs = await _costs(app)
    assert costs["events"] == [Decimal("3"), Decimal("1.1"), Decimal("3"), Decimal("2.5")]
    assert costs["counters"] == costs["rollups"] == Decimal("9.6")
    whole_days = await summary(
        **{"from": DAY.isoformat(), "to": (DAY + timedelta(days=3)).isoformat()}
    )
    assert Decimal(whole_days["totals"]["estimated_cost_usd"]) == Decimal("9.6")


async def test_rerate_run_twice_changes_nothing_the_second_time(app: Any, post_usage: Post) -> None:
    await _seed_for_rerate(post_usage)
    prices = _corrected(app_state(app).settings)
    await _rerate(app, prices, DAY, DAY + timedelta(days=3))
    once = await _costs(app)
    again = await _rerate(app, prices, DAY, DAY + timedelta(days=3))
    assert (again.scanned, again.changed) == (4, 0)
    assert await _costs(app) == once


async def test_rerate_gives_a_cost_to_a_model_that_gained_a_price(
    app: Any, post_usage: Post, summary: Summary
) -> None:
    await post_usage(
        event_body(
            model="in-house",
            occurred_at=(DAY + timedelta(hours=1)).isoformat(),
            prompt_tokens=1_000_000,
            completion_tokens=0,
        )
    )
    priced = PriceTable.from_settings(
        app_state(app).settings.model_copy(
            update={"usage_model_prices": {"in-house": {"prompt": 0.5}}}
        )
    )
    await _rerate(app, priced, DAY, DAY + timedelta(days=1))
    body = await summary(**{"from": DAY.isoformat(), "to": (DAY + timedelta(days=1)).isoformat()})
    assert (Decimal(body["totals"]["estimated_cost_usd"]), body["totals"]["unpriced_calls"]) == (
        Decimal("0.5"),
        0,
    )


async def test_the_rerate_command_reprices_with_the_settings_prices(
    app: Any,
    post_usage: Post,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _seed_for_rerate(post_usage)
    settings = app_state(app).settings
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ENVIRONMENT", "test")
    if settings.redis_url:
        monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv(
        "USAGE_MODEL_PRICES",
        json.dumps({"gpt-4o": [{"prompt": 3, "effective_from": DAY.date().isoformat()}]}),
    )
    start, end = DAY.date().isoformat(), (DAY + timedelta(days=1)).date().isoformat()
    code = await asyncio.to_thread(main, ["usage", "rerate", "--from", start, "--to", end])
    assert code == 0
    # A date-only --to includes that day: DAY and the next, so the events at 2 h and 26 h.
    assert "3 events read, 2 re-priced" in capsys.readouterr().out
    assert (await _costs(app))["counters"] == Decimal("9.6")


def test_the_rerate_command_refuses_a_range_that_ends_before_it_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["usage", "rerate", "--from", "2026-11-02", "--to", "2026-11-01"]) == 2
    assert "after" in capsys.readouterr().err
