"""What three-way reconciliation reads from the bridge's tables, and its stored reports.

| call                         | returns                                                      |
|------------------------------|--------------------------------------------------------------|
| ``documents_in_window``      | current documents of bills FIRST submitted in the window     |
|                              | (revision 1's ``created_at``), with the bridge's invoices     |
| ``documents_for_bills``      | current documents of the given bill numbers, any time         |
| ``orphan_callbacks``         | ``callback_inbox`` rows left ``orphan``, received in the window |
| ``save_report``              | stores a report (does not commit)                             |
| ``list_reports``             | stored reports, newest first                                  |
| ``get_report``               | one stored report                                             |
| ``latest_reports``           | the newest finished report of each tenant (metrics)           |

Reads are chunked (``CHUNK`` ids per ``IN``) so 100,000 documents never make one statement
with 100,000 parameters (SQLite's limit is 32,766).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from store.models import (
    CallbackInbox,
    Document,
    Invoice,
    InvoiceDocument,
    ReconciliationReport,
)
from store.states import InboxState

__all__ = [
    "BridgeDocument",
    "BridgeInvoice",
    "documents_for_bills",
    "documents_in_window",
    "get_report",
    "latest_reports",
    "list_reports",
    "orphan_callbacks",
    "save_report",
]

CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class BridgeInvoice:
    order_no: str | None
    invoice_code: str
    invoice_num: str | None
    invoice_status: str | None
    total_amount: Decimal | None
    include_tax_amount: Decimal | None
    standing: str = "normal"  # store.states.InvoiceStanding


@dataclass(slots=True)
class BridgeDocument:
    id: int
    tenant: str
    seller_tax_id: str
    bill_no: str
    status: str
    status_changed_at: datetime
    submitted_at: datetime
    total_amount: Decimal
    total_incl_tax: Decimal | None
    invoices: list[BridgeInvoice] = field(default_factory=list)


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _with_invoices(session: Session, docs: list[BridgeDocument]) -> list[BridgeDocument]:
    by_id = {doc.id: doc for doc in docs}
    for ids in _chunks(list(by_id)):
        rows = session.execute(
            select(InvoiceDocument.document_id, Invoice)
            .join(Invoice, Invoice.id == InvoiceDocument.invoice_id)
            .where(InvoiceDocument.document_id.in_(ids))
            .order_by(Invoice.id)
        )
        for document_id, inv in rows:
            by_id[document_id].invoices.append(
                BridgeInvoice(
                    inv.order_no,
                    inv.invoice_code,
                    inv.invoice_num,
                    inv.invoice_status,
                    inv.total_amount,
                    inv.include_tax_amount,
                    inv.standing,
                )
            )
    return docs


def _bridge(doc: Document, submitted_at: datetime) -> BridgeDocument:
    return BridgeDocument(
        doc.id,
        doc.tenant,
        doc.seller_tax_id,
        doc.bill_no,
        doc.status,
        doc.status_changed_at,
        submitted_at,
        doc.total_amount,
        doc.total_incl_tax,
    )


def documents_in_window(
    session: Session, start: datetime, end: datetime, tenant: str | None = None
) -> list[BridgeDocument]:
    """Current documents whose bill was first submitted (revision 1) in ``[start, end)``."""
    first = aliased(Document)
    statement = (
        select(Document, first.created_at)
        .join(
            first,
            (first.tenant == Document.tenant)
            & (first.seller_tax_id == Document.seller_tax_id)
            & (first.bill_no == Document.bill_no)
            & (first.revision == 1),
        )
        .where(Document.is_current, first.created_at >= start, first.created_at < end)
        .order_by(Document.id)
    )
    if tenant is not None:
        statement = statement.where(Document.tenant == tenant)
    docs = [_bridge(doc, submitted) for doc, submitted in session.execute(statement)]
    return _with_invoices(session, docs)


def documents_for_bills(
    session: Session, bill_nos: Sequence[str], tenant: str | None = None
) -> list[BridgeDocument]:
    """Current documents of ``bill_nos`` (any seller, any time)."""
    docs: list[BridgeDocument] = []
    for chunk in _chunks(sorted(set(bill_nos))):
        statement = select(Document).where(Document.is_current, Document.bill_no.in_(chunk))
        if tenant is not None:
            statement = statement.where(Document.tenant == tenant)
        docs.extend(_bridge(doc, doc.created_at) for doc in session.scalars(statement))
    return _with_invoices(session, docs)


def orphan_callbacks(session: Session, start: datetime, end: datetime) -> list[CallbackInbox]:
    return list(
        session.scalars(
            select(CallbackInbox)
            .where(
                CallbackInbox.state == InboxState.orphan.value,
                CallbackInbox.received_at >= start,
                CallbackInbox.received_at < end,
            )
            .order_by(CallbackInbox.id)
        )
    )


def save_report(session: Session, **values: Any) -> ReconciliationReport:
    report = ReconciliationReport(**values)
    session.add(report)
    session.flush()
    return report


def list_reports(
    session: Session, tenant: str | None = None, limit: int = 50
) -> list[ReconciliationReport]:
    statement = select(ReconciliationReport).order_by(ReconciliationReport.id.desc()).limit(limit)
    if tenant is not None:
        statement = statement.where(ReconciliationReport.tenant == tenant)
    return list(session.scalars(statement))


def get_report(session: Session, report_id: int) -> ReconciliationReport | None:
    return session.get(ReconciliationReport, report_id)


def latest_reports(session: Session, trigger: str | None = None) -> list[ReconciliationReport]:
    """The newest finished report of each tenant (``trigger``: only runs of that trigger)."""
    newest = select(func.max(ReconciliationReport.id)).where(
        ReconciliationReport.finished_at.is_not(None)
    )
    if trigger is not None:
        newest = newest.where(ReconciliationReport.trigger == trigger)
    newest = newest.group_by(ReconciliationReport.tenant)
    return list(
        session.scalars(
            select(ReconciliationReport)
            .where(ReconciliationReport.id.in_(newest))
            .order_by(ReconciliationReport.tenant)
        )
    )
