"""Recording the invoices the cloud reports (callbacks and BILL.INVOICE.QUERY), idempotently.

The same invoice arrives many times (per-invoice and per-bill callbacks, retries, polls).
`record_invoice` finds the row it already has, in this order, and fills in what is new:

| the report carries                 | matched on                                             |
|------------------------------------|--------------------------------------------------------|
| `orderNo`                          | `order_no` (unique)                                    |
| `invoiceNum` (and maybe a code)    | (`invoice_code`, `invoice_num`) (unique; code `''` 数电) |
| neither (a failed issuance)        | same document, push attempt and `issueErrorMessage`    |

Known values are never erased by a later report that lacks them (None means "not said").
An invoice already recorded for ANOTHER document raises `InvoiceBelongsElsewhere`: the
cloud or our matching is wrong and an operator must look. Concurrent reports of the same
invoice are safe: the loser of the unique-index race (its INSERT does nothing) re-reads and
updates. Nothing here commits; nothing here moves a document's state (the reconciler
decides with `store.lifecycle.transition`).

Statements: a new keyed invoice is one `INSERT … ON CONFLICT DO NOTHING RETURNING id`; a known
one is that INSERT (which does nothing), a SELECT and, if something is new, an UPDATE. A
report without keys is a SELECT, then the INSERT if nothing matched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from store.columns import jsonable, utcnow
from store.models import Invoice

if TYPE_CHECKING:
    from sqlalchemy import Table

__all__ = [
    "InvoiceBelongsElsewhere",
    "InvoiceRecord",
    "RecordOutcome",
    "invoices_of",
    "known_invoice",
    "record_invoice",
]


_invoices = cast("Table", Invoice.__table__)


class InvoiceBelongsElsewhere(Exception):
    def __init__(self, invoice: Invoice, document_id: int) -> None:
        self.invoice_id = invoice.id
        self.document_id = document_id
        super().__init__(
            f"invoice {invoice.invoice_code}{invoice.invoice_num or ''} (orderNo"
            f" {invoice.order_no}) is recorded for document #{invoice.document_id}, not"
            f" #{document_id}: check the callback / 发票已关联到其他单据，请人工核对"
        )


class RecordOutcome(StrEnum):
    created = "created"
    updated = "updated"
    unchanged = "unchanged"


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    invoice_id: int
    outcome: RecordOutcome


def record_invoice(
    session: Session,
    *,
    document_id: int,
    push_attempt: int | None = None,
    order_no: str | None = None,
    invoice_code: str | None = None,
    invoice_num: str | None = None,
    invoice_type: str | None = None,
    invoice_status: str | None = None,
    total_amount: Decimal | None = None,
    total_tax_amount: Decimal | None = None,
    include_tax_amount: Decimal | None = None,
    invoice_date: date | None = None,
    invoice_file_url: str | None = None,
    invoice_pdf_file_url: str | None = None,
    invoice_xml_file_url: str | None = None,
    invoice_image_url: str | None = None,
    issue_error_message: str | None = None,
    raw: Any = None,
    now: datetime | None = None,
) -> InvoiceRecord:
    """Insert or update one reported invoice (module docstring). Does not commit."""
    now = now or utcnow()
    reported: dict[str, Any] = {
        "push_attempt": push_attempt,
        "order_no": order_no or None,
        "invoice_code": invoice_code or None,
        "invoice_num": invoice_num or None,
        "invoice_type": invoice_type,
        "invoice_status": invoice_status,
        "total_amount": total_amount,
        "total_tax_amount": total_tax_amount,
        "include_tax_amount": include_tax_amount,
        "invoice_date": invoice_date,
        "invoice_file_url": invoice_file_url,
        "invoice_pdf_file_url": invoice_pdf_file_url,
        "invoice_xml_file_url": invoice_xml_file_url,
        "invoice_image_url": invoice_image_url,
        "issue_error_message": issue_error_message,
        "raw": raw,
    }
    keyed = bool(reported["order_no"] or reported["invoice_num"])
    # A keyed report is inserted first (ON CONFLICT DO NOTHING: one statement for a new
    # invoice, no SAVEPOINT); only a conflict means "find the row we have". A report without
    # keys has no unique index to conflict on, so it is looked for first.
    existing = None if keyed else _find(session, document_id, reported)
    if existing is None:
        created = _insert(session, document_id, reported, now)
        if created is not None:
            return InvoiceRecord(created, RecordOutcome.created)
        # Recorded already (maybe by a concurrent report that just committed): update it.
        existing = _find(session, document_id, reported)
        if existing is None:
            raise RuntimeError(
                f"invoice {reported['order_no'] or reported['invoice_num']} neither inserted"
                " nor found; retry"
            )
    if existing.document_id != document_id:
        raise InvoiceBelongsElsewhere(existing, document_id)
    changed = _fill(existing, reported)
    if not changed:
        return InvoiceRecord(existing.id, RecordOutcome.unchanged)
    existing.updated_at = now
    session.flush()
    return InvoiceRecord(existing.id, RecordOutcome.updated)


def _insert(
    session: Session, document_id: int, reported: Mapping[str, Any], now: datetime
) -> int | None:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING id`` (Core, values as parameters: the
    compiled statement is cached); None when a unique index (``order_no``, or
    ``invoice_code`` + ``invoice_num``) already has the invoice."""
    values = {k: (jsonable(v) if k == "raw" else v) for k, v in reported.items() if v is not None}
    values.update(document_id=document_id, created_at=now, updated_at=now)
    values.setdefault("invoice_code", "")
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(_invoices).on_conflict_do_nothing().returning(_invoices.c.id)
    created: int | None = session.execute(statement, values).scalar_one_or_none()
    return created


