"""The model price table: dated USD rates per million tokens of each kind, and cost arithmetic."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import cached_property
from typing import Any

from app.core.config import Settings

ONE_MILLION = Decimal(1_000_000)
# Ten decimal places keep a single token of the cheapest model exact (0.02 USD / 1M = 2e-8).
COST_SCALE = 10
COST_QUANTUM = Decimal(1).scaleb(-COST_SCALE)
# A price with no date has always been in effect.
SINCE_EVER = date.min
_RATES = ("prompt", "completion", "cached_prompt", "reasoning")


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens. Cached prompt tokens are a part of the prompt tokens and reasoning
    tokens a part of the completion tokens, each billed at its own rate; None: the same rate as
    the whole (no discount), as for a model whose list price has none."""

    prompt: Decimal
    completion: Decimal
    cached_prompt: Decimal | None = None
    reasoning: Decimal | None = None


@dataclass(frozen=True)
class PriceVersion:
    """A model's price from one date (UTC) on, until the next version's date."""

    effective_from: date
    price: ModelPrice

    @cached_property
    def label(self) -> str:
        """What an event stores as the version it was costed with: the model's name, the date
        and a fingerprint of the rates, so a corrected rate on the same date is a new version."""
        rates = "|".join(str(getattr(self.price, name)) for name in _RATES)
        digest = hashlib.sha256(rates.encode()).hexdigest()[:8]
        return f"{self.effective_from.isoformat()}:{digest}"


@dataclass(frozen=True)
class Quote:
    cost: Decimal
    version: str  # "<model>@<effective date>:<fingerprint>"


def _price(
    prompt: str, completion: str, cached_prompt: str | None = None, reasoning: str | None = None
) -> ModelPrice:
    return ModelPrice(
        prompt=Decimal(prompt),
        completion=Decimal(completion),
        cached_prompt=None if cached_prompt is None else Decimal(cached_prompt),
        reasoning=None if reasoning is None else Decimal(reasoning),
    )


# Shipped defaults (list prices, USD per 1M tokens; cached input where the list has one; reasoning
# tokens are billed as output tokens); USAGE_MODEL_PRICES overrides, adds models or dated prices.
DEFAULT_MODEL_PRICES: dict[str, ModelPrice] = {
    "gpt-5": _price("1.25", "10.00", "0.125"),
    "gpt-5-mini": _price("0.25", "2.00", "0.025"),
    "gpt-5-nano": _price("0.05", "0.40", "0.005"),
    "gpt-4.1": _price("2.00", "8.00", "0.50"),
    "gpt-4.1-mini": _price("0.40", "1.60", "0.10"),
    "gpt-4.1-nano": _price("0.10", "0.40", "0.025"),
    "gpt-4o": _price("2.50", "10.00", "1.25"),
    "gpt-4o-mini": _price("0.15", "0.60", "0.075"),
    "gpt-4-turbo": _price("10.00", "30.00"),
    "gpt-4": _price("30.00", "60.00"),
    "gpt-3.5-turbo": _price("0.50", "1.50"),
    "o1": _price("15.00", "60.00", "7.50"),
    "o1-mini": _price("1.10", "4.40", "0.55"),
    "o3": _price("2.00", "8.00", "0.50"),
    "o3-mini": _price("1.10", "4.40", "0.55"),
    "o4-mini": _price("1.10", "4.40", "0.275"),
    "text-embedding-3-small": _price("0.02", "0"),
    "text-embedding-3-large": _price("0.13", "0"),
    "text-embedding-ada-002": _price("0.10", "0"),
}

# Dated snapshots ("gpt-4o-2024-08-06", "gpt-4-0613") are priced as their base model.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


