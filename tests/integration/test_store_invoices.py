"""record_invoice(): the same invoice reported many times is one row, filled in over time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store.invoices import InvoiceBelongsElsewhere, RecordOutcome, invoices_of, record_invoice
from store.models import Document, Invoice

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


def test_an_invoice_of_another_document_is_refused(
    session_factory: sessionmaker[Session], make_document: MakeDocument
) -> None:
    mine = make_document("pushed")
    other = make_document("pushed")
    with session_factory() as session:
        record_invoice(session, document_id=mine.id, invoice_num=NUM)
        with pytest.raises(InvoiceBelongsElsewhere, match=f"#{mine.id}"):
            record_invoice(session, document_id=other.id, invoice_num=NUM)


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
