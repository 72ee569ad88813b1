"""Invoices the cloud reports (callback or query) → ``invoices`` rows → one lifecycle event.

Recording is ``store.invoices.record_invoice`` (idempotent: by ``orderNo``, then
``invoiceCode`` + ``invoiceNum``, then — for a failed issuance with neither — the document,
attempt and ``issueErrorMessage``). An invoice already recorded for another bill of the same
tenant and seller is a merged invoice (``autoMerge=1``): it is linked to this document too.
One that cannot be a merge is logged and skipped (``InvoiceBelongsElsewhere``): an operator
must look.

Verdict (from every invoice stored for the document)

| issued amount vs the document total (± 0.01 per invoice) | event          |
|----------------------------------------------------------|----------------|
| covers it                                                | ``issued_all`` |
| some, not all                                            | ``issued_some``|
| nothing issued, failures, nothing pending                | ``issue_failed``|
| nothing issued yet                                       | none (wait)    |

Amounts compared: 价税合计 (``includeTaxAmount``) with the document's ``total_incl_tax``
when known; otherwise on the bill's own basis (``includeTaxFlag`` 1 → 价税合计, 0 → 合计金额).
A merged invoice counts with its share (``store.invoices.share_of``): the amounts of its lines
attributed to this bill (``detailId``/``billSourceId``), or — when its lines cannot be
attributed — its whole amount up to the document's (it counts fully for each of its bills).
Red bills compare absolute values and count red invoices (``invoiceProperty`` 1).
A cancelled (作废, status 6) or reversed (红冲, 3) invoice was still issued: it still counts
for the verdict above, which never moves a document backwards.

After issuance (docs/CLOUD-CONTRACT.md §15): every report also moves each invoice's
``standing`` forward (``store.invoices.standing_of``: normal → partially_reversed → reversed,
or → voided), from whichever of these facts it carries

| reported item                                                | applied to               |
|--------------------------------------------------------------|--------------------------|
| an invoice of the bill (``invoiceStatus``, ``canRedAmount``…) | that invoice             |
| a red invoice (``invoiceProperty`` 1) naming                 | the stored blue one it   |
| ``originalInvoiceCode``/``originalInvoiceNumber``            | reverses (any document   |
|                                                              | of the tenant and seller)|
| an INVOICE.CANCEL item with only ``original*``               | the blue one it names    |
| (``cancel_item=original_only``)                              |                          |

A red invoice reported on a BLUE document's bill (INVOICE.RED for the original's bill) is
such a fact, not an invoice of that document. Each standing change is owed to the ERP
(``invoice.<standing>``), and a document whose issued invoices are all reversed or voided
gets ``reversed_all`` (``invoiced`` → ``reversed``; ``partially_invoiced`` keeps its state:
invoices are still owed). ``InvoiceVerdict.after`` carries both for the caller's
``worker.services.erp_outbox.owe_after_issuance``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Final

from sqlalchemy.orm import Session

from schemas.kingdee import InvoiceItem
from store.invoices import (
    Covering,
    InvoiceBelongsElsewhere,
    StandingChange,
    coverings,
    documents_covering,
    invoices_of,
    known_invoice,
    record_invoice,
    record_reversal,
    record_void,
    share_of,
)
from store.lifecycle import TransitionResult, is_allowed, transition, update_fields
from store.models import Document, Invoice
from store.states import ISSUE_OVERDUE, QUOTA_EXHAUSTED, DocumentStatus, Event, InvoiceStanding
from worker import metrics
from worker.runtime import Runtime
from worker.services.quota import is_quota_failure, quota_failure
from worker.services.red_refusal import explain_red_refusal

__all__ = [
    "AfterIssuance",
    "InvoiceChange",
    "InvoiceVerdict",
    "all_known",
    "apply_invoices",
    "covered_amount",
    "upsert_invoices",
    "verdict_for",
]

log = logging.getLogger(__name__)

CENT = Decimal("0.01")

# States in which invoice news can move the document (anything else records only).
_MOVABLE = frozenset(
    {
        DocumentStatus.pushed,
        DocumentStatus.partially_invoiced,
        DocumentStatus.invoice_failed,
        DocumentStatus.invoiced,
        DocumentStatus.withdrawing,
    }
)


@dataclass(frozen=True, slots=True)
class InvoiceChange:
    """An invoice's standing moved forward; owed to the ERP for ``document_id``."""

    document_id: int
    invoice_id: int
    before: InvoiceStanding
    after: InvoiceStanding


