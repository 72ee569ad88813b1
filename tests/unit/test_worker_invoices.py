"""The invoice verdict: which lifecycle event the stored invoices justify (no database)."""

from __future__ import annotations

from decimal import Decimal

from schemas.kingdee import InvoiceItem
from store.invoices import Covering, LineShare, share_of
from store.models import Document, Invoice
from store.states import Event
from worker.services.invoices import all_known, covered_amount, verdict_for


def document(
    total: str, incl: str | None = None, *, flag: str = "0", red: bool = False
) -> Document:
    payload = {"includeTaxFlag": flag, "invoiceProperty": "1" if red else "0"}
    return Document(
        id=1,
        bill_no="B-1",
        total_amount=Decimal(total),
        total_incl_tax=None if incl is None else Decimal(incl),
        payload=payload,
        issued_amount=Decimal("0.00"),
    )


def issued(incl: str, excl: str | None = None, *, red: bool = False, num: str = "1") -> Invoice:
    return Invoice(
        invoice_num=num,
        include_tax_amount=Decimal(incl),
        total_amount=Decimal(excl) if excl else None,
        raw={"invoiceProperty": 1 if red else 0},
    )


def failed(message: str = "授信额度不足") -> Invoice:
    return Invoice(invoice_num=None, issue_error_message=message, raw={})


def pending() -> Invoice:
    return Invoice(invoice_num=None, issue_error_message=None, raw={})


def test_invoices_covering_the_total_incl_tax_are_issued_all() -> None:
    verdict = verdict_for(document("200.00", "226.00"), [issued("113.00"), issued("113.00")])
    assert verdict.event is Event.issued_all
    assert verdict.issued_amount == Decimal("226.00")


def test_one_cent_per_invoice_of_rounding_is_tolerated() -> None:
    invoices = [issued("75.33", num="1"), issued("75.33", num="2"), issued("75.33", num="3")]
    assert verdict_for(document("200.00", "226.00"), invoices).event is Event.issued_all
    short = [issued("75.00", num="1"), issued("75.00", num="2"), issued("75.00", num="3")]
    assert verdict_for(document("200.00", "226.00"), short).event is Event.issued_some


def test_some_issued_is_issued_some_even_with_failures() -> None:
    verdict = verdict_for(document("200.00", "226.00"), [issued("113.00"), failed()])
    assert verdict.event is Event.issued_some
    assert verdict.failure == "授信额度不足"


def test_only_failures_are_issue_failed_but_not_while_something_is_pending() -> None:
    assert verdict_for(document("100.00", "113.00"), [failed()]).event is Event.issue_failed
    waiting = verdict_for(document("100.00", "113.00"), [failed()], unrecorded_pending=1)
    assert waiting.event is None
    assert verdict_for(document("100.00", "113.00"), [failed(), pending()]).event is None
    assert verdict_for(document("100.00", "113.00"), []).event is None


def test_without_total_incl_tax_the_bills_own_basis_is_used() -> None:
    exclusive = document("100.00", flag="0")
    assert verdict_for(exclusive, [issued("113.00", "100.00")]).event is Event.issued_all
    inclusive = document("113.00", flag="1")
    assert verdict_for(inclusive, [issued("113.00", "100.00")]).event is Event.issued_all
    assert verdict_for(inclusive, [issued("56.50", "50.00")]).event is Event.issued_some
    # Each side counts the invoice on its own basis (a mutation run found this unpinned).
    assert covered_amount(exclusive, issued("113.00", "100.00")) == Decimal("100.00")
    assert covered_amount(inclusive, issued("113.00", "100.00")) == Decimal("113.00")


def test_a_failure_and_pending_are_counted_apart_in_the_verdict() -> None:
    verdict = verdict_for(document("300.00", "339.00"), [issued("113.00"), failed(), pending()])
    assert (verdict.issued, verdict.failed, verdict.pending) == (1, 1, 1)


