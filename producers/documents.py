"""Documents as operators and ERPs see them: lookup by bill number, the view, withdraw, replay.

Used by the HTTP routes (``GET /v1/documents/{bill_no}``, ``…/withdraw``, ``…/replay``) and
the CLI (``show``, ``withdraw``, ``replay``), so both say the same thing.

Lookup: a bill number is unique per (tenant, seller). When several current documents share
one, ``find_document`` raises ``AmbiguousBillNo`` listing them, and the caller asks again
with ``seller_tax_id`` (and/or ``tenant``).

Operator actions (nothing here commits; enqueue after the caller's commit)

| action | allowed from | becomes | then |
|---|---|---|---|
| ``withdraw`` | draft | withdrawn (never reached the cloud) | nothing to send |
| ``withdraw`` | pushed, invoice_failed, failed | withdrawing | ``fapiao.withdraw`` |
| ``withdraw`` | withdrawing, withdrawn | unchanged (no-op) | nothing |
| ``replay`` | failed, rejected ONLY | draft (same content) | ``fapiao.push`` |

Replay never touches a document in any other state: in_doubt must be settled by a query
(never a blind re-push), and pushed or invoiced documents are in the cloud already.

Errors

    LookupError
     ├── DocumentNotFound      no current document with that bill number (HTTP 404)
     └── AmbiguousBillNo       several (tenant, seller) have it; name one (HTTP 409)
    ValueError
     └── NotReplayable         replay asked for a document that is not failed/rejected (409)
    store.lifecycle.TransitionNotAllowed  withdraw from a state that cannot (409)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from producers.reversal import red_links
from schemas.tenants import normalise_tax_id
from store.columns import utcnow
from store.invoices import bills_covered, invoices_of
from store.lifecycle import TransitionOutcome, transition
from store.models import CallbackInbox, CloudCall, Document, DocumentEvent, Invoice
from store.queries import document_history, documents_by_bill_no
from store.states import DocumentStatus, Event

__all__ = [
    "REPLAYABLE",
    "AmbiguousBillNo",
    "DocumentNotFound",
    "NotReplayable",
    "OperatorAction",
    "document_summary",
    "document_view",
    "find_document",
    "jsonable",
    "replay_candidates",
    "replay_document",
    "withdraw_document",
]

REPLAYABLE: tuple[DocumentStatus, ...] = (DocumentStatus.failed, DocumentStatus.rejected)


class DocumentNotFound(LookupError):
    def __init__(self, bill_no: str) -> None:
        self.bill_no = bill_no
        super().__init__(f"no document with billNo {bill_no!r} / 找不到单据编号 {bill_no}")


class AmbiguousBillNo(LookupError):
    """Several current documents carry this bill number; ``candidates`` lists them."""

    def __init__(self, bill_no: str, candidates: Sequence[Document]) -> None:
        self.bill_no = bill_no
        self.candidates = [
            {
                "tenant": doc.tenant,
                "seller_tax_id": doc.seller_tax_id,
                "document_id": doc.id,
                "status": doc.status,
            }
            for doc in candidates
        ]
        sellers = ", ".join(f"{c['tenant']}/{c['seller_tax_id']}" for c in self.candidates)
        super().__init__(
            f"billNo {bill_no!r} exists for several sellers ({sellers}); name one with "
            f"seller_tax_id (and tenant) / 单据编号 {bill_no} 属于多个销方，请指定销方税号"
        )


class NotReplayable(ValueError):
    def __init__(self, document: Document) -> None:
        self.status = document.status
        super().__init__(
            f"billNo {document.bill_no} is '{document.status}'; only failed or rejected "
            "documents are replayed (in_doubt is settled by a query, pushed/invoiced are in "
            f"the cloud already) / 单据 {document.bill_no} 当前状态为 {document.status}，"
            "只有失败(failed)或被拒绝(rejected)的单据可以重推"
        )


def find_document(
    session: Session,
    bill_no: str,
    *,
    seller_tax_id: str | None = None,
    tenant: str | None = None,
) -> Document:
    """The current revision of ``bill_no``; raises DocumentNotFound or AmbiguousBillNo."""
    found = documents_by_bill_no(session, bill_no, tenant=tenant)
    if seller_tax_id:
        wanted = normalise_tax_id(seller_tax_id)
        found = [doc for doc in found if doc.seller_tax_id.upper() == wanted]
    if not found:
        raise DocumentNotFound(bill_no)
    if len(found) > 1:
        raise AmbiguousBillNo(bill_no, found)
    return found[0]


def jsonable(value: Any) -> Any:
    """Datetimes as ISO text, Decimals as exact text; containers recursively."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def _age_seconds(since: datetime | None, now: datetime) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


