"""The ERP notifications a transition owes: ``erp_outbox`` rows written with the transition.

``owe_notification`` writes an ``erp_outbox`` row in the caller's transaction for the last
user-visible transition (table ``NOTIFIED``) of a tenant that has a webhook; the row id comes
back as a ``Followup`` for ``fapiao.notify_erp`` (``worker.services.notify``) to send after
commit. Every service hands its transitions to it, so it also observes the submit→pushed and
submit→invoiced histograms (``worker.services.milestones``).

After issuance (``owe_after_issuance``): one row per invoice whose standing moved, per
document it covers — ``invoice.voided``, ``invoice.reversed``, ``invoice.partially_reversed``
with that invoice under ``invoice`` — and ``document.reversed`` when every issued invoice of a
document is voided or reversed. An invoice event keeps ``status`` = ``previousStatus`` (the
document's state did not change).

The payload is the one published as ``docs/schemas/erp-notification.schema.json``
(``GET /v1/schema/notification``, ``producers.json_schemas``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy.orm import Session

from store.invoices import bills_covered, invoices_of
from store.lifecycle import TransitionResult
from store.models import Document, Invoice
from store.outbox import add_notification
from store.states import DocumentStatus, InvoiceStanding
from worker import queues
from worker.runtime import Followup, Runtime
from worker.services.invoices import AfterIssuance
from worker.services.milestones import observe_milestones

__all__ = ["INVOICE_EVENTS", "NOTIFIED", "owe_after_issuance", "owe_notification"]

# States the ERP hears about (every state an ERP user would act on or show).
NOTIFIED: Final[frozenset[DocumentStatus]] = frozenset(
    {
        DocumentStatus.pushed,
        DocumentStatus.rejected,
        DocumentStatus.failed,
        DocumentStatus.invoiced,
        DocumentStatus.partially_invoiced,
        DocumentStatus.invoice_failed,
        DocumentStatus.withdrawn,
        DocumentStatus.returned,
        DocumentStatus.reversed,
    }
)
# The ERP events of an invoice's standing after issuance (InvoiceStanding, but `normal`).
INVOICE_EVENTS: Final = tuple(
    f"invoice.{standing.value}" for standing in InvoiceStanding if standing.value != "normal"
)


def owe_notification(
    rt: Runtime,
    session: Session,
    document_id: int,
    results: Sequence[TransitionResult],
    *,
    reason: str | None = None,
    now: datetime | None = None,
    tenant: str | None = None,
) -> list[Followup]:
    """An ``erp_outbox`` row for the last applied user-visible transition among ``results``.

    ``tenant`` (the document's, when the caller knows it) skips re-reading the document
    when that tenant has no webhook.
    """
    now = now or rt.clock()
    observe_milestones(results, now)
    applied = [r for r in results if r.applied and r.to_status in NOTIFIED]
    if not applied:
        return []
    if tenant is not None:
        known = rt.tenant(tenant)
        if known is None or known.erp_webhook_url is None:
            return []
    final = applied[-1]
    document = session.get(Document, document_id, populate_existing=True)
    if document is None:
        return []
    config = rt.tenant(document.tenant)
    if config is None or config.erp_webhook_url is None:
        return []
    payload = _payload(
        session,
        document,
        event=f"document.{final.to_status.value}",
        status=final.to_status.value,
        previous=final.from_status.value,
        reason=reason,
        now=now,
    )
    return [_owe(session, document, payload, now)]


def owe_after_issuance(
    rt: Runtime,
    session: Session,
    after: AfterIssuance,
    *,
    now: datetime | None = None,
) -> list[Followup]:
    """The ERP rows of ``after`` (module docstring), in the caller's transaction."""
    if not after:
        return []
    now = now or rt.clock()
    followups: list[Followup] = []
    for change in after.changes:
        document = session.get(Document, change.document_id, populate_existing=True)
        if document is None:
            continue
        config = rt.tenant(document.tenant)
        if config is None or config.erp_webhook_url is None:
            continue
        invoice = session.get(Invoice, change.invoice_id)
        payload = _payload(
            session,
            document,
            event=f"invoice.{change.after.value}",
            status=document.status,
            previous=document.status,
            reason=f"invoice {change.before.value} → {change.after.value}",
            now=now,
        )
        if invoice is not None:
            bills = bills_covered(session, [invoice.id]).get(invoice.id, [document.bill_no])
            payload["invoice"] = _invoice_view(invoice, bills)
        followups.append(_owe(session, document, payload, now))
    for result in after.transitions:
        followups += owe_notification(rt, session, result.document_id, [result], now=now)
    return followups


def _payload(
    session: Session,
    document: Document,
    *,
    event: str,
    status: str,
    previous: str | None,
    reason: str | None,
    now: datetime,
) -> dict[str, Any]:
    invoices = invoices_of(session, document.id)
    covered = bills_covered(session, [i.id for i in invoices])
    return {
        "event": event,
        "documentId": document.id,
        "tenant": document.tenant,
        "sellerTaxpayerId": document.seller_tax_id,
        "billNo": document.bill_no,
        "revision": document.revision,
        "status": status,
        "previousStatus": previous,
        "reason": reason,
        "errorCode": document.last_error_code,
        "errorMessage": document.last_error_message,
        "issuedAmount": str(document.issued_amount),
        "invoices": [_invoice_view(i, covered.get(i.id, [document.bill_no])) for i in invoices],
        "occurredAt": now.isoformat(),
    }


def _owe(session: Session, document: Document, payload: dict[str, Any], now: datetime) -> Followup:
    row = add_notification(
        session, document_id=document.id, event=payload["event"], payload=payload, now=now
    )
    labels = {"outbox_id": row.id, "bill_no": document.bill_no, "tenant": document.tenant}
    return Followup(queues.NOTIFY_ERP, labels)


def _invoice_view(invoice: Invoice, bill_nos: list[str]) -> dict[str, Any]:
    def money(value: Any) -> str | None:
        return None if value is None else str(value)

    return {
        "orderNo": invoice.order_no,
        "invoiceCode": invoice.invoice_code,
        "invoiceNum": invoice.invoice_num,
        "invoiceType": invoice.invoice_type,
        "invoiceStatus": invoice.invoice_status,
        "invoiceDate": invoice.invoice_date.isoformat() if invoice.invoice_date else None,
        "totalAmount": money(invoice.total_amount),
        "totalTaxAmount": money(invoice.total_tax_amount),
        "includeTaxAmount": money(invoice.include_tax_amount),
        "invoiceFileUrl": invoice.invoice_file_url,
        "invoicePdfFileUrl": invoice.invoice_pdf_file_url,
        "invoiceXmlFileUrl": invoice.invoice_xml_file_url,
        "issueErrorMessage": invoice.issue_error_message,
        # After issuance (docs/CLOUD-CONTRACT.md §15).
        "invoiceProperty": invoice.invoice_property,
        "standing": invoice.standing or InvoiceStanding.normal.value,
        "standingChangedAt": (
            invoice.status_changed_at.isoformat() if invoice.status_changed_at else None
        ),
        "canRedAmount": money(invoice.can_red_amount),
        "canRedTaxAmount": money(invoice.can_red_tax_amount),
        "originalInvoiceCode": invoice.original_invoice_code,
        "originalInvoiceNum": invoice.original_invoice_num,
        "reversedBy": [_red_view(r) for r in (invoice.reversals or []) if isinstance(r, dict)],
        "billNos": bill_nos,  # several: a merged invoice (docs/CLOUD-CONTRACT.md §6.6)
    }


def _red_view(red: dict[str, Any]) -> dict[str, Any]:
    """A red invoice known against a blue one (``invoices.reversals``)."""
    names = ("invoiceCode", "invoiceNum", "invoiceDate", "totalAmount", "totalTaxAmount")
    return {name: red.get(name) for name in names}