def test_red_bills_count_red_invoices_by_absolute_amount() -> None:
    red_doc = document("-100.00", "-113.00", red=True)
    assert verdict_for(red_doc, [issued("-113.00", red=True)]).event is Event.issued_all
    # A blue invoice cannot settle a red bill.
    assert verdict_for(red_doc, [issued("113.00")]).event is None


def test_all_known_only_when_every_reported_value_is_stored() -> None:
    doc = document("100.00", "113.00")
    doc.push_attempt = 1
    stored = Invoice(
        document_id=1, push_attempt=1, order_no="ORD-1", invoice_code="", invoice_num="N1",
        invoice_status="0", include_tax_amount=Decimal("113.00"), raw={"old": "wire copy"},
    )  # fmt: skip

    def item(**fields: object) -> InvoiceItem:
        base: dict[str, object] = {"billNo": "B-1", "orderNo": "ORD-1", "invoiceNum": "N1"}
        return InvoiceItem.model_validate({**base, "invoiceStatus": "0", **fields})

    assert all_known(doc, [stored], [item(includeTaxAmount=Decimal("113.00"))])
    assert all_known(doc, [stored], [item(), item(billNo="OTHER", invoiceStatus="6")])
    assert not all_known(doc, [stored], [item(invoiceStatus="6")])  # 作废: news
    assert not all_known(doc, [stored], [item(invoicePdfFileUrl="https://x/1.pdf")])
    assert not all_known(doc, [stored], [item(orderNo="ORD-2", invoiceNum="N2")])
    assert not all_known(doc, [stored], [item(orderNo=None, invoiceNum=None)])  # no key
    assert not all_known(doc, [stored], [item(billNo="OTHER")])  # nothing about this bill
    assert not all_known(doc, [], [item()])
    # A merged invoice first recorded for document 2 (and linked to this one) keeps that
    # document's attempt: not news here.
    keys = ("order_no", "invoice_code", "invoice_num", "invoice_status")
    merged = Invoice(document_id=2, push_attempt=7, **{key: getattr(stored, key) for key in keys})
    assert all_known(doc, [merged], [item()])
    assert not all_known(doc, [merged], [item(invoiceStatus="6")])


# --------------------------------------------------------------------------- merged invoices


def bill_document(ids: list[str], incl: str, *, excl: str | None = None) -> Document:
    payload = {
        "includeTaxFlag": "0",
        "invoiceProperty": "0",
        "billDetail": [{"detailId": i} for i in ids],
    }
    return Document(
        id=1,
        bill_no="B-1",
        total_amount=Decimal(excl or incl),
        total_incl_tax=Decimal(incl),
        payload=payload,
        issued_amount=Decimal("0.00"),
    )


def line(key: str | None, amount: str, tax: str, *, name: str = "detailId") -> dict[str, object]:
    row: dict[str, object] = {"amount": amount, "taxAmount": tax}
    if key is not None:
        row[name] = key
    return row


def merged(incl: str, lines: list[dict[str, object]], *, field: str = "goods") -> Invoice:
    return Invoice(
        invoice_num="N-M",
        include_tax_amount=Decimal(incl),
        total_amount=None,
        raw={"invoiceProperty": 0, field: lines},
    )


THREE_BILLS = [line("A-1", "100.00", "13.00"), line("B-1", "200.00", "26.00"),
               line("C-1", "50.00", "6.50")]  # fmt: skip


def test_own_invoice_counts_whole() -> None:
    doc = bill_document(["A-1", "A-2"], "226.00")
    own = merged("226.00", [line("A-1", "100.00", "13.00"), line("A-2", "100.00", "13.00")])
    assert share_of(doc.payload, own.raw) == LineShare(merged=False)
    assert covered_amount(doc, own) == Decimal("226.00")
    # Lines without ids of a one-document invoice: nothing to attribute, counted whole.
    anonymous = merged("226.00", [line(None, "200.00", "26.00")])
    assert covered_amount(doc, anonymous) == Decimal("226.00")


