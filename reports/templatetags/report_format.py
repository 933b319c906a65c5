"""Display formats for report pages: dollars, percentages and milliseconds."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django import template

register = template.Library()


CENT = Decimal("0.01")


@register.filter
def usd(value) -> str:
    """Whole cents everywhere, so a row never mixes "$1.35" with "$0.7643". A non-zero amount
    under half a cent, which cents would show as $0.00, keeps two significant digits
    ("$0.000021"): an amount that is not zero never reads as zero."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value)
    rounded = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    if amount and not rounded:
        digits = 1 - amount.adjusted()  # 2 significant digits
        rounded = amount.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
        rounded = rounded.normalize() if rounded.as_tuple().exponent < -2 else rounded
    sign = "-" if rounded < 0 else ""
    return f"{sign}${abs(rounded):,f}"


@register.filter
def usd_abs(value) -> str:
    """An amount without its sign, for sentences that say "more" or "less"."""
    if value is None or value == "":
        return "—"
    return usd(abs(Decimal(value)))


@register.filter
def percent_abs(value) -> str:
    """A percentage already in 0..100 (Decimal), without its sign; None as a dash."""
    if value is None or value == "":
        return "—"
    return f"{abs(Decimal(value)):.1f} %"


@register.filter
def percent(value) -> str:
    """A percentage already in 0..100 (Decimal), with its sign: a loss reads "-40.0 %"."""
    if value is None or value == "":
        return "—"
    return f"{Decimal(value):.1f} %"


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
