"""Cost arithmetic against hand-computed values."""

from __future__ import annotations

from decimal import Decimal

from app.core.config import Settings
from app.usage.prices import PriceTable


def _table(**overrides: dict[str, float]) -> PriceTable:
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