@dataclass(frozen=True, slots=True)
class AfterIssuance:
    """What a report changed after issuance (module docstring), for the ERP notifications."""

    changes: tuple[InvoiceChange, ...] = ()
    transitions: tuple[TransitionResult, ...] = ()  # applied ``reversed_all`` (any document)

    def __bool__(self) -> bool:
        return bool(self.changes or self.transitions)


@dataclass(frozen=True, slots=True)
class InvoiceVerdict:
    event: Event | None
    issued_amount: Decimal
    target: Decimal
    issued: int
    failed: int
    pending: int
    failure: str | None
    merged: int = 0  # issued invoices also covering other documents
    after: AfterIssuance = AfterIssuance()


def upsert_invoices(
    session: Session,
    document: Document,
    items: Sequence[InvoiceItem],
    *,
    now: dt.datetime,
) -> int:
    """Record every item of ``document``'s bill; returns how many pending items had no key.

    A pending item (neither issued nor failed) without ``orderNo`` has nothing to be matched
    by later, so it is counted for this verdict but not stored.
    """
    return _upsert(session, document, items, now=now)[0]


def _upsert(
    session: Session,
    document: Document,
    items: Sequence[InvoiceItem],
    *,
    now: dt.datetime,
    changes: list[StandingChange] | None = None,
) -> tuple[int, list[Covering] | None]:
    """``upsert_invoices``, and — when every invoice covering the document was created by
    this call (it had none before: ``InvoiceRecord.alone``) — those coverings, so the
    verdict needs no read (the common case: a document's first invoice); None when only
    ``coverings`` can tell."""
    unrecorded = 0
    fresh: list[Covering] = []
    known = True  # so far every record was created, the first while nothing covered it
    red_document = _is_red_document(document)
    for item in items:
        if item.billNo != document.bill_no:
            continue
        if _is_void_fact(item) or (_is_red_fact(item) and not red_document):
            continue  # about a blue invoice, not an invoice of this document (_after_issuance)
        if item.is_pending and not (item.orderNo or "").strip():
            unrecorded += 1
            continue
        try:
            record = record_invoice(session, **_reported(document, item), now=now)
        except InvoiceBelongsElsewhere as exc:
            log.error(str(exc), extra={"document_id": document.id, "bill_no": item.billNo})
            known = False
            continue
        if record.standing_change is not None and changes is not None:
            changes.append(record.standing_change)
        if record.stored is None or not (record.alone or fresh):
            known = False
        elif known:
            # Created by this call for this document alone (no other has linked it yet).
            fresh.append(Covering(record.stored, 1))
    return unrecorded, (fresh if known and fresh else None)


def all_known(
    document: Document, invoices: Sequence[Invoice], items: Sequence[InvoiceItem]
) -> bool:
    """Does every item about ``document``'s bill only repeat what ``invoices`` already hold?

    False when no item is about the bill, or one has no key (``orderNo`` / ``invoiceNum``):
    then only ``apply_invoices`` (after a confirming query) can tell.
    """
    mine = [item for item in items if item.billNo == document.bill_no]
    return bool(mine) and all(known_invoice(invoices, **_reported(document, item)) for item in mine)