def invoices_of(session: Session, document_id: int) -> list[Invoice]:
    return list(
        session.scalars(
            select(Invoice).where(Invoice.document_id == document_id).order_by(Invoice.id)
        ).all()
    )


def known_invoice(
    invoices: Sequence[Invoice],
    *,
    order_no: str | None,
    invoice_code: str | None,
    invoice_num: str | None,
    **reported: Any,
) -> bool:
    """Would ``record_invoice`` with these values leave one of ``invoices`` as it is?

    True only for a keyed report (``order_no``, or ``invoice_num``) matched in ``invoices`` —
    on the keys ``record_invoice`` matches on — whose every known value (``raw``, the wire
    copy, aside) is already stored.
    """  # fmt: skip
    match: Invoice | None = None
    if order_no:
        match = next((i for i in invoices if i.order_no == order_no), None)
    if match is None and invoice_num:
        code = invoice_code or ""
        match = next(
            (i for i in invoices if i.invoice_code == code and i.invoice_num == invoice_num), None
        )
    if match is None:
        return False
    if (
        (order_no and match.order_no != order_no)
        or (invoice_num and match.invoice_num != invoice_num)
        or (invoice_code and match.invoice_code != invoice_code)
    ):
        return False
    return all(
        value is None or getattr(match, name) == value
        for name, value in reported.items()
        if name != "raw"
    )


def _find(session: Session, document_id: int, reported: Mapping[str, Any]) -> Invoice | None:
    base = select(Invoice).execution_options(populate_existing=True)
    if reported["order_no"]:
        found = session.scalars(base.where(Invoice.order_no == reported["order_no"])).first()
        if found is not None:
            return found
    if reported["invoice_num"]:
        return session.scalars(
            base.where(
                Invoice.invoice_code == (reported["invoice_code"] or ""),
                Invoice.invoice_num == reported["invoice_num"],
            )
        ).first()
    if reported["order_no"]:
        return None
    return session.scalars(
        base.where(
            Invoice.document_id == document_id,
            Invoice.invoice_num.is_(None),
            Invoice.order_no.is_(None),
            Invoice.push_attempt.is_(None)
            if reported["push_attempt"] is None
            else Invoice.push_attempt == reported["push_attempt"],
            Invoice.issue_error_message.is_(None)
            if reported["issue_error_message"] is None
            else Invoice.issue_error_message == reported["issue_error_message"],
        )
    ).first()


def _fill(invoice: Invoice, reported: Mapping[str, Any]) -> bool:
    """Copy the reported values that are known; True when something changed."""
    changed = False
    for name, value in reported.items():
        if value is None:
            continue
        if name == "raw":
            value = jsonable(value)  # compare as stored: decimals are strings there
        if getattr(invoice, name) != value:
            setattr(invoice, name, value)
            changed = True
    return changed