def _reason(document: Document, events: Sequence[DocumentEvent]) -> str | None:
    if document.last_error_message:
        return document.last_error_message
    for item in reversed(events):
        if item.outcome == "applied" and item.to_status == document.status:
            return item.reason
    return None


def document_summary(document: Document, *, now: datetime | None = None) -> dict[str, Any]:
    """The short form: identity, state, age, amounts."""
    now = now or utcnow()
    return {
        "document_id": document.id,
        "bill_no": document.bill_no,
        "tenant": document.tenant,
        "seller_tax_id": document.seller_tax_id,
        "revision": document.revision,
        "status": document.status,
        "status_changed_at": document.status_changed_at,
        "age_seconds": _age_seconds(document.status_changed_at, now),
        "invoice_type": document.invoice_type,
        "total_amount": document.total_amount,
        "total_incl_tax": document.total_incl_tax,
        "issued_amount": document.issued_amount,
        "last_error_code": document.last_error_code,
        "created_at": document.created_at,
    }


def _invoice(row: Invoice, bill_nos: list[str]) -> dict[str, Any]:
    return {
        # A merged invoice (autoMerge=1) covers several bills: all of them, this one included.
        "merged": len(bill_nos) > 1,
        "bill_nos": bill_nos,
        "invoice_code": row.invoice_code,
        "invoice_num": row.invoice_num,
        "order_no": row.order_no,
        "invoice_type": row.invoice_type,
        "invoice_status": row.invoice_status,
        "invoice_date": None if row.invoice_date is None else row.invoice_date.isoformat(),
        "total_amount": row.total_amount,
        "total_tax_amount": row.total_tax_amount,
        "include_tax_amount": row.include_tax_amount,
        "issue_error_message": row.issue_error_message,
        # After issuance (docs/CLOUD-CONTRACT.md §15): voided / (partly) reversed, when, what
        # is left to reverse, the red invoices known against it; a red one names its original.
        "invoice_property": row.invoice_property,
        "standing": row.standing or "normal",
        "standing_changed_at": row.status_changed_at,
        "can_red_amount": row.can_red_amount,
        "can_red_tax_amount": row.can_red_tax_amount,
        "original_invoice_code": row.original_invoice_code,
        "original_invoice_num": row.original_invoice_num,
        "reversed_by": [
            {
                "invoice_code": red.get("invoiceCode"),
                "invoice_num": red.get("invoiceNum"),
                "total_amount": red.get("totalAmount"),
                "total_tax_amount": red.get("totalTaxAmount"),
            }
            for red in (row.reversals or [])
            if isinstance(red, dict)
        ],
        "files": {
            key: url
            for key, url in (
                ("invoiceFileUrl", row.invoice_file_url),
                ("invoicePdfFileUrl", row.invoice_pdf_file_url),
                ("invoiceXmlFileUrl", row.invoice_xml_file_url),
                ("invoiceImageUrl", row.invoice_image_url),
            )
            if url
        },
        "created_at": row.created_at,
    }