def _reported(document: Document, item: InvoiceItem) -> dict[str, Any]:
    """``record_invoice``'s keyword arguments for one reported item."""
    red = item.invoiceProperty == 1
    return {
        "document_id": document.id,
        "push_attempt": document.push_attempt,
        "order_no": (item.orderNo or "").strip() or None,
        "invoice_code": (item.invoiceCode or "").strip() or None,
        "invoice_num": (item.invoiceNum or "").strip() or None,
        "invoice_type": item.invoiceType,
        "invoice_status": item.invoiceStatus,
        "total_amount": item.totalAmount,
        "total_tax_amount": item.totalTaxAmount,
        "include_tax_amount": _incl(item),
        "invoice_date": _date(item.invoiceDate),
        "invoice_file_url": item.invoiceFileUrl,
        "invoice_pdf_file_url": item.invoicePdfFileUrl,
        "invoice_xml_file_url": item.invoiceXmlFileUrl,
        "invoice_image_url": item.invoiceImageUrl,
        "issue_error_message": None if item.is_issued else item.issueErrorMessage,
        "invoice_property": item.invoiceProperty,
        # Only a red invoice names an original (a cancel item may name itself there).
        "original_invoice_code": ((item.originalInvoiceCode or "").strip() or None)
        if red
        else None,
        "original_invoice_num": ((item.originalInvoiceNumber or "").strip() or None)
        if red
        else None,
        "can_red_amount": item.canRedAmount,
        "can_red_tax_amount": item.canRedTaxAmount,
        "raw": item.to_wire(),
    }


def _text(value: str | None) -> str | None:
    return (value or "").strip() or None


def _is_red_document(document: Document) -> bool:
    return str((document.payload or {}).get("invoiceProperty", "0")) == "1"


def _is_red_invoice(invoice: Invoice) -> bool:
    if invoice.invoice_property is not None:
        return invoice.invoice_property == 1
    return str((invoice.raw or {}).get("invoiceProperty", "0")) == "1"


def _is_red_fact(item: InvoiceItem) -> bool:
    """An issued red invoice naming the blue one it reverses."""
    return (
        item.invoiceProperty == 1
        and item.is_issued
        and bool((item.originalInvoiceNumber or "").strip())
    )


def _is_void_fact(item: InvoiceItem) -> bool:
    """An INVOICE.CANCEL item that names the voided invoice by ``original*`` only."""
    return (
        not item.is_issued
        and not item.is_failed
        and "6" in (item.invoiceStatus, item.originalInvoiceStatus)
        and bool((item.originalInvoiceNumber or "").strip())
    )


def _incl(item: InvoiceItem) -> Decimal | None:
    if item.includeTaxAmount is not None:
        return item.includeTaxAmount
    if item.totalAmount is not None and item.totalTaxAmount is not None:
        return item.totalAmount + item.totalTaxAmount
    return None


def _date(text: str | None) -> dt.date | None:
    """``yyyy-MM-dd`` (observed), ``yyyy-MM-dd HH:mm:ss`` or ``yyyyMMdd``; None otherwise."""
    if not text:
        return None
    value = text.strip()
    for candidate, fmt in ((value[:10], "%Y-%m-%d"), (value[:8], "%Y%m%d")):
        try:
            return dt.datetime.strptime(candidate, fmt).date()
        except ValueError:
            continue
    return None


def _basis(document: Document) -> tuple[Decimal, str]:
    if document.total_incl_tax is not None:
        return abs(document.total_incl_tax), "incl"
    flag = str((document.payload or {}).get("includeTaxFlag", "0"))
    return abs(document.total_amount), "incl" if flag == "1" else "excl"


def covered_amount(document: Document, invoice: Invoice, documents: int = 1) -> Decimal:
    """What ``invoice`` counts towards ``document`` (absolute, on the document's basis)."""
    target, basis = _basis(document)
    stated = invoice.include_tax_amount if basis == "incl" else invoice.total_amount
    amount = abs(stated or Decimal("0"))
    share = share_of(document.payload, invoice.raw, documents=documents)
    if not share.merged:
        return amount
    attributed = share.incl if basis == "incl" else share.excl
    if attributed is not None:
        return abs(attributed)
    return min(amount, target)


