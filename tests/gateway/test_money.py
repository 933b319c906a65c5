"""Money arithmetic: exact Decimal costs rounded once to 1e-10 USD, integer units, the header."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.money import (
    QUANTUM,
    Cost,
    Prices,
    cost_of,
    format_usd,
    units_to_usd,
    usd_to_units,
    worst_case_units,
)
from gateway.providers.base import Usage

D = Decimal
OPENAI_MINI = Prices(input=D("0.15"), output=D("0.6"), cached_input=D("0.075"))
CLAUDE = Prices(input=D("3"), output=D("15"), cached_input=D("0.30"), cache_write=D("3.75"))


def test_it_charges_cached_input_at_the_cached_price():
    # 234 plain x 0.15 + 1000 cached x 0.075 + 567 out x 0.6 = 35.1 + 75 + 340.2 = 450.3 per Mtok
    cost = cost_of(Usage(input_tokens=1234, output_tokens=567, cached_tokens=1000), OPENAI_MINI)
    assert cost == Cost(D("0.0004503000"))
    assert cost.units == 4_503_000
    assert cost.unpriced is False


def test_it_charges_cache_reads_and_writes_at_their_own_prices():
    # 5000 x 3 + 2000 x 0.30 + 3000 x 3.75 + 1234 x 15 = 15000 + 600 + 11250 + 18510 = 45360
    usage = Usage(
        input_tokens=10_000, output_tokens=1234, cached_tokens=2000, cache_write_tokens=3000
    )
    assert cost_of(usage, CLAUDE).usd == D("0.0453600000")


def test_it_charges_cached_tokens_at_the_input_price_when_no_cached_price_is_set():
    prices = Prices(input=D("2.5"), output=D("10"))
    cost = cost_of(Usage(input_tokens=1000, output_tokens=0, cached_tokens=600), prices)
    assert cost.usd == D("0.0025000000")


def test_it_never_counts_more_cached_tokens_than_input_tokens():
    # A provider reporting 5000 cached out of 1000 input: all 1000 at the cached price, no credit.
    cost = cost_of(Usage(input_tokens=1000, output_tokens=0, cached_tokens=5000), OPENAI_MINI)
    assert cost.usd == D("0.0000750000")


def test_it_is_exact_for_prices_with_four_decimals():
    prices = Prices(input=D("0.1234"), output=D("0.0001"))
    cost = cost_of(Usage(input_tokens=7, output_tokens=3), prices)
    # (7 x 0.1234 + 3 x 0.0001) / 1e6 = 0.8641e-6
    assert cost.usd == D("0.0000008641")
    assert cost.usd.as_tuple().exponent == QUANTUM.as_tuple().exponent


def test_it_rounds_half_up_once_to_a_tenth_of_a_nano_dollar():
    prices = Prices(input=D("0.00005"), output=D("0.00004"))
    assert cost_of(Usage(input_tokens=1, output_tokens=0), prices).usd == D("1E-10")
    assert cost_of(Usage(input_tokens=0, output_tokens=1), prices).usd == D("0E-10")


def test_an_unpriced_model_costs_unknown_not_zero():
    for prices in (Prices(None, D("2")), Prices(D("1"), None), Prices(None, None)):
        cost = cost_of(Usage(input_tokens=1000, output_tokens=1000), prices)
        assert cost == Cost(D(0), unpriced=True)
        assert cost != Cost(D(0))


def test_worst_case_takes_the_dearest_input_and_output_of_the_chain():
    chain = [Prices(D("1"), D("2")), Prices(D("3"), D("1")), Prices(None, None)]
    # (1000 x 3 + 500 x 2) / 1e6 USD = 0.004 USD = 40,000,000 units
    assert worst_case_units(input_tokens=1000, output_tokens=500, prices=chain) == 40_000_000


def test_worst_case_counts_a_cache_write_price_dearer_than_input():
    # (1000 x 3.75 + 100 x 15) / 1e6 = 0.00525 USD
    assert worst_case_units(input_tokens=1000, output_tokens=100, prices=[CLAUDE]) == 52_500_000


def test_worst_case_rounds_up_to_a_whole_unit():
    prices = [Prices(D("0.00001"), D("0"))]  # one token: 1e-11 USD, a tenth of a unit
    assert worst_case_units(input_tokens=1, output_tokens=0, prices=prices) == 1


def test_worst_case_of_an_all_unpriced_chain_is_zero():
    prices = [Prices(None, None), Prices(D("1"), None)]
    assert worst_case_units(input_tokens=10_000, output_tokens=10_000, prices=prices) == 0


@settings(max_examples=50, deadline=None)
@given(
    usage=st.builds(
        Usage,
        input_tokens=st.integers(0, 10**7),
        output_tokens=st.integers(0, 10**6),
        cached_tokens=st.integers(0, 10**7),
        cache_write_tokens=st.integers(0, 10**7),
    )
)
def test_worst_case_is_never_below_the_actual_cost(usage):
    assert (
        worst_case_units(
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, prices=[CLAUDE]
        )
        >= cost_of(usage, CLAUDE).units
    )


def test_usd_and_units_convert_both_ways():
    assert usd_to_units(D("0.0004503")) == 4_503_000
    assert usd_to_units(D("12.5")) == 125_000_000_000
    assert units_to_usd(4_503_000) == D("0.0004503000")
    assert usd_to_units(D("0.00000000005")) == 1  # half a unit rounds up
    assert usd_to_units(D("0.00000000004")) == 0


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=-(10**15), max_value=10**17))
def test_units_survive_a_round_trip_through_usd(units):
    assert usd_to_units(units_to_usd(units)) == units


def test_format_usd_is_exact_without_exponent_or_trailing_zeros():
    assert format_usd(D("0.0004503000")) == "0.0004503"
    assert format_usd(D("1E-10")) == "0.0000000001"
    assert format_usd(D("100.50")) == "100.5"
    assert format_usd(D("12")) == "12"
    assert format_usd(D("0E-10")) == "0"
    assert format_usd(D(0)) == "0"
