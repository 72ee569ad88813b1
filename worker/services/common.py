"""Pieces every service shares: calls with a token, ERP notifications owed, tenant pauses.

``call_with_token`` is where the "retry once with a fresh token" rule lives:

| step | what                                                                            |
|------|---------------------------------------------------------------------------------|
| 1    | token from the cache (single-flight refresh when missing or about to expire)    |
| 2    | the call                                                                        |
| 3    | ``auth_expired``? drop that token (only if still cached), get a fresh one, call |
|      | once more; the result is marked ``auth_refreshed`` so the policy can tell a     |
|      | stale token from wrong configuration                                            |

``owe_notification`` writes an ``erp_outbox`` row in the caller's transaction for every
user-visible transition (table ``NOTIFIED``) of a tenant that has a webhook; the row id comes
back as a ``Followup`` for ``fapiao.notify_erp`` to send after commit. Every service hands its
transitions to it, so it also observes the submit→pushed and submit→invoiced histograms
(``observe_milestones``: from the columns the transition already read, no extra statement).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.cloud_contract import OutcomeClass
from schemas.tenants import TenantConfig
from store import tenants as tenant_state
from store.invoices import bills_covered, invoices_of
from store.lifecycle import TransitionResult
from store.models import Document, Invoice, TenantState
from store.outbox import add_notification
from store.states import DocumentStatus
from worker import metrics, queues
from worker.kingdee import CloudResult, CloudTransientError, KingdeeClient, fetch_access_token
from worker.runtime import Followup, Runtime
from worker.tokens import TokenUnavailable

__all__ = [
    "NOTIFIED",
    "call_with_token",
    "document_and_pause",
    "document_task_kwargs",
    "is_paused_from",
    "is_tenant_paused",
    "observe_milestones",
    "owe_notification",
    "pause_tenant",
]

log = logging.getLogger(__name__)

# A first acceptance (withdrawing → pushed after a refused withdrawal is not one).
_FIRST_PUSHED: Final = frozenset({DocumentStatus.pushing, DocumentStatus.in_doubt})

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


def call_with_token(
    rt: Runtime, client: KingdeeClient, call: Callable[[str], CloudResult]
) -> CloudResult:
    """``call(access_token)`` with the one-refresh rule (module docstring).

    Raises ``CloudConfigError`` when no token can be had because the cloud refuses our
    credentials, ``CloudTransientError`` when it cannot be asked right now.
    """
    tenant = client.tenant.name

    def fetch() -> Any:
        return fetch_access_token(client)

    try:
        token = rt.tokens.get(tenant, fetch)
        result = call(token)
        if result.outcome is not OutcomeClass.AUTH_EXPIRED:
            return result
        rt.tokens.invalidate(tenant, token)
        log.info("access token refused, refreshing once", extra={"tenant": tenant})
        token = rt.tokens.get(tenant, fetch)
        return call(token).refreshed()
    except TokenUnavailable as exc:
        raise CloudTransientError(str(exc)) from exc


def is_tenant_paused(rt: Runtime, session: Session, tenant: TenantConfig) -> bool:
    """Paused by the operator switch in the tenants file or in ``tenant_state``."""
    return tenant.paused or tenant_state.is_paused(session, tenant.name)


def document_and_pause(session: Session, document_id: int) -> tuple[Document | None, bool]:
    """The document and its tenant's ``tenant_state.paused`` flag, in one statement.

    The flag alone is not the whole answer: ``is_paused_from`` adds the tenants file switch.
    """
    row = session.execute(
        select(Document, TenantState.paused)
        .outerjoin(TenantState, TenantState.tenant == Document.tenant)
        .where(Document.id == document_id)
    ).one_or_none()
    if row is None:
        return None, False
    return row[0], bool(row[1])


def is_paused_from(tenant: TenantConfig, paused_in_database: bool) -> bool:
    """``is_tenant_paused`` with the ``tenant_state`` flag already read."""
    return tenant.paused or paused_in_database


def pause_tenant(rt: Runtime, session: Session, tenant: str, reason: str) -> None:
    """Pause ``tenant`` (in the caller's transaction) so nothing else hammers a broken config."""
    tenant_state.pause_tenant(session, tenant, reason, now=rt.clock())
    metrics.tenant_pauses().labels(tenant=tenant).inc()
    log.error("tenant paused", extra={"tenant": tenant, "reason": reason})


def document_task_kwargs(document: Document) -> dict[str, Any]:
    return {"document_id": document.id, "bill_no": document.bill_no, "tenant": document.tenant}


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


def observe_milestones(results: Sequence[TransitionResult], now: datetime) -> None:
    """Submit→pushed / submit→invoiced, once per document: only the applied transition into
    the state counts (invoiced is terminal; pushed is reached from pushing or in_doubt once).
    Observed before the caller commits: a commit that then fails leaves one stray sample."""
    for result in results:
        if not result.applied or result.created_at is None:
            continue
        if result.to_status is DocumentStatus.pushed and result.from_status in _FIRST_PUSHED:
            histogram = metrics.submit_to_pushed()
        elif result.to_status is DocumentStatus.invoiced:
            histogram = metrics.submit_to_invoiced()
        else:
            continue
        seconds = max(0.0, (now - result.created_at).total_seconds())
        histogram.labels(tenant=result.tenant).observe(seconds)


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