def verdict_for(
    document: Document,
    invoices: Sequence[Invoice | Covering],
    *,
    unrecorded_pending: int = 0,
) -> InvoiceVerdict:
    """The event the stored invoices justify (module docstring table). ``Covering``s say
    how many documents each invoice covers (a bare ``Invoice`` counts as covering one)."""
    target, _ = _basis(document)
    red = str((document.payload or {}).get("invoiceProperty", "0")) == "1"
    issued_amount = Decimal("0.00")
    issued = failed = merged = 0
    pending = unrecorded_pending
    failure: str | None = None
    for entry in invoices:
        inv, documents = (
            (entry.invoice, entry.documents) if isinstance(entry, Covering) else (entry, 1)
        )
        if inv.invoice_num:
            if _is_red_invoice(inv) != red:
                continue
            issued += 1
            if share_of(document.payload, inv.raw, documents=documents).merged:
                merged += 1
            issued_amount += covered_amount(document, inv, documents)
        elif inv.issue_error_message:
            failed += 1
            failure = failure or inv.issue_error_message
        else:
            pending += 1
    tolerance = CENT * max(1, issued)
    if issued and issued_amount >= target - tolerance:
        event: Event | None = Event.issued_all
    elif issued:
        event = Event.issued_some
    elif failed and not pending:
        event = Event.issue_failed
    else:
        event = None
    return InvoiceVerdict(event, issued_amount, target, issued, failed, pending, failure, merged)


def apply_invoices(
    rt: Runtime,
    session: Session,
    document: Document,
    items: Sequence[InvoiceItem],
    *,
    reason: str,
    just_read: bool = False,
) -> tuple[list[TransitionResult], InvoiceVerdict]:
    """Upsert ``items`` and apply the verdict's event (if the document's state allows it).

    Returns the transitions made (for ERP notifications) and the verdict. Runs in the
    caller's transaction; raises ``LostRace`` when the document moved meanwhile.
    ``just_read``: ``document`` was read by this transaction (``populate_existing``), so the
    transition need not read it again (``transition(current=…)``).
    """
    now = rt.clock()
    standing: list[StandingChange] = []
    unrecorded, fresh = _upsert(session, document, items, now=now, changes=standing)
    covering = fresh if fresh is not None else coverings(session, document.id)
    verdict = verdict_for(document, covering, unrecorded_pending=unrecorded)
    # Read before the transition expires the loaded document (no second SELECT).
    owner = _Owner(document.bill_no, document.tenant, document.seller_tax_id)
    results, verdict = _apply_verdict(
        rt, session, document, verdict, reason=reason, now=now, just_read=just_read
    )
    after = _after_issuance(rt, session, owner, items, standing, reason=reason, now=now)
    if after:
        verdict = replace(verdict, after=after)
    return results, verdict


def _apply_verdict(
    rt: Runtime,
    session: Session,
    document: Document,
    verdict: InvoiceVerdict,
    *,
    reason: str,
    now: dt.datetime,
    just_read: bool = False,
) -> tuple[list[TransitionResult], InvoiceVerdict]:
    status = DocumentStatus(document.status)
    results: list[TransitionResult] = []
    if verdict.issued_amount > verdict.target + CENT * max(1, verdict.issued):
        log.error(
            "issued more than the document total",
            extra={
                "document_id": document.id,
                "bill_no": document.bill_no,
                "issued": str(verdict.issued_amount),
                "total": str(verdict.target),
            },
        )
    changes: dict[str, Any] = {}
    if verdict.issued_amount != document.issued_amount:
        changes["issued_amount"] = verdict.issued_amount
    if verdict.failure and verdict.event in (Event.issue_failed, Event.issued_some):
        red = explain_red_refusal(None, verdict.failure)
        changes["last_error_message"] = verdict.failure + (f" — {red}" if red else "")
        if is_quota_failure(verdict.failure) and document.last_error_code != QUOTA_EXHAUSTED:
            # 授信额度不足: a reason that says what it means, and the tenant/seller held.
            changes["last_error_code"] = QUOTA_EXHAUSTED
            changes["last_error_message"] = quota_failure(rt, session, document, verdict.failure)
    if document.last_error_code == QUOTA_EXHAUSTED and verdict.event is Event.issued_all:
        # Re-issued in the cloud once there was quota: the refusal is history.
        changes.update(last_error_code=None, last_error_message=None)
    if document.last_error_code == ISSUE_OVERDUE and verdict.event is not None:
        # The overdue flag (worker.services.poll) said "nothing yet"; now something is.
        changes["last_error_code"] = None
        changes.setdefault("last_error_message", None)
    if verdict.event is None or status not in _MOVABLE:
        if changes and status in _MOVABLE:
            update_fields(session, document.id, changes, now=now)
        return results, verdict
    detail = (
        f"{reason}: {verdict.issued} issued ({verdict.issued_amount} of {verdict.target}),"
        f" {verdict.failed} failed, {verdict.pending} pending"
    )
    if verdict.merged:
        detail += f" ({verdict.merged} merged with other bills)"
    if verdict.failure:
        detail += f"; {verdict.failure}"
    result = transition(
        session,
        document.id,
        verdict.event,
        actor=rt.actor,
        expected_status=status,
        expected_version=document.version,
        reason=detail,
        changes=changes,
        now=now,
        current=document if just_read else None,
    )
    if not result.applied and changes:
        update_fields(session, document.id, changes, now=now)
    results.append(result)
    return results, verdict