class PriceTable:
    """Each model's price versions, oldest first; model names match case-insensitively."""

    def __init__(self, versions: Mapping[str, Sequence[PriceVersion]]) -> None:
        self._versions = {
            name.lower(): sorted(model_versions, key=lambda v: v.effective_from)
            for name, model_versions in versions.items()
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceTable:
        versions: dict[str, list[PriceVersion]] = {
            name: [PriceVersion(SINCE_EVER, price)] for name, price in DEFAULT_MODEL_PRICES.items()
        }
        for model, overrides in settings.usage_model_prices.items():
            entries = overrides if isinstance(overrides, list) else [overrides]
            # Undated entries first: each dated one inherits the rates in effect before its date.
            for entry in sorted(entries, key=lambda e: str(e.get("effective_from", ""))):
                _apply_override(versions.setdefault(model.lower(), []), model, entry)
        return cls(versions)

    def priced_name(self, model: str) -> str | None:
        """The table's name for a model: itself, or the base model of a dated snapshot."""
        name = model.lower()
        if self._versions.get(name):
            return name
        base = _SNAPSHOT_SUFFIX.sub("", name)
        return base if self._versions.get(base) else None

    def version_at(self, model: str, at: datetime | None = None) -> PriceVersion | None:
        """The version in effect on the UTC day of `at` (default: the latest), or None."""
        name = self.priced_name(model)
        return None if name is None else self._version_of(name, at)

    def _version_of(self, name: str, at: datetime | None) -> PriceVersion | None:
        versions = self._versions[name]
        if at is None:
            return versions[-1]
        day = at.astimezone(UTC).date()
        current = [version for version in versions if version.effective_from <= day]
        return current[-1] if current else None

    def price_of(self, model: str, at: datetime | None = None) -> ModelPrice | None:
        version = self.version_at(model, at)
        return None if version is None else version.price

    def quote(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        at: datetime | None = None,
    ) -> Quote | None:
        """The call's cost at the price in effect when it happened, and that price's version;
        None when the model has no price then (stored as unknown)."""
        name = self.priced_name(model)
        version = None if name is None else self._version_of(name, at)
        if version is None:
            return None
        price = version.price
        cached_rate = price.prompt if price.cached_prompt is None else price.cached_prompt
        reasoning_rate = price.completion if price.reasoning is None else price.reasoning
        cost = (
            (prompt_tokens - cached_tokens) * price.prompt
            + cached_tokens * cached_rate
            + (completion_tokens - reasoning_tokens) * price.completion
            + reasoning_tokens * reasoning_rate
        ) / ONE_MILLION
        return Quote(
            cost=cost.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN),
            version=f"{name}@{version.label}",
        )

    def cost_of(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        at: datetime | None = None,
    ) -> Decimal | None:
        """Estimated USD cost, or None when the model has no price (stored as unknown)."""
        quote = self.quote(
            model,
            prompt_tokens,
            completion_tokens,
            cached_tokens=cached_tokens,
            reasoning_tokens=reasoning_tokens,
            at=at,
        )
        return None if quote is None else quote.cost


def _apply_override(versions: list[PriceVersion], model: str, entry: Mapping[str, Any]) -> None:
    """Patch the undated price (no `effective_from`) or add the price from a date on, its missing
    rates taken from the version in effect the day before."""
    unknown = set(entry) - {*_RATES, "effective_from"}
    if unknown:
        raise ValueError(f"USAGE_MODEL_PRICES[{model!r}]: unknown keys {sorted(unknown)}")
    raw_date = entry.get("effective_from")
    try:
        effective_from = SINCE_EVER if raw_date is None else date.fromisoformat(str(raw_date))
    except ValueError:
        raise ValueError(
            f"USAGE_MODEL_PRICES[{model!r}].effective_from must be a date, YYYY-MM-DD"
        ) from None
    before = [version for version in versions if version.effective_from <= effective_from]
    base = before[-1].price if before else ModelPrice(Decimal(0), Decimal(0))
    rates: dict[str, Decimal] = {}
    for name in _RATES:
        if name in entry:
            try:
                # str() first: Decimal(0.1) would carry the float's binary error into every cost.
                rates[name] = Decimal(str(entry[name]))
            except InvalidOperation:
                raise ValueError(f"USAGE_MODEL_PRICES[{model!r}].{name} must be a number") from None
    price = replace(base, **rates)
    versions[:] = [v for v in versions if v.effective_from != effective_from]
    versions.append(PriceVersion(effective_from, price))
    versions.sort(key=lambda v: v.effective_from)
