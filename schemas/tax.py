"""China VAT arithmetic for 开票申请单 amounts: pure functions, Decimal in, Decimal out.

Rules (docs/CLOUD-CONTRACT.md §10.6, §11)

| name | rule | source |
|---|---|---|
| ``ACCEPTED_TAX_RATES`` | 0, 1, 1.5, 3, 4, 5, 6, 9, 10, 11, 13, 16, 17 % | [C S18] |
| ``tax_from_exclusive`` | tax = round(amount × rate, 2) | [D S2,S7] |
| ``split_inclusive`` | excl = round(incl ÷ (1 + rate), 2), tax = incl − excl | [C S10][I] |
| ``LINE_TAX_TOLERANCE`` | supplied line taxAmount vs computed tax: ≤ 0.06 | [D S2,S7][C S19] |
| ``INVOICE_TAX_TOLERANCE`` | Σ(line tax − round(line excl × rate, 2)) within ±1.27 | [C S19] |
| ``QTY_PRICE_TOLERANCE`` | abs(amount − round(quantity × price, 2)) ≤ 0.01 | [C S19] |

Worked example (§11): 1598.00 including 13 % → excl 1414.16, tax 183.84.

Rounding is ROUND_HALF_UP (四舍五入), which rounds half away from zero, so a red (negative)
line is the exact mirror of the blue line it reverses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, localcontext

from schemas.money import decimal_places, quantize_cents, to_decimal

__all__ = [
    "ACCEPTED_TAX_RATES",
    "INVOICE_TAX_TOLERANCE",
    "LINE_TAX_TOLERANCE",
    "QTY_PRICE_TOLERANCE",
    "LineAmounts",
    "bill_totals",
    "expected_line_tax",
    "format_tax_rate",
    "invoice_tax_error",
    "line_amounts",
    "line_tax_deviation",
    "parse_tax_rate",
    "qty_price_deviation",
    "split_inclusive",
    "tax_from_exclusive",
]

ACCEPTED_TAX_RATES: frozenset[Decimal] = frozenset(
    Decimal(rate)
    for rate in (
        "0",
        "0.01",
        "0.015",  # 减按1.5%
        "0.03",
        "0.04",
        "0.05",
        "0.06",
        "0.09",
        "0.10",  # historical
        "0.11",  # historical
        "0.13",
        "0.16",  # historical
        "0.17",  # historical
    )
)

LINE_TAX_TOLERANCE = Decimal("0.06")
INVOICE_TAX_TOLERANCE = Decimal("1.27")
QTY_PRICE_TOLERANCE = Decimal("0.01")

_PERCENT_TEXT = re.compile(r"(.*?)\s*[%％]")

# (14,2) amounts times a rate never need more than ~20 digits; keep headroom so that no
# intermediate product or quotient is rounded by the context before quantize_cents.
_PRECISION = 50


def parse_tax_rate(raw: str | Decimal | int) -> Decimal:
    """Read a tax rate written as ``"0.13"``, ``"13%"``, ``"13"``, ``13`` or ``Decimal``.

    A value of 1 or more is read as a percentage (``"13"`` → 0.13, ``"1.5"`` → 0.015) because
    no accepted rate is 100 %. The result is the normalised member of ``ACCEPTED_TAX_RATES``
    (``Decimal("0.13")``, ``Decimal("0.1")``, ``Decimal("0")``). Anything else (float, text,
    more than 3 decimals as a fraction, a rate not in §10.6) raises ``ValueError``/``TypeError``.
    """
    if isinstance(raw, bool | float):
        raise TypeError(f"a tax rate is text or Decimal, never {type(raw).__name__}: {raw!r}")
    percent = False
    value: object = raw
    if isinstance(raw, str):
        text = raw.strip()
        match = _PERCENT_TEXT.fullmatch(text)
        if match:
            percent = True
            text = match.group(1)
        value = text
    try:
        rate = to_decimal(value)
    except (TypeError, ValueError):
        raise ValueError(f"tax rate {raw!r} is not a number such as 0.13 or 13%") from None
    if percent or rate >= 1:
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            rate = rate / 100
    if decimal_places(rate) > 3:
        raise ValueError(f"tax rate {raw!r} has more than 3 decimals as a fraction")
    if rate not in ACCEPTED_TAX_RATES:
        accepted = ", ".join(format_tax_rate(r) for r in sorted(ACCEPTED_TAX_RATES))
        raise ValueError(f"tax rate {raw!r} is not an accepted rate ({accepted})")
    return rate.normalize() if not rate.is_zero() else Decimal(0)


def format_tax_rate(rate: Decimal) -> str:
    """Wire text of a rate: ``Decimal("0.13")`` → ``"0.13"``, ``Decimal("0.1")`` → ``"0.10"``."""
    if rate.is_zero():
        return "0"
    text = format(rate.normalize(), "f")
    # Two decimals at least, as the cloud writes rates ("0.10", "0.015").
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def tax_from_exclusive(amount_excl: Decimal, rate: Decimal) -> Decimal:
    """Tax on an amount that excludes tax: round(amount × rate, 2)."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return quantize_cents(amount_excl * rate)