@dataclass(frozen=True, slots=True)
class _Owner:
    bill_no: str
    tenant: str
    seller_tax_id: str


def _after_issuance(
    rt: Runtime,
    session: Session,
    document: _Owner,
    items: Sequence[InvoiceItem],
    standing: list[StandingChange],
    *,
    reason: str,
    now: dt.datetime,
) -> AfterIssuance:
    """Red and void facts among ``items`` applied to the blue invoices they name, and every
    document covering a changed invoice settled (module docstring). Caller's transaction."""
    changes = list(standing)
    for item in items:
        if item.billNo != document.bill_no:
            continue
        number = (item.originalInvoiceNumber or "").strip()
        code = (item.originalInvoiceCode or "").strip() or None
        if _is_red_fact(item):
            blue, change = record_reversal(
                session, tenant=document.tenant, seller_tax_id=document.seller_tax_id,
                original_code=code, original_num=number, red=item.to_wire(), now=now,
            )  # fmt: skip
        elif _is_void_fact(item):
            blue, change = record_void(
                session, tenant=document.tenant, seller_tax_id=document.seller_tax_id,
                original_code=code, original_num=number, now=now,
            )  # fmt: skip
        else:
            continue
        if blue is None:
            log.warning(
                "after-issuance fact names an invoice the bridge does not hold",
                extra={"bill_no": item.billNo, "original_invoice_num": number},
            )
        if change is not None:
            changes.append(change)
    if not changes:
        return AfterIssuance()
    covering = documents_covering(session, [change.invoice_id for change in changes])
    notices = [
        InvoiceChange(document_id, change.invoice_id, change.before, change.after)
        for change in changes
        for document_id in covering.get(change.invoice_id, [])
    ]
    for change in changes:
        metrics.invoice_changes().labels(tenant=document.tenant, standing=change.after.value).inc()
    transitions = [
        result
        for document_id in sorted({notice.document_id for notice in notices})
        if (result := _settle_reversal(rt, session, document_id, reason=reason, now=now))
    ]
    return AfterIssuance(tuple(notices), tuple(transitions))


_ENDED: Final = frozenset({InvoiceStanding.reversed.value, InvoiceStanding.voided.value})


def _settle_reversal(
    rt: Runtime, session: Session, document_id: int, *, reason: str, now: dt.datetime
) -> TransitionResult | None:
    """``reversed_all`` when every issued invoice of the document is reversed or voided."""
    document = session.get(Document, document_id, populate_existing=True)
    if document is None or _is_red_document(document):
        return None
    status = DocumentStatus(document.status)
    if not is_allowed(status, Event.reversed_all):
        return None
    issued = [
        inv for inv in invoices_of(session, document_id)
        if inv.invoice_num and not _is_red_invoice(inv)
    ]  # fmt: skip
    if not issued or any(inv.standing not in _ENDED for inv in issued):
        return None
    voided = sum(1 for inv in issued if inv.standing == InvoiceStanding.voided.value)
    result = transition(
        session,
        document_id,
        Event.reversed_all,
        actor=rt.actor,
        expected_status=status,
        expected_version=document.version,
        reason=(
            f"{reason}: every issued invoice is voided or reversed ({voided} voided,"
            f" {len(issued) - voided} reversed) / 发票已全部作废或红冲"
        ),
        now=now,
    )
    return result if result.applied else None
