"""The one place for money arithmetic.

Prices are Decimal USD per million tokens. A cost is computed exactly in Decimal and rounded
once, half-up, to 10 decimal places (1e-10 USD, a "unit"): prices with up to 4 decimals per
million tokens are therefore exact. Redis budget counters hold integer units so that Lua can
add them without floating point; the ledger stores the same value as a Decimal.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the kernel imports nothing above it (docs/architecture.md)
    from gateway.providers.base import Usage

QUANTUM = Decimal("1e-10")
UNITS_PER_USD = 10**10
MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens; None means the model is unpriced (cost unknown, never $0)."""

    input: Decimal | None
    output: Decimal | None
    cached_input: Decimal | None = None  # None: charged at the input price
    cache_write: Decimal | None = None  # None: charged at the input price

    @property
    def known(self) -> bool:
        return self.input is not None and self.output is not None


@dataclass(frozen=True, slots=True)
class Cost:
    usd: Decimal
    unpriced: bool = False

    @property
    def units(self) -> int:
        return usd_to_units(self.usd)


def cost_of(usage: Usage, prices: Prices) -> Cost:
    """The exact cost of a call.

    `usage.input_tokens` includes the cached and cache-written tokens (see `Usage`), so the
    plain input price applies to what is left once those are taken out.
    """
    if prices.input is None or prices.output is None:  # `not prices.known`, spelled for mypy
        return Cost(Decimal(0), unpriced=True)
    cached = min(usage.cached_tokens, usage.input_tokens)
    written = min(usage.cache_write_tokens, usage.input_tokens - cached)
    plain = usage.input_tokens - cached - written
    cached_price = prices.cached_input if prices.cached_input is not None else prices.input
    write_price = prices.cache_write if prices.cache_write is not None else prices.input
    total = (
        plain * prices.input
        + cached * cached_price
        + written * write_price
        + usage.output_tokens * prices.output
    ) / MILLION
    return Cost(total.quantize(QUANTUM, rounding=ROUND_HALF_UP))


def worst_case_units(*, input_tokens: int, output_tokens: int, prices: list[Prices]) -> int:
    """An upper bound of a call's cost over a chain of models, in units, rounded up.

    Takes the dearest input and the dearest output price of the chain (cache writes can be
    dearer than plain input, so they count too). Unpriced models contribute nothing here: a
    request that might be served by one is still reserved at the dearest known price.
    """
    known = [(p.input, p.output, p.cache_write) for p in prices if p.known]
    if not known:
        return 0
    dearest_in = max(max(i, w or i) for i, _, w in known if i is not None)
    dearest_out = max(o for _, o, _ in known if o is not None)
    usd = (input_tokens * dearest_in + output_tokens * dearest_out) / MILLION
    return int((usd * UNITS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def usd_to_units(usd: Decimal) -> int:
    return int((usd * UNITS_PER_USD).to_integral_value(rounding=ROUND_HALF_UP))


def units_to_usd(units: int) -> Decimal:
    return (Decimal(units) / UNITS_PER_USD).quantize(QUANTUM)


def format_usd(usd: Decimal) -> str:
    """For the X-Gateway-Cost-USD header: exact, without exponent or trailing zeros."""
    text = format(usd.quantize(QUANTUM), "f").rstrip("0").rstrip(".")
    return text or "0"
