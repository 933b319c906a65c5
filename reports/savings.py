""" "Saved by routing": what the same tokens would have cost on the model the caller asked for
(or on the default strong model, for `auto`) minus what they cost on the model that served
them. Computed when a record is rolled up, with the prices of that moment."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateway.models import LanguageModel, RouteStep
from gateway.money import Prices, cost_of, usd_to_units
from gateway.providers.base import Usage

AUTO_NAMES = frozenset({"", "auto"})
DEFAULT_ROUTE = "default"


@dataclass(frozen=True, slots=True)
class PriceBook:
    """Prices of every model by client-facing name, and the model `auto` is compared with."""

    prices: dict[str, Prices]
    default_model: str | None

    def reference_for(self, *, requested: str, served: str) -> Prices | None:
        """The prices to compare with, or None when there is nothing to compare."""
        name = self.default_model if requested in AUTO_NAMES else requested
        if name is None or name == served or name not in self.prices:
            return None
        reference = self.prices[name]
        return reference if reference.known else None

    def routing_saved_units(
        self, *, requested: str, served: str, usage: Usage, cost_usd: Decimal
    ) -> int:
        """Reference cost minus actual cost, in units. Negative when routing cost more
        (a fallback to a dearer model): the report shows that honestly rather than hiding it."""
        reference = self.reference_for(requested=requested, served=served)
        if reference is None:
            return 0
        return usd_to_units(cost_of(usage, reference).usd - cost_usd)


def _prices_of(model: LanguageModel) -> Prices:
    return Prices(
        input=model.input_per_mtok,
        output=model.output_per_mtok,
        cached_input=model.cached_input_per_mtok,
        cache_write=model.cache_write_per_mtok,
    )


def load_price_book() -> PriceBook:
    """Two queries: every model's prices, and the first step of the route named "default".

    Without such a route the default strong model is the dearest enabled, priced model
    (by input + output price per Mtok).
    """
    models = list(LanguageModel.objects.all())
    prices = {m.name: _prices_of(m) for m in models}
    default = (
        RouteStep.objects.filter(rule__name=DEFAULT_ROUTE)
        .order_by("position", "id")
        .values_list("model__name", flat=True)
        .first()
    )
    if default is None:
        priced = [m for m in models if m.enabled and m.is_priced]
        if priced:
            default = max(priced, key=lambda m: m.input_per_mtok + m.output_per_mtok).name
    return PriceBook(prices=prices, default_model=default)
