"""The model price table: USD per million prompt and completion tokens, and cost arithmetic."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from app.core.config import Settings

ONE_MILLION = Decimal(1_000_000)
# Ten decimal places keep a single token of the cheapest model exact (0.02 USD / 1M = 2e-8).
COST_SCALE = 10
COST_QUANTUM = Decimal(1).scaleb(-COST_SCALE)


@dataclass(frozen=True)
class ModelPrice:
    prompt: Decimal
    completion: Decimal


def _price(prompt: str, completion: str) -> ModelPrice:
    return ModelPrice(prompt=Decimal(prompt), completion=Decimal(completion))


# Shipped defaults (list prices, USD per 1M tokens); USAGE_MODEL_PRICES overrides or adds models.
DEFAULT_MODEL_PRICES: dict[str, ModelPrice] = {
    "gpt-5": _price("1.25", "10.00"),
    "gpt-5-mini": _price("0.25", "2.00"),
    "gpt-5-nano": _price("0.05", "0.40"),
    "gpt-4.1": _price("2.00", "8.00"),
    "gpt-4.1-mini": _price("0.40", "1.60"),
    "gpt-4.1-nano": _price("0.10", "0.40"),
    "gpt-4o": _price("2.50", "10.00"),
    "gpt-4o-mini": _price("0.15", "0.60"),
    "gpt-4-turbo": _price("10.00", "30.00"),
    "gpt-4": _price("30.00", "60.00"),
    "gpt-3.5-turbo": _price("0.50", "1.50"),
    "o1": _price("15.00", "60.00"),
    "o1-mini": _price("1.10", "4.40"),
    "o3": _price("2.00", "8.00"),
    "o3-mini": _price("1.10", "4.40"),
    "o4-mini": _price("1.10", "4.40"),
    "text-embedding-3-small": _price("0.02", "0"),
    "text-embedding-3-large": _price("0.13", "0"),
    "text-embedding-ada-002": _price("0.10", "0"),
}

# Dated snapshots ("gpt-4o-2024-08-06", "gpt-4-0613") are priced as their base model.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


class PriceTable:
    """Defaults merged with the settings' overrides; model names match case-insensitively."""

    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self._prices = {name.lower(): price for name, price in prices.items()}

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceTable:
        prices = dict(DEFAULT_MODEL_PRICES)
        for model, override in settings.usage_model_prices.items():
            base = prices.get(model.lower(), ModelPrice(Decimal(0), Decimal(0)))
            # str() first: Decimal(0.1) would carry the float's binary error into every cost.
            prices[model.lower()] = ModelPrice(
                prompt=Decimal(str(override["prompt"])) if "prompt" in override else base.prompt,
                completion=(
                    Decimal(str(override["completion"]))
                    if "completion" in override
                    else base.completion
                ),
            )
        return cls(prices)

    def price_of(self, model: str) -> ModelPrice | None:
        name = model.lower()
        price = self._prices.get(name)
        if price is None:
            price = self._prices.get(_SNAPSHOT_SUFFIX.sub("", name))
        return price

    def cost_of(self, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal | None:
        """Estimated USD cost, or None when the model has no price (stored as unknown)."""
        price = self.price_of(model)
        if price is None:
            return None
        cost = (prompt_tokens * price.prompt + completion_tokens * price.completion) / ONE_MILLION
        return cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)
