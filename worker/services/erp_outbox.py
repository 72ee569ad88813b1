"""The ERP notifications a transition owes: ``erp_outbox`` rows written with the transition.

``owe_notification`` writes an ``erp_outbox`` row in the caller's transaction for the last
user-visible transition (table ``NOTIFIED``) of a tenant that has a webhook; the row id comes
back as a ``Followup`` for ``fapiao.notify_erp`` (``worker.services.notify``) to send after
commit. Every service hands its transitions to it, so it also observes the submit→pushed and
submit→invoiced histograms (``worker.services.milestones``).

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
from store.states import DocumentStatus
from worker import queues
from worker.runtime import Followup, Runtime
from worker.services.milestones import observe_milestones

__all__ = ["NOTIFIED", "owe_notification"]

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
    }
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
    invoices = invoices_of(session, document_id)
    covered = bills_covered(session, [i.id for i in invoices])
    payload: dict[str, Any] = {
        "event": f"document.{final.to_status.value}",
        "documentId": document.id,
        "tenant": document.tenant,
        "sellerTaxpayerId": document.seller_tax_id,
        "billNo": document.bill_no,
        "revision": document.revision,
        "status": final.to_status.value,
        "previousStatus": final.from_status.value,
        "reason": reason,
        "errorCode": document.last_error_code,
        "errorMessage": document.last_error_message,
        "issuedAmount": str(document.issued_amount),
        "invoices": [_invoice_view(i, covered.get(i.id, [document.bill_no])) for i in invoices],
        "occurredAt": now.isoformat(),
    }
    row = add_notification(
        session, document_id=document_id, event=payload["event"], payload=payload, now=now
    )
    labels = {"outbox_id": row.id, "bill_no": document.bill_no, "tenant": document.tenant}
    return [Followup(queues.NOTIFY_ERP, labels)]


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
        "billNos": bill_nos,  # several: a merged invoice (docs/CLOUD-CONTRACT.md §6.6)
    }
