"""Cost arithmetic against hand-computed values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from app.core.config import Settings
from app.usage.prices import PriceTable


def _table(**overrides: dict[str, float | str]) -> PriceTable:
    return PriceTable.from_settings(Settings(_env_file=None, usage_model_prices=overrides))


def test_cost_is_prompt_and_completion_tokens_at_their_price_per_million() -> None:
    # gpt-4o: 2.50 and 10.00 USD per 1M: 1000 * 2.5e-6 + 500 * 1e-5 = 0.0025 + 0.005
    assert _table().cost_of("gpt-4o", 1000, 500) == Decimal("0.0075")


def test_cost_keeps_sub_cent_precision_exactly() -> None:
    # gpt-4o-mini: 0.15 and 0.60 per 1M: (1234 * 0.15 + 567 * 0.60) / 1e6 = 525.3 / 1e6
    assert _table().cost_of("gpt-4o-mini", 1234, 567) == Decimal("0.0005253")


def test_a_single_token_of_the_cheapest_model_is_not_rounded_away() -> None:
    # text-embedding-3-small: 0.02 per 1M prompt tokens
    assert _table().cost_of("text-embedding-3-small", 1, 0) == Decimal("0.00000002")


def test_zero_tokens_cost_nothing() -> None:
    assert _table().cost_of("gpt-4o", 0, 0) == Decimal(0)


def test_dated_snapshot_is_priced_as_its_base_model() -> None:
    table = _table()
    assert table.cost_of("gpt-4o-2024-08-06", 1000, 500) == Decimal("0.0075")
    assert table.cost_of("gpt-4-0613", 1_000_000, 0) == Decimal("30")


def test_model_names_match_case_insensitively() -> None:
    assert _table().cost_of("GPT-4o", 1000, 500) == Decimal("0.0075")


def test_unknown_model_has_no_cost() -> None:
    assert _table().cost_of("llama-3-70b", 1000, 500) is None


def test_settings_override_a_price_without_float_error() -> None:
    # 0.1 as a float is 0.1000000000000000055...; the table must use the decimal the operator wrote
    table = _table(**{"gpt-4o": {"prompt": 0.1, "completion": 0.3}})
    assert table.cost_of("gpt-4o", 3_000_000, 1_000_000) == Decimal("0.6")


def test_settings_add_a_model_with_a_partial_price() -> None:
    table = _table(**{"my-model": {"prompt": 1.5}})
    assert table.cost_of("my-model", 2_000_000, 7) == Decimal("3")


def test_cached_prompt_tokens_are_billed_at_the_cached_rate() -> None:
    # gpt-4o: 1000 prompt tokens of which 800 cached: 200 * 2.50 + 800 * 1.25, + 500 * 10.00
    assert _table().cost_of("gpt-4o", 1000, 500, cached_tokens=800) == Decimal("0.0065")


def test_reasoning_tokens_are_billed_at_their_own_rate() -> None:
    table = _table(**{"o3": {"reasoning": 9}})
    # o3: 100 prompt at 2.00; 1000 completion, 600 of them reasoning: 400 * 8.00 + 600 * 9.00
    assert table.cost_of("o3", 100, 1000, reasoning_tokens=600) == Decimal("0.0088")


def test_a_model_without_a_cached_rate_bills_cached_tokens_as_prompt_tokens() -> None:
    assert _table().cost_of("gpt-4", 1000, 0, cached_tokens=1000) == Decimal("0.03")


def _dated(*entries: dict[str, float | str]) -> PriceTable:
    return PriceTable.from_settings(
        Settings(_env_file=None, usage_model_prices={"gpt-4o": list(entries)})
    )


def test_a_price_changes_on_its_effective_date_in_utc() -> None:
    table = _dated({"prompt": 5, "effective_from": "2026-11-15"})
    before = datetime(2026, 11, 14, 23, 59, tzinfo=UTC)
    on = datetime(2026, 11, 14, 20, 0, tzinfo=timezone(timedelta(hours=-5)))  # 01:00 UTC the 15th
    assert table.cost_of("gpt-4o", 1_000_000, 0, at=before) == Decimal("2.5")
    assert table.cost_of("gpt-4o", 1_000_000, 0, at=on) == Decimal("5")


def test_a_dated_price_keeps_the_rates_it_does_not_name() -> None:
    table = _dated({"prompt": 5, "effective_from": "2026-11-15"})
    at = datetime(2026, 11, 20, tzinfo=UTC)
    assert table.cost_of("gpt-4o", 0, 1_000_000, cached_tokens=0, at=at) == Decimal("10")


def test_each_price_version_has_its_own_label() -> None:
    table = _dated({"prompt": 5, "effective_from": "2026-11-15"})
    old = table.quote("gpt-4o", 1, 1, at=datetime(2026, 11, 1, tzinfo=UTC))
    new = table.quote("gpt-4o", 1, 1, at=datetime(2026, 11, 16, tzinfo=UTC))
    assert old is not None and new is not None
    assert old.version.startswith("gpt-4o@0001-01-01:")
    assert new.version.startswith("gpt-4o@2026-11-15:")
    corrected = _dated({"prompt": 5.5, "effective_from": "2026-11-15"})
    again = corrected.quote("gpt-4o", 1, 1, at=datetime(2026, 11, 16, tzinfo=UTC))
    assert again is not None and again.version != new.version  # same date, corrected rate


def test_a_snapshot_is_costed_with_its_base_models_version() -> None:
    quote = _table().quote("gpt-4o-2024-08-06", 1, 1)
    assert quote is not None and quote.version.startswith("gpt-4o@")


def test_an_unknown_key_in_a_price_override_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        _table(**{"gpt-4o": {"promt": 1.0}})
