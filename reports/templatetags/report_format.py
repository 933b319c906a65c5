"""Display formats for report pages: dollars, percentages and milliseconds."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django import template

register = template.Library()


@register.filter
def usd(value) -> str:
    """Whole cents, or four decimals under a dollar so that small costs do not read as $0.00."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value)
    places = Decimal("0.0001") if 0 < abs(amount) < 1 else Decimal("0.01")
    rounded = amount.quantize(places, rounding=ROUND_HALF_UP)
    sign = "-" if rounded < 0 else ""
    return f"{sign}${abs(rounded):,}"


@register.filter
def pct(ratio) -> str:
    """A 0..1 ratio as a percentage; None (no data) as a dash."""
    if ratio is None or ratio == "":
        return "—"
    return f"{float(ratio) * 100:.1f} %"


@register.filter
def ms(value) -> str:
    return "—" if value is None else f"{float(value):,.0f} ms"


@register.filter
def count(value) -> str:
    """A whole number with thousands separators (1,234,567); None as a dash."""
    if value is None or value == "":
        return "—"
    return f"{int(value):,}"