def test_merged_invoice_counts_the_lines_attributed_to_the_bill() -> None:
    invoice = merged("395.50", THREE_BILLS)
    a = bill_document(["A-1"], "113.00")
    b = bill_document(["B-1"], "226.00")
    assert share_of(a.payload, invoice.raw) == LineShare(
        merged=True, incl=Decimal("113.00"), excl=Decimal("100.00")
    )
    assert covered_amount(a, invoice) == Decimal("113.00")
    assert covered_amount(b, invoice, documents=3) == Decimal("226.00")
    verdict = verdict_for(b, [Covering(invoice, 3)])
    assert (verdict.event, verdict.issued_amount, verdict.merged) == (
        Event.issued_all,
        Decimal("226.00"),
        1,
    )
    # billSourceId attributes as well as detailId; includeTaxAmount wins over amount + tax.
    by_source = merged(
        "395.50",
        [
            {"billSourceId": "A-1", "amount": "100.00", "includeTaxAmount": "113.00"},
            line("B-1", "200.00", "26.00", name="billSourceId"),
        ],
        field="invoiceDetail",
    )
    assert covered_amount(a, by_source) == Decimal("113.00")


def test_a_merged_invoice_covering_part_of_a_bill_is_issued_some() -> None:
    # The bill's second line went on another invoice (not reported yet).
    doc = bill_document(["A-1", "A-2"], "226.00")
    invoice = merged("339.00", [line("A-1", "100.00", "13.00"), line("B-1", "200.00", "26.00")])
    verdict = verdict_for(doc, [invoice])
    assert (verdict.event, verdict.issued_amount) == (Event.issued_some, Decimal("113.00"))


def test_unattributable_merged_invoice_counts_fully_up_to_the_bill() -> None:
    doc = bill_document(["1", "2"], "226.00")
    # Two bills both numbered their lines 1, 2: the invoice's lines cannot be told apart.
    colliding = merged(
        "316.40",
        [line("1", "100.00", "13.00"), line("2", "100.00", "13.00"),
         line("1", "40.00", "5.20"), line("2", "40.00", "5.20")],
    )  # fmt: skip
    assert share_of(doc.payload, colliding.raw) == LineShare(merged=True)
    assert covered_amount(doc, colliding) == Decimal("226.00")
    verdict = verdict_for(doc, [colliding])
    assert (verdict.event, verdict.issued_amount) == (Event.issued_all, Decimal("226.00"))
    # A line without id next to other bills' lines; no lines at all but several documents.
    unkeyed = merged("339.00", [line(None, "100.00", "13.00"), line("B-1", "200.00", "26.00")])
    assert covered_amount(doc, unkeyed) == Decimal("226.00")
    bare = Invoice(invoice_num="N", include_tax_amount=Decimal("339.00"), raw={})
    assert covered_amount(doc, bare, documents=2) == Decimal("226.00")
    assert covered_amount(doc, bare, documents=1) == Decimal("339.00")  # own: over-issue shows
    # Linked to several documents although every line carries this bill's ids: ambiguous
    # only when an id repeats; otherwise the lines are this bill's.
    assert covered_amount(doc, colliding, documents=2) == Decimal("226.00")


def test_merged_invoice_shares_on_the_exclusive_basis() -> None:
    payload = {"includeTaxFlag": "0", "billDetail": [{"detailId": "A-1"}]}
    doc = Document(
        id=1, bill_no="B-1", total_amount=Decimal("100.00"), total_incl_tax=None,
        payload=payload, issued_amount=Decimal("0.00"),
    )  # fmt: skip
    invoice = merged("395.50", THREE_BILLS)
    assert covered_amount(doc, invoice) == Decimal("100.00")
    assert verdict_for(doc, [invoice]).event is Event.issued_all
