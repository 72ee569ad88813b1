"""Bill generations and double-issue detection (simulator.bills), without HTTP."""

from __future__ import annotations

from decimal import Decimal

from schemas.money import dumps_exact, loads_exact
from simulator.bills import (
    BillBook,
    BillState,
    InvoiceLine,
    InvoiceStatus,
    SimBill,
    SimInvoice,
    SimLine,
)


def _bill(book: BillBook, bill_no: str = "B1", amount: str = "113.00") -> SimBill:
    return SimBill(
        id=book.next_id(),
        tenant="demo",
        seller_tax_id="91310000SIM0000001",
        bill_no=bill_no,
        generation=len(book.generations(("demo", "91310000SIM0000001", bill_no))) + 1,
        business_system_code="3std1X",
        invoice_type="10xdp",
        include_tax_flag=False,
        auto_invoice=True,
        header={"buyerName": "买方", "totalAmount": Decimal("100.00")},
        lines=[SimLine("1", "商品", "1090511010000000000", Decimal("0.13"), Decimal("100.00"))],
        amount_with_tax=Decimal(amount),
    )


def _issue(bill: SimBill, include_tax_amount: str) -> None:
    excl = (Decimal(include_tax_amount) / Decimal("1.13")).quantize(Decimal("0.01"))
    line = InvoiceLine(
        seq=1,
        detail_id="1",
        goods_name="商品",
        revenue_code="1090511010000000000",
        tax_rate=Decimal("0.13"),
        amount=excl,
        tax_amount=Decimal(include_tax_amount) - excl,
        quantity=None,
        price=None,
        units="",
        specification="",
        line_property=0,
    )
    invoice = SimInvoice(len(bill.invoices) + 1, f"O{bill.id}", f"S{bill.id}", [line])
    invoice.status = InvoiceStatus.ISSUED
    bill.invoices.append(invoice)
    bill.state = BillState.INVOICED


def test_one_live_generation_is_fine() -> None:
    book = BillBook()
    first = _bill(book)
    book.add(first)
    first.state = BillState.WITHDRAWN
    second = _bill(book)
    book.add(second)
    assert [b.generation for b in book.generations(first.key)] == [1, 2]
    assert book.live(first.key) == [second]
    assert book.violations() == {"live_twice": [], "over_issued": []}


def test_a_key_live_twice_is_reported() -> None:
    book = BillBook()
    book.add(_bill(book))
    book.add(_bill(book))
    [row] = book.violations()["live_twice"]
    assert (row["billNo"], row["generations"]) == ("B1", [1, 2])


def test_issuing_more_than_the_bill_is_reported_once() -> None:
    book = BillBook()
    first = _bill(book)
    book.add(first)
    _issue(first, "113.00")
    book.check_issued_amount(first)
    assert book.over_issued == []
    first.state = BillState.WITHDRAWN  # (cannot happen in the cloud; the detector must see it)
    second = _bill(book)
    book.add(second)
    _issue(second, "113.00")
    book.check_issued_amount(second)
    book.check_issued_amount(second)
    [row] = book.over_issued
    assert (row["billAmount"], row["issuedAmount"]) == ("113.00", "226.00")


def test_bill_json_round_trip_is_exact() -> None:
    book = BillBook()
    bill = _bill(book)
    _issue(bill, "113.00")
    bill.record("pushed", note="x")
    text = dumps_exact(bill.to_json())
    again = SimBill.from_json(loads_exact(text))
    assert again.to_json() == bill.to_json()
    assert again.invoices[0].include_tax_amount == Decimal("113.00")
    assert again.header["totalAmount"] == Decimal("100.00")


def test_find_and_order_number_index() -> None:
    book = BillBook()
    bill = _bill(book)
    _issue(bill, "113.00")
    book.add(bill)
    assert book.find("B1") == [bill]
    assert book.find("B1", tenant="other") == []
    found = book.by_order_no(bill.invoices[0].order_no)
    assert found is not None and found[0] is bill


def test_a_red_generation_is_a_reversal_not_a_second_issue() -> None:
    """Blue and red generations of one key are summed apart: a red invoice neither counts
    as an issue nor hides a second blue one."""
    book = BillBook()
    blue = _bill(book)
    book.add(blue)
    _issue(blue, "113.00")
    book.check_issued_amount(blue)
    blue.state = BillState.WITHDRAWN  # (cannot happen in the cloud; the detector must see it)
    red = _bill(book, amount="-113.00")
    book.add(red)
    _issue(red, "-113.00")
    book.check_issued_amount(red)
    assert book.over_issued == []
    red.state = BillState.WITHDRAWN
    again = _bill(book)
    book.add(again)
    _issue(again, "113.00")
    book.check_issued_amount(again)
    # Netted with the red one this would be 113.00: the second blue issue must still show.
    [row] = book.over_issued
    assert (row["billAmount"], row["issuedAmount"]) == ("113.00", "226.00")


def test_a_voided_invoice_no_longer_counts_and_can_red_amount_follows_reversals() -> None:
    book = BillBook()
    bill = _bill(book)
    _issue(bill, "113.00")
    [invoice] = bill.invoices
    assert (invoice.can_red_amount, invoice.can_red_tax_amount) == (
        Decimal("100.00"),
        Decimal("13.00"),
    )
    invoice.red_amount, invoice.red_tax_amount = Decimal("30.00"), Decimal("3.90")
    assert invoice.can_red_amount == Decimal("70.00")
    assert bill.issued_amount == Decimal("113.00")  # reversals are bookkeeping, not issues
    invoice.state_code = "6"
    assert (invoice.voided, invoice.can_red_amount, bill.issued_amount) == (
        True,
        Decimal("0.00"),
        Decimal("0.00"),
    )
    invoice.original = "O9"  # a red invoice has nothing left to reverse
    invoice.state_code = "0"
    assert invoice.can_red_amount == Decimal("0.00")
    again = SimBill.from_json(loads_exact(dumps_exact(bill.to_json())))
    assert again.to_json() == bill.to_json()
    assert again.invoices[0].red_amount == Decimal("30.00")


def test_find_issued_by_code_and_number() -> None:
    book = BillBook()
    bill = _bill(book)
    book.add(bill)
    _issue(bill, "113.00")
    [invoice] = bill.invoices
    invoice.invoice_code, invoice.invoice_num = "044031900111", "00000007"
    assert book.find_issued("demo", "", "00000007") == (bill, invoice)
    assert book.find_issued("demo", "044031900111", "00000007") == (bill, invoice)
    assert book.find_issued("demo", "000000000000", "00000007") is None
    assert book.find_issued("shop", "", "00000007") is None