def split_inclusive(amount_incl: Decimal, rate: Decimal) -> tuple[Decimal, Decimal]:
    """Split a tax-inclusive amount: (excl, tax) with excl = round(incl / (1 + rate), 2).

    The tax is the remainder, so excl + tax == incl to the cent, always.
    """
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        excl = quantize_cents(amount_incl / (1 + rate))
        return excl, quantize_cents(amount_incl) - excl


@dataclass(frozen=True, slots=True)
class LineAmounts:
    """One line's (or a bill's) amount excluding tax, tax, and 价税合计 (including tax)."""

    excl: Decimal
    tax: Decimal
    incl: Decimal

    def __add__(self, other: LineAmounts) -> LineAmounts:
        return LineAmounts(self.excl + other.excl, self.tax + other.tax, self.incl + other.incl)


def line_amounts(
    amount: Decimal, rate: Decimal, include_tax: bool, tax_amount: Decimal | None
) -> LineAmounts:
    """The three amounts of a line whose ``amount`` is on the ``include_tax`` basis.

    A supplied ``tax_amount`` is taken as is (the cloud keeps it when within tolerance);
    otherwise the tax is computed the way the cloud does.
    """
    amount = quantize_cents(amount)
    if include_tax:
        if tax_amount is None:
            excl, tax = split_inclusive(amount, rate)
        else:
            tax = quantize_cents(tax_amount)
            excl = amount - tax
        return LineAmounts(excl=excl, tax=tax, incl=amount)
    tax = tax_from_exclusive(amount, rate) if tax_amount is None else quantize_cents(tax_amount)
    return LineAmounts(excl=amount, tax=tax, incl=amount + tax)


def bill_totals(lines: Iterable[LineAmounts]) -> LineAmounts:
    """Sum of line amounts (the invoice-level 合计金额, 合计税额, 价税合计)."""
    total = LineAmounts(Decimal("0.00"), Decimal("0.00"), Decimal("0.00"))
    for line in lines:
        total = total + line
    return total


def expected_line_tax(amount: Decimal, rate: Decimal, include_tax: bool) -> Decimal:
    """The tax the cloud computes for a line: on the exclusive or the inclusive basis."""
    if include_tax:
        return split_inclusive(amount, rate)[1]
    return tax_from_exclusive(amount, rate)


def line_tax_deviation(
    amount: Decimal, rate: Decimal, include_tax: bool, tax_amount: Decimal
) -> Decimal:
    """abs(supplied tax − computed tax); the line passes when ≤ ``LINE_TAX_TOLERANCE``.

    On the exclusive basis the computed tax is the unrounded amount × rate (§11 writes
    abs(amount × rate − taxAmount)); on the inclusive basis it is the split_inclusive tax.
    """
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        computed = split_inclusive(amount, rate)[1] if include_tax else amount * rate
        return abs(computed - tax_amount)


def invoice_tax_error(lines: Iterable[tuple[LineAmounts, Decimal]]) -> Decimal:
    """Σ(line tax − round(line excl × rate, 2)) over ``(amounts, rate)`` pairs.

    The invoice passes when ``abs(result) <= INVOICE_TAX_TOLERANCE``.
    """
    error = Decimal("0.00")
    for amounts, rate in lines:
        error += amounts.tax - tax_from_exclusive(amounts.excl, rate)
    return error


def qty_price_deviation(amount: Decimal, quantity: Decimal, price: Decimal) -> Decimal:
    """abs(amount − round(quantity × price, 2)); passes when ≤ ``QTY_PRICE_TOLERANCE``."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return abs(amount - quantize_cents(quantity * price))
