"""Splitting bills into invoices (simulator.issuance): limits respected, totals exact to the
cent, discount lines kept with their line; invoice numbers of the right shape."""

from __future__ import annotations

import re
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.tax import line_amounts
from simulator.bills import InvoiceLine, SimBill, SimLine
from simulator.issuance import InvoiceNumbers, file_kinds_for, plan_invoices

RATES = [Decimal("0.13"), Decimal("0.06"), Decimal("0.03"), Decimal("0")]


def _bill(lines: list[SimLine], invoice_type: str = "007", include_tax: bool = False) -> SimBill:
    return SimBill(
        id=1,
        tenant="t",
        seller_tax_id="91310000SIM0000001",
        bill_no="B",
        generation=1,
        business_system_code="X",
        invoice_type=invoice_type,
        include_tax_flag=include_tax,
        auto_invoice=True,
        header={},
        lines=lines,
        amount_with_tax=Decimal("0"),
    )


def _line(index: int, amount: str, rate: Decimal = Decimal("0.13"), **kw: object) -> SimLine:
    return SimLine(
        detail_id=str(index),
        goods_name=f"g{index}",
        revenue_code="1090511010000000000",
        tax_rate=rate,
        amount=Decimal(amount),
        **kw,  # type: ignore[arg-type]
    )


def _totals(invoices: list[list[InvoiceLine]]) -> tuple[Decimal, Decimal]:
    lines = [line for invoice in invoices for line in invoice]
    return (
        sum((line.amount for line in lines), Decimal("0")),
        sum((line.tax_amount for line in lines), Decimal("0")),
    )


def test_small_bill_is_one_invoice() -> None:
    [invoice] = plan_invoices(_bill([_line(1, "100.00"), _line(2, "50.00")]), None)
    assert [(line.seq, line.detail_id, line.line_property) for line in invoice] == [
        (1, "1", 0),
        (2, "2", 0),
    ]
    assert [line.tax_amount for line in invoice] == [Decimal("13.00"), Decimal("6.50")]


def test_line_limit_of_tax_control_and_digital_types() -> None:
    lines = [_line(i, "10.00") for i in range(1, 12)]
    assert [len(i) for i in plan_invoices(_bill(lines, "007"), None)] == [8, 3]
    assert [len(i) for i in plan_invoices(_bill(lines, "10xdp"), None)] == [11]
    assert [len(i) for i in plan_invoices(_bill(lines, "10xdp"), None, max_lines=5)] == [5, 5, 1]


def test_tax_inclusive_lines_become_exclusive_amounts_plus_tax() -> None:
    [invoice] = plan_invoices(_bill([_line(1, "1598.00")], include_tax=True), None)
    [line] = invoice
    assert (line.amount, line.tax_amount) == (Decimal("1414.16"), Decimal("183.84"))


def test_discount_line_stays_with_its_line_and_is_marked() -> None:
    lines = [_line(i, "10.00") for i in range(1, 8)]
    lines.append(_line(8, "100.00"))
    lines.append(_line(9, "-20.00", is_discount=True))
    invoices = plan_invoices(_bill(lines), None)
    assert [len(i) for i in invoices] == [7, 2]
    assert [line.line_property for line in invoices[1]] == [2, 1]


def test_a_line_above_the_amount_limit_is_cut_cent_exact() -> None:
    bill = _bill([_line(1, "2500.01", quantity=Decimal("3"))])
    invoices = plan_invoices(bill, Decimal("1000.00"))
    assert [[line.amount for line in i] for i in invoices] == [
        [Decimal("833.34")],
        [Decimal("833.34")],
        [Decimal("833.33")],
    ]
    assert _totals(invoices) == (Decimal("2500.01"), Decimal("325.00"))
    quantities = [line.quantity for i in invoices for line in i]
    assert sum((q for q in quantities if q is not None), Decimal(0)) == Decimal("3")


@settings(max_examples=150, deadline=None)
@given(
    amounts=st.lists(st.integers(min_value=1, max_value=5_000_000), min_size=1, max_size=30),
    rates=st.lists(st.sampled_from(RATES), min_size=30, max_size=30),
    limit_cents=st.one_of(st.none(), st.integers(min_value=100, max_value=2_000_000)),
    include_tax=st.booleans(),
    digital=st.booleans(),
    red=st.booleans(),
)
def test_split_preserves_totals_and_respects_limits(
    amounts: list[int],
    rates: list[Decimal],
    limit_cents: int | None,
    include_tax: bool,
    digital: bool,
    red: bool,
) -> None:
    sign = -1 if red else 1
    lines = [
        _line(index, str(Decimal(sign * cents) / 100), rates[index])
        for index, cents in enumerate(amounts)
    ]
    expected_excl = Decimal(0)
    expected_tax = Decimal(0)
    for line in lines:
        amounts_ = line_amounts(line.amount, line.tax_rate, include_tax, None)
        expected_excl += amounts_.excl
        expected_tax += amounts_.tax
    limit = None if limit_cents is None else Decimal(limit_cents) / 100
    invoice_type = "10xdp" if digital else "007"
    invoices = plan_invoices(_bill(lines, invoice_type, include_tax), limit)

    assert _totals(invoices) == (expected_excl, expected_tax)
    for invoice in invoices:
        assert 1 <= len(invoice) <= (2000 if digital else 8)
        assert [line.seq for line in invoice] == list(range(1, len(invoice) + 1))
        if limit is not None:
            assert abs(sum((line.amount for line in invoice), Decimal(0))) <= limit
        for part in invoice:
            assert part.amount == part.amount.quantize(Decimal("0.01"))
            assert part.amount == 0 or (part.amount > 0) == (not red)


def test_numbers_have_the_documented_shapes() -> None:
    numbers = InvoiceNumbers(clock_s=1_764_000_000.0)
    code, number = numbers.invoice_number("10xdp")
    assert code == ""
    assert re.fullmatch(r"\d{20}", number)
    code, number = numbers.invoice_number("026")
    assert re.fullmatch(r"\d{12}", code)
    assert re.fullmatch(r"\d{8}", number)
    orders = {numbers.order_no() for _ in range(1000)}
    assert len(orders) == 1000
    assert all(re.fullmatch(r"\d{19}", order) for order in orders)


def test_numbers_do_not_repeat_across_a_restart() -> None:
    first = InvoiceNumbers(clock_s=1_764_000_000.0)
    issued = {first.invoice_number("08xdp")[1] for _ in range(100)}
    later = InvoiceNumbers(clock_s=1_764_000_001.0)  # restarted a second later
    assert not issued & {later.invoice_number("08xdp")[1] for _ in range(100)}
    restored = InvoiceNumbers(clock_s=1_764_000_000.0)
    restored.restore(first.state())
    assert restored.invoice_number("08xdp")[1] not in issued


def test_file_kinds_per_invoice_type() -> None:
    assert file_kinds_for("08xdp") == {
        "invoiceFileUrl": "ofd",
        "invoicePdfFileUrl": "pdf",
        "invoiceXmlFileUrl": "xml",
    }
    assert file_kinds_for("028") == {"invoiceFileUrl": "ofd"}
    assert file_kinds_for("026") == {"invoiceFileUrl": "pdf"}
    assert file_kinds_for("004") == {}
