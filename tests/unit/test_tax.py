"""schemas.tax: VAT arithmetic on Decimals, examples plus hypothesis properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.money import CENT, quantize_cents
from schemas.tax import (
    ACCEPTED_TAX_RATES,
    INVOICE_TAX_TOLERANCE,
    LINE_TAX_TOLERANCE,
    QTY_PRICE_TOLERANCE,
    LineAmounts,
    bill_totals,
    expected_line_tax,
    format_tax_rate,
    invoice_tax_error,
    line_amounts,
    line_tax_deviation,
    parse_tax_rate,
    qty_price_deviation,
    split_inclusive,
    tax_from_exclusive,
)

amounts = st.decimals(
    min_value=Decimal("-999999999999.99"),
    max_value=Decimal("999999999999.99"),
    places=2,
    allow_nan=False,
    allow_infinity=False,
)
rates = st.sampled_from(sorted(ACCEPTED_TAX_RATES))
cents = st.integers(min_value=-500, max_value=500).map(lambda n: Decimal(n) / 100)


def test_constants_are_the_documented_values() -> None:
    assert Decimal("0.06") == LINE_TAX_TOLERANCE
    assert Decimal("1.27") == INVOICE_TAX_TOLERANCE
    assert Decimal("0.01") == QTY_PRICE_TOLERANCE
    assert {format_tax_rate(r) for r in ACCEPTED_TAX_RATES} == {
        "0", "0.01", "0.015", "0.03", "0.04", "0.05", "0.06", "0.09",
        "0.10", "0.11", "0.13", "0.16", "0.17",
    }  # fmt: skip


# --- parse_tax_rate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.13", "0.13"),
        ("13%", "0.13"),
        ("13 %", "0.13"),
        ("13％", "0.13"),  # full-width percent sign, as typed in Chinese input methods
        ("13", "0.13"),
        (13, "0.13"),
        (Decimal("0.13"), "0.13"),
        ("0.130", "0.13"),
        ("1.5%", "0.015"),
        ("1.5", "0.015"),
        ("0.015", "0.015"),
        ("10%", "0.1"),
        ("0.10", "0.1"),
        ("0", "0"),
        ("0%", "0"),
        (0, "0"),
        ("0.00", "0"),
        ("3", "0.03"),
    ],
)
def test_parse_tax_rate_reads_fractions_percentages_and_whole_numbers(
    raw: str | Decimal | int, expected: str
) -> None:
    rate = parse_tax_rate(raw)
    assert rate == Decimal(expected)
    assert str(rate) == expected  # normalised, so equal rates compare and hash alike
    assert rate in ACCEPTED_TAX_RATES


@pytest.mark.parametrize(
    "raw", ["0.14", "14%", "0.0135", "abc", "", "-13%", "100%", "0.130001", "13.5%"]
)
def test_parse_tax_rate_refuses_rates_outside_the_accepted_set(raw: str) -> None:
    with pytest.raises(ValueError, match="tax rate"):
        parse_tax_rate(raw)


def test_parse_tax_rate_reads_one_as_one_percent_not_one_hundred() -> None:
    # No accepted rate is 100 %, so a whole number is a percentage.
    assert parse_tax_rate(1) == Decimal("0.01")


def test_parse_tax_rate_refuses_float() -> None:
    with pytest.raises(TypeError, match="never float"):
        parse_tax_rate(0.13)  # type: ignore[arg-type]


@given(rates)
def test_format_then_parse_round_trips(rate: Decimal) -> None:
    assert parse_tax_rate(format_tax_rate(rate)) == rate
    assert parse_tax_rate(format(rate * 100, "f") + "%") == rate


# --- tax_from_exclusive / split_inclusive -----------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "rate", "tax"),
    [
        ("1000.00", "0.13", "130.00"),
        ("0.05", "0.13", "0.01"),  # 0.0065 rounds up
        ("0.03", "0.13", "0.00"),  # 0.0039 rounds down
        ("136297.60", "0.13", "17718.69"),  # 17718.688
        ("-136297.60", "0.13", "-17718.69"),
        ("8000.01", "0.06", "480.00"),
        ("100.00", "0", "0.00"),
        ("12345.67", "0.015", "185.19"),  # 185.18505
    ],
)
def test_tax_from_exclusive(amount: str, rate: str, tax: str) -> None:
    assert tax_from_exclusive(Decimal(amount), Decimal(rate)) == Decimal(tax)


def test_split_inclusive_worked_example() -> None:
    assert split_inclusive(Decimal("1598.00"), Decimal("0.13")) == (
        Decimal("1414.16"),
        Decimal("183.84"),
    )


@given(amounts, rates)
def test_split_inclusive_parts_add_up_to_the_cent(incl: Decimal, rate: Decimal) -> None:
    excl, tax = split_inclusive(incl, rate)
    assert excl + tax == incl
    assert excl.as_tuple().exponent == -2 and tax.as_tuple().exponent == -2


@given(amounts, rates)
def test_split_inclusive_is_within_half_a_cent_of_the_exact_value(
    incl: Decimal, rate: Decimal
) -> None:
    excl, tax = split_inclusive(incl, rate)
    exact_excl = incl / (1 + rate)
    assert abs(excl - exact_excl) <= CENT / 2
    assert abs(tax - (incl - exact_excl)) <= CENT / 2


@given(amounts, rates)
def test_red_amounts_mirror_blue_amounts(amount: Decimal, rate: Decimal) -> None:
    assert split_inclusive(-amount, rate) == tuple(-part for part in split_inclusive(amount, rate))
    assert tax_from_exclusive(-amount, rate) == -tax_from_exclusive(amount, rate)


@given(amounts.filter(lambda a: a >= 0), rates)
def test_tax_is_never_negative_on_positive_amounts(amount: Decimal, rate: Decimal) -> None:
    assert tax_from_exclusive(amount, rate) >= 0
    assert split_inclusive(amount, rate)[1] >= 0


# --- line_amounts / bill_totals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "include_tax", "tax", "expected"),
    [
        pytest.param("1000", False, None, ("1000.00", "130.00", "1130.00"),
                     id="exclusive_basis_computes_tax"),
        pytest.param("1000", False, "130.05", ("1000.00", "130.05", "1130.05"),
                     id="exclusive_basis_keeps_supplied_tax"),
        pytest.param("1598", True, None, ("1414.16", "183.84", "1598.00"),
                     id="inclusive_basis_splits"),
        pytest.param("1598", True, "183.85", ("1414.15", "183.85", "1598.00"),
                     id="inclusive_basis_keeps_supplied_tax"),
    ],
)  # fmt: skip
def test_line_amounts(
    amount: str, include_tax: bool, tax: str | None, expected: tuple[str, str, str]
) -> None:
    supplied = None if tax is None else Decimal(tax)
    assert line_amounts(Decimal(amount), Decimal("0.13"), include_tax, supplied) == LineAmounts(
        *(Decimal(v) for v in expected)
    )


@given(amounts, rates, st.booleans(), st.one_of(st.none(), amounts))
def test_line_amounts_always_add_up(
    amount: Decimal, rate: Decimal, include_tax: bool, tax: Decimal | None
) -> None:
    line = line_amounts(amount, rate, include_tax, tax)
    assert line.excl + line.tax == line.incl
    assert (line.incl if include_tax else line.excl) == amount


@given(st.lists(st.tuples(amounts, rates, st.booleans()), max_size=20))
def test_bill_totals_is_the_sum_of_lines(raw: list[tuple[Decimal, Decimal, bool]]) -> None:
    lines = [line_amounts(a, r, flag, None) for a, r, flag in raw]
    total = bill_totals(lines)
    assert total.excl == sum((line.excl for line in lines), Decimal(0))
    assert total.tax == sum((line.tax for line in lines), Decimal(0))
    assert total.incl == total.excl + total.tax


def test_bill_totals_of_nothing_is_zero_cents() -> None:
    assert bill_totals([]) == LineAmounts(Decimal("0.00"), Decimal("0.00"), Decimal("0.00"))


# --- tolerances -------------------------------------------------------------------------------


def test_line_tax_deviation_exclusive_basis_is_measured_from_amount_times_rate() -> None:
    # 0.05 × 0.13 = 0.0065: supplied 0.07 is 0.0635 away (fails), 0.06 is 0.0535 (passes)
    assert line_tax_deviation(Decimal("0.05"), Decimal("0.13"), False, Decimal("0.07")) == (
        Decimal("0.0635")
    )
    assert line_tax_deviation(Decimal("1000"), Decimal("0.13"), False, Decimal("130.06")) == (
        LINE_TAX_TOLERANCE
    )


def test_line_tax_deviation_inclusive_basis_is_measured_from_the_split() -> None:
    assert line_tax_deviation(Decimal("1598"), Decimal("0.13"), True, Decimal("183.84")) == 0
    assert line_tax_deviation(Decimal("1598"), Decimal("0.13"), True, Decimal("183.91")) == (
        Decimal("0.07")
    )


@given(amounts, rates, st.booleans(), cents)
def test_line_tax_tolerance_is_symmetric(
    amount: Decimal, rate: Decimal, include_tax: bool, error: Decimal
) -> None:
    centre = split_inclusive(amount, rate)[1] if include_tax else amount * rate
    above = line_tax_deviation(amount, rate, include_tax, centre + error)
    below = line_tax_deviation(amount, rate, include_tax, centre - error)
    assert above == below == abs(error)
    # and a red line is judged exactly as its blue mirror
    tax = expected_line_tax(amount, rate, include_tax) + error
    assert line_tax_deviation(-amount, rate, include_tax, -tax) == line_tax_deviation(
        amount, rate, include_tax, tax
    )


@given(amounts, rates, st.booleans())
def test_computed_tax_always_passes_the_line_tolerance(
    amount: Decimal, rate: Decimal, include_tax: bool
) -> None:
    tax = expected_line_tax(amount, rate, include_tax)
    assert line_tax_deviation(amount, rate, include_tax, tax) <= CENT / 2


@given(st.lists(st.tuples(amounts, rates), max_size=30))
def test_invoice_tax_error_is_zero_when_the_cloud_computes_exclusive_tax(
    raw: list[tuple[Decimal, Decimal]],
) -> None:
    pairs = [(line_amounts(a, r, False, None), r) for a, r in raw]
    assert invoice_tax_error(pairs) == 0


def test_invoice_tax_error_sums_signed_line_differences() -> None:
    rate = Decimal("0.13")
    up = line_amounts(Decimal("1000"), rate, False, Decimal("130.05"))
    down = line_amounts(Decimal("2000"), rate, False, Decimal("259.98"))
    assert invoice_tax_error([(up, rate), (up, rate), (down, rate)]) == Decimal("0.08")


@given(st.lists(st.tuples(amounts, rates), max_size=30))
def test_inclusive_split_errs_by_at_most_a_cent_per_line(
    raw: list[tuple[Decimal, Decimal]],
) -> None:
    pairs = [(line_amounts(a, r, True, None), r) for a, r in raw]
    assert abs(invoice_tax_error(pairs)) <= CENT * len(pairs)


def test_qty_price_deviation() -> None:
    assert qty_price_deviation(Decimal("8000.01"), Decimal("3"), Decimal("2666.67")) == 0
    assert qty_price_deviation(Decimal("8000.00"), Decimal("3"), Decimal("2666.67")) == CENT
    assert qty_price_deviation(Decimal("84952.85"), Decimal("22.415"), Decimal("3790")) == 0
    assert qty_price_deviation(Decimal("-2990"), Decimal("-10"), Decimal("299")) == 0


@given(amounts, st.integers(min_value=1, max_value=10_000))
def test_qty_price_deviation_is_at_most_half_a_cent_for_exact_prices(
    amount: Decimal, quantity: int
) -> None:
    price = amount / quantity
    assert qty_price_deviation(amount, Decimal(quantity), price) <= CENT / 2
    assert quantize_cents(price * quantity) - amount <= CENT