def document_view(
    session: Session, document: Document, *, now: datetime | None = None
) -> dict[str, Any]:
    """Everything about one document: state and reason, invoices, and one merged timeline of
    transitions, cloud calls, callbacks and invoices (oldest first). Values are not yet
    JSON-ready (pass through ``jsonable``)."""
    now = now or utcnow()
    events = document_history(session, document.id)
    invoices = invoices_of(session, document.id)
    covered = bills_covered(session, [row.id for row in invoices])
    calls = list(
        session.scalars(
            select(CloudCall).where(CloudCall.document_id == document.id).order_by(CloudCall.id)
        )
    )
    callbacks = list(
        session.scalars(
            select(CallbackInbox)
            .where(CallbackInbox.document_id == document.id)
            .order_by(CallbackInbox.id)
        )
    )
    revisions = list(
        session.scalars(
            select(Document)
            .where(
                Document.tenant == document.tenant,
                Document.seller_tax_id == document.seller_tax_id,
                Document.bill_no == document.bill_no,
            )
            .order_by(Document.revision)
        )
    )
    timeline: list[dict[str, Any]] = []
    for item in events:
        timeline.append(
            {
                "at": item.created_at,
                "kind": "transition",
                "event": item.event,
                "from": item.from_status,
                "to": item.to_status,
                "outcome": item.outcome,
                "actor": item.actor,
                "reason": item.reason,
                "attempt": item.attempt,
            }
        )
    for call in calls:
        timeline.append(
            {
                "at": call.created_at,
                "kind": "cloud_call",
                "interface": call.interface,
                "outcome": call.outcome,
                "http_status": call.http_status,
                "error_code": call.error_code,
                "message": call.message,
                "attempt": call.attempt,
                "latency_ms": call.latency_ms,
                "request_id": call.request_id,
            }
        )
    for callback in callbacks:
        timeline.append(
            {
                "at": callback.received_at,
                "kind": "callback",
                "inbox_id": callback.id,
                "style": callback.style,
                "state": callback.state,
                "error": callback.error,
            }
        )
    for row in invoices:
        timeline.append(
            {
                "at": row.created_at,
                "kind": "invoice",
                "invoice_num": row.invoice_num,
                "invoice_code": row.invoice_code,
                "invoice_status": row.invoice_status,
                "issue_error_message": row.issue_error_message,
            }
        )
    for row in invoices:
        if row.status_changed_at is not None and (row.standing or "normal") != "normal":
            timeline.append(
                {
                    "at": row.status_changed_at,
                    "kind": "invoice_standing",
                    "invoice_num": row.invoice_num,
                    "invoice_code": row.invoice_code,
                    "standing": row.standing,
                    "can_red_amount": row.can_red_amount,
                }
            )
    # Stable: same-instant entries keep the order transitions → calls → callbacks → invoices.
    timeline.sort(key=lambda entry: entry["at"])
    view = document_summary(document, now=now)
    view.update(
        {
            "reason": _reason(document, events),
            "last_error_message": document.last_error_message,
            "push_attempt": document.push_attempt,
            "next_attempt_at": document.next_attempt_at,
            "next_poll_at": document.next_poll_at,
            "invoices": [
                _invoice(row, covered.get(row.id, [document.bill_no])) for row in invoices
            ],
            "revisions": [
                {"revision": r.revision, "document_id": r.id, "status": r.status} for r in revisions
            ],
            "timeline": timeline,
        }
    )
    view.update(red_links(session, document))
    return view


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """The result of withdraw/replay on one document; ``enqueue`` names the owed task."""

    document_id: int
    bill_no: str
    tenant: str
    from_status: str
    to_status: str
    applied: bool
    enqueue: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "document_id": self.document_id,
            "bill_no": self.bill_no,
            "tenant": self.tenant,
            "from_status": self.from_status,
            "status": self.to_status,
            "outcome": "applied" if self.applied else "unchanged",
        }


def withdraw_document(
    session: Session, document: Document, *, actor: str, reason: str | None = None
) -> OperatorAction:
    """Apply ``withdraw`` (module table). Raises TransitionNotAllowed / LostRace. No commit."""
    result = transition(
        session,
        document.id,
        Event.withdraw,
        actor=actor,
        expected_version=document.version,
        reason=reason or "withdraw requested",
    )
    owed = result.applied and result.to_status is DocumentStatus.withdrawing
    return OperatorAction(
        document.id,
        document.bill_no,
        document.tenant,
        result.from_status.value,
        result.to_status.value,
        result.outcome is TransitionOutcome.applied,
        "withdraw" if owed else None,
    )


def replay_document(
    session: Session, document: Document, *, actor: str, reason: str | None = None
) -> OperatorAction:
    """failed/rejected → draft with a ``replay`` event; anything else is NotReplayable."""
    if DocumentStatus(document.status) not in REPLAYABLE:
        raise NotReplayable(document)
    result = transition(
        session,
        document.id,
        Event.replay,
        actor=actor,
        expected_status=document.status,
        expected_version=document.version,
        reason=reason or "replay requested",
    )
    return OperatorAction(
        document.id,
        document.bill_no,
        document.tenant,
        result.from_status.value,
        result.to_status.value,
        result.applied,
        "push" if result.applied else None,
    )


def replay_candidates(
    session: Session,
    *,
    states: Sequence[DocumentStatus] = REPLAYABLE,
    bill_nos: Sequence[str] = (),
    tenant: str | None = None,
    since: datetime | None = None,
    error_code: str | None = None,
    limit: int | None = None,
) -> list[Document]:
    """Current documents a replay would take, oldest state change first. ``states`` is
    intersected with ``REPLAYABLE``: no filter can widen a replay to other states."""
    allowed = [state.value for state in states if state in REPLAYABLE]
    if not allowed:
        return []
    statement = select(Document).where(Document.is_current.is_(True), Document.status.in_(allowed))
    if bill_nos:
        statement = statement.where(Document.bill_no.in_(list(bill_nos)))
    if tenant is not None:
        statement = statement.where(Document.tenant == tenant)
    if since is not None:
        statement = statement.where(Document.status_changed_at >= since)
    if error_code is not None:
        statement = statement.where(Document.last_error_code == error_code)
    statement = statement.order_by(Document.status_changed_at, Document.id)
    if limit is not None:
        statement = statement.limit(limit)
    return list(session.scalars(statement.execution_options(populate_existing=True)))
