"""record_invoice(): the same invoice reported many times is one row, filled in over time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store.invoices import (
    InvoiceBelongsElsewhere,
    RecordOutcome,
    bills_covered,
    coverings,
    invoices_of,
    record_invoice,
)
from store.models import Document, Invoice, InvoiceDocument

MakeDocument = Callable[..., Document]
NUM = "24332000000012345678"


def test_repeated_reports_are_one_row_filled_in_over_time(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("pushed")
    with session_factory() as session:
        first = record_invoice(
            session,
            document_id=document.id,
            push_attempt=1,
            order_no="ORD-1",
            invoice_num=NUM,
            include_tax_amount=Decimal("113.00"),
            raw={"includeTaxAmount": Decimal("113.00")},
        )
        again = record_invoice(
            session,
            document_id=document.id,
            order_no="ORD-1",
            invoice_num=NUM,
            raw={"includeTaxAmount": Decimal("113.00")},
        )
        filled = record_invoice(
            session,
            document_id=document.id,
            invoice_num=NUM,  # a query result without orderNo: matched on the number
            invoice_pdf_file_url="https://sim/files/1.pdf",
            invoice_date=date(2026, 5, 1),
        )
        session.commit()
        assert [r.outcome for r in (first, again, filled)] == [
            RecordOutcome.created,
            RecordOutcome.unchanged,
            RecordOutcome.updated,
        ]
        [row] = invoices_of(session, document.id)
        assert (row.order_no, row.invoice_code, row.invoice_num) == ("ORD-1", "", NUM)
        assert row.include_tax_amount == Decimal("113.00")  # not erased by later reports
        assert row.invoice_pdf_file_url == "https://sim/files/1.pdf"


def test_failed_issuances_are_deduplicated_per_attempt_and_reason(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("invoice_failed")
    with session_factory() as session:
        for _ in range(3):
            record_invoice(
                session, document_id=document.id, push_attempt=1, issue_error_message="税局登录失效"
            )
        record_invoice(
            session, document_id=document.id, push_attempt=1, issue_error_message="授信额度不足"
        )
        session.commit()
        assert len(invoices_of(session, document.id)) == 2


def test_an_invoice_of_another_seller_or_revision_is_refused(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    mine = make_document("pushed")
    other_seller = make_document("pushed", seller_tax_id="91110000OTHER00001")
    other_tenant = make_document("pushed", tenant="globex")
    old_revision = make_document(
        "pushed", bill_no="REV-1", revision=1, is_current=False, content_hash="h1"
    )
    new_revision = make_document("pushed", bill_no="REV-1", revision=2, content_hash="h2")
    with session_factory() as session:
        record_invoice(session, document_id=mine.id, invoice_num=NUM)
        record_invoice(session, document_id=old_revision.id, order_no="ORD-REV")
        for other in (other_seller, other_tenant):
            with pytest.raises(InvoiceBelongsElsewhere, match=f"#{mine.id}.*another tenant"):
                record_invoice(session, document_id=other.id, invoice_num=NUM)
        with pytest.raises(InvoiceBelongsElsewhere, match="another revision"):
            record_invoice(session, document_id=new_revision.id, order_no="ORD-REV")
        session.commit()
        assert invoices_of(session, other_seller.id) == []
        assert invoices_of(session, new_revision.id) == []


def test_a_merged_invoice_is_linked_to_every_bill_it_covers_once(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    first, second, third = (make_document("pushed", push_attempt=n) for n in (1, 2, 3))
    with session_factory() as session:
        outcomes = [
            record_invoice(
                session,
                document_id=doc.id,
                push_attempt=doc.push_attempt,
                order_no="ORD-M",
                invoice_num=NUM,
                include_tax_amount=Decimal("339.00"),
                raw={"billNo": doc.bill_no},
            ).outcome
            for doc in (first, second, third, second, first, third)
        ]
        session.commit()
        assert outcomes == [
            RecordOutcome.created,
            RecordOutcome.linked,
            RecordOutcome.linked,
            RecordOutcome.unchanged,
            RecordOutcome.unchanged,
            RecordOutcome.unchanged,
        ]
        assert session.scalar(select(func.count()).select_from(Invoice)) == 1
        assert session.scalar(select(func.count()).select_from(InvoiceDocument)) == 3
        [row] = invoices_of(session, third.id)
        # The row keeps what the first document recorded: its wire copy and attempt.
        assert (row.document_id, row.push_attempt) == (first.id, 1)
        assert row.raw == {"billNo": first.bill_no}
        assert [c.documents for c in coverings(session, second.id)] == [3]
        assert bills_covered(session, [row.id]) == {
            row.id: sorted([first.bill_no, second.bill_no, third.bill_no])
        }
        # A later report through another bill still fills in what is new.
        filled = record_invoice(session, document_id=third.id, order_no="ORD-M", invoice_status="6")
        assert filled.outcome is RecordOutcome.updated
        assert invoices_of(session, first.id)[0].invoice_status == "6"


def test_concurrent_reports_of_one_invoice_make_one_row(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    document = make_document("pushed")
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def report() -> None:
        try:
            barrier.wait()
            with session_factory() as session:
                record_invoice(session, document_id=document.id, order_no="ORD-9", invoice_num=NUM)
                session.commit()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=report) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Invoice)) == 1


_COLUMNS = (
    "id", "document_id", "push_attempt", "order_no", "invoice_code", "invoice_num",
    "invoice_type", "invoice_status", "total_amount", "total_tax_amount", "include_tax_amount",
    "invoice_date", "invoice_file_url", "issue_error_message",
)  # fmt: skip


@pytest.mark.postgres_only
def test_a_documents_first_invoices_come_back_as_stored_without_a_read(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    # The verdict of a document's first invoices skips reading them back: what
    # record_invoice hands out must be what coverings() would load.
    document = make_document("pushed")
    other = make_document("pushed")
    with session_factory() as session:
        first = record_invoice(
            session, document_id=document.id, push_attempt=1, order_no="ORD-F1",
            invoice_num=NUM, total_amount=Decimal("100"), total_tax_amount=Decimal("13.0"),
            include_tax_amount=Decimal("113.00"), invoice_date=date(2026, 5, 1),
            raw={"invoiceProperty": 0, "includeTaxAmount": Decimal("113.00")},
        )  # fmt: skip
        second = record_invoice(
            session, document_id=document.id, push_attempt=1, issue_error_message="额度不足"
        )
        # Another document that already has an invoice: its next one is not "alone".
        record_invoice(session, document_id=other.id, order_no="ORD-O1", invoice_num="1")
        later = record_invoice(session, document_id=other.id, order_no="ORD-O2", invoice_num="2")
        session.commit()
        assert (first.alone, second.alone, later.alone) == (True, False, False)
        assert first.stored is not None and second.stored is not None
        stored = coverings(session, document.id)
        assert [c.documents for c in stored] == [1, 1]
        for mine, loaded in zip((first.stored, second.stored), stored, strict=True):
            assert {n: getattr(mine, n) for n in _COLUMNS} == {
                n: getattr(loaded.invoice, n) for n in _COLUMNS
            }
        assert stored[0].invoice.raw == {"invoiceProperty": 0, "includeTaxAmount": "113.00"}
        assert first.stored.raw == {"invoiceProperty": 0, "includeTaxAmount": Decimal("113.00")}
