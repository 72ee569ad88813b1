"""The invoice verdict: which lifecycle event the stored invoices justify (no database)."""

from __future__ import annotations

from decimal import Decimal

from schemas.kingdee import InvoiceItem
from store.models import Document, Invoice
from store.states import Event
from worker.services.invoices import all_known, verdict_for


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
