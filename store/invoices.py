"""Recording the invoices the cloud reports (callbacks and BILL.INVOICE.QUERY), idempotently.

The same invoice arrives many times (per-invoice and per-bill callbacks, retries, polls).
`record_invoice` finds the row it already has, in this order, and fills in what is new:

| the report carries                 | matched on                                             |
|------------------------------------|--------------------------------------------------------|
| `orderNo`                          | `order_no` (unique)                                    |
| `invoiceNum` (and maybe a code)    | (`invoice_code`, `invoice_num`) (unique; code `''` 数电) |
| neither (a failed issuance)        | same document, push attempt and `issueErrorMessage`    |

Known values are never erased by a later report that lacks them (None means "not said").

Merged invoices (BILL.PUSH ``autoMerge=1``: one invoice for several bills of one buyer and
seller, docs/CLOUD-CONTRACT.md §6.6): an invoice already recorded for ANOTHER
document of the same tenant and seller (another bill) is LINKED to this one
(``invoice_documents``) instead of refused; its row keeps the first document's ``raw`` and
``push_attempt`` (the wire copy differs per bill only in the bill's own header fields), the
other values are filled in as usual. ``InvoiceBelongsElsewhere`` remains for what cannot be a
merge — another tenant or seller, or another revision of the same bill: the cloud or our
matching is wrong and an operator must look. Concurrent reports of the same
invoice are safe: the loser of the unique-index race (its INSERT does nothing) re-reads and
updates. Nothing here commits; nothing here moves a document's state (the reconciler
decides with `store.lifecycle.transition`).

Which invoices cover a document: ``invoices_of`` (through ``invoice_documents``);
``coverings`` adds how many documents each covers; ``share_of`` is the part of an invoice's
lines that belongs to one document (the coverage rule, docs/CLOUD-CONTRACT.md §6.6).

Statements: a new keyed invoice is one `INSERT … ON CONFLICT DO NOTHING RETURNING id` (on
PostgreSQL its link row is inserted by the same statement, a data-modifying CTE; SQLite runs a
second INSERT); a known one is that INSERT (which does nothing), a SELECT and, if something is
new, an UPDATE; reported for another document, also a SELECT of both documents and the link's
``INSERT … ON CONFLICT DO NOTHING``. A report without keys is a SELECT, then the INSERT if
nothing matched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import exists, func, literal, or_, select, union
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from store.columns import CENT, UTCDateTime, jsonable, utcnow
from store.models import Document, Invoice, InvoiceDocument

if TYPE_CHECKING:
    from sqlalchemy import Table

__all__ = [
    "Covering",
    "InvoiceBelongsElsewhere",
    "InvoiceRecord",
    "LineShare",
    "RecordOutcome",
    "bills_covered",
    "coverings",
    "invoices_of",
    "known_invoice",
    "record_invoice",
    "share_of",
]


_invoices = cast("Table", Invoice.__table__)
_links = cast("Table", InvoiceDocument.__table__)


class InvoiceBelongsElsewhere(Exception):
    """The invoice is recorded for a document it cannot share with this one (not a merge)."""

    def __init__(self, invoice: Invoice, document_id: int, why: str = "") -> None:
        self.invoice_id = invoice.id
        self.document_id = document_id
        super().__init__(
            f"invoice {invoice.invoice_code}{invoice.invoice_num or ''} (orderNo"
            f" {invoice.order_no}) is recorded for document #{invoice.document_id}, not"
            f" #{document_id}{f' ({why})' if why else ''}: check the callback"
            " / 发票已关联到其他单据，请人工核对"
        )


class RecordOutcome(StrEnum):
    created = "created"
    updated = "updated"
    unchanged = "unchanged"
    linked = "linked"  # a known invoice now also covers this document (merged invoice)


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    invoice_id: int
    outcome: RecordOutcome
    # A row just created on PostgreSQL, as stored (``_as_stored``; not in the session), and
    # whether no invoice covered the document before it: then ``coverings`` would read back
    # exactly the rows this transaction created since (the caller may skip that read).
    stored: Invoice | None = None
    alone: bool = False


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
        is_pg = session.get_bind().dialect.name == "postgresql"
        created, alone = _insert(session, document_id, reported, now)
        if created is not None:
            stored = _as_stored(created, document_id, reported, now) if is_pg else None
            return InvoiceRecord(created, RecordOutcome.created, stored, alone)
        # Recorded already (maybe by a concurrent report that just committed): update it.
        existing = _find(session, document_id, reported)
        if existing is None:
            raise RuntimeError(
                f"invoice {reported['order_no'] or reported['invoice_num']} neither inserted"
                " nor found; retry"
            )
    linked = False
    if existing.document_id != document_id:
        _check_mergeable(session, existing, document_id)
        linked = _link(session, existing.id, document_id, now)
        # The first document's wire copy and attempt stay (module docstring).
        reported = {k: v for k, v in reported.items() if k not in ("raw", "push_attempt")}
    changed = _fill(existing, reported)
    if changed:
        existing.updated_at = now
        session.flush()
    if linked:
        return InvoiceRecord(existing.id, RecordOutcome.linked)
    return InvoiceRecord(existing.id, RecordOutcome.updated if changed else RecordOutcome.unchanged)


def _check_mergeable(session: Session, invoice: Invoice, document_id: int) -> None:
    """A merged invoice covers bills of one tenant and seller; never two revisions of a bill."""
    rows = session.execute(
        select(Document.id, Document.tenant, Document.seller_tax_id, Document.bill_no).where(
            Document.id.in_((invoice.document_id, document_id))
        )
    ).all()
    found = {row.id: row for row in rows}
    first, this = found.get(invoice.document_id), found.get(document_id)
    if first is None or this is None:
        raise InvoiceBelongsElsewhere(invoice, document_id, "document not found")
    if (first.tenant, first.seller_tax_id) != (this.tenant, this.seller_tax_id):
        raise InvoiceBelongsElsewhere(invoice, document_id, "another tenant or seller")
    if first.bill_no == this.bill_no:
        raise InvoiceBelongsElsewhere(invoice, document_id, "another revision of the bill")


def _link(session: Session, invoice_id: int, document_id: int, now: datetime) -> bool:
    """``INSERT … ON CONFLICT DO NOTHING`` into ``invoice_documents``; True when new."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(_links).on_conflict_do_nothing().returning(_links.c.invoice_id)
    values = {"invoice_id": invoice_id, "document_id": document_id, "created_at": now}
    return session.execute(statement, values).scalar_one_or_none() is not None


def _insert(
    session: Session, document_id: int, reported: Mapping[str, Any], now: datetime
) -> tuple[int | None, bool]:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING id`` (Core, values as parameters: the
    compiled statement is cached); None when a unique index (``order_no``, or
    ``invoice_code`` + ``invoice_num``) already has the invoice. The flag: on PostgreSQL,
    no invoice covered the document before this statement (always False on SQLite).

    ``raw`` is serialised once, by the column type (``JSONValue``) when the row is bound.
    """
    values = {k: v for k, v in reported.items() if v is not None}
    values.update(document_id=document_id, created_at=now, updated_at=now)
    values.setdefault("invoice_code", "")
    if session.get_bind().dialect.name == "postgresql":
        # One round trip: the invoice and its first link (nothing when the invoice conflicts),
        # and whether the document had no invoice before (every part of the statement reads
        # the snapshot taken before it: the new rows are not counted).
        new = (
            pg_insert(_invoices)
            .values(values)
            .on_conflict_do_nothing()
            .returning(_invoices.c.id)
            .cte("new_invoice")
        )
        document = literal(document_id, _links.c.document_id.type)
        alone = ~exists().where(_invoices.c.document_id == document) & ~exists().where(
            _links.c.document_id == document
        )
        statement = (
            pg_insert(_links)
            .from_select(
                ["invoice_id", "document_id", "created_at"],
                select(new.c.id, document, literal(now, UTCDateTime())),
            )
            .returning(_links.c.invoice_id, alone)
            .add_cte(new)
        )
        row = session.execute(statement).first()
        return (None, False) if row is None else (int(row[0]), bool(row[1]))
    plain = sqlite_insert(_invoices).on_conflict_do_nothing().returning(_invoices.c.id)
    created: int | None = session.execute(plain, values).scalar_one_or_none()
    if created is not None:
        _link(session, created, document_id, now)
    return created, False


def _as_stored(
    invoice_id: int, document_id: int, reported: Mapping[str, Any], now: datetime
) -> Invoice:
    """The row ``_insert`` just wrote, as a detached ``Invoice`` for the verdict: columns as
    a read would load them (amounts with two places, ``invoice_code`` '' when none), except
    ``raw``, kept as reported (not serialised a second time: amounts there are Decimals,
    not strings; ``share_of`` and ``verdict_for`` read both alike)."""
    values = {k: v for k, v in reported.items() if v is not None}
    for name in ("total_amount", "total_tax_amount", "include_tax_amount"):
        if name in values:
            values[name] = Decimal(values[name]).quantize(CENT)
    values.setdefault("invoice_code", "")
    return Invoice(id=invoice_id, document_id=document_id, created_at=now, updated_at=now, **values)


def invoices_of(session: Session, document_id: int) -> list[Invoice]:
    """Every invoice covering the document (merged ones included), oldest first."""
    return [covering.invoice for covering in coverings(session, document_id)]


@dataclass(frozen=True, slots=True)
class Covering:
    """An invoice covering a document, and how many documents it covers in all."""

    invoice: Invoice
    documents: int

    @property
    def merged(self) -> bool:
        return self.documents > 1


def coverings(session: Session, document_id: int) -> list[Covering]:
    """``invoices_of`` with each invoice's number of documents (one statement).

    An invoice covers its first document (``invoices.document_id``) and every document
    linked in ``invoice_documents``; the first is read from the column too, so a row written
    without its link (SQL by hand, old fixtures) still counts.
    """
    others = aliased(InvoiceDocument)
    count = (
        select(func.count())
        .where(others.invoice_id == Invoice.id, others.document_id != Invoice.document_id)
        .correlate(Invoice)
        .scalar_subquery()
    )
    linked = select(InvoiceDocument.invoice_id).where(InvoiceDocument.document_id == document_id)
    rows = session.execute(
        select(Invoice, count)
        .where(or_(Invoice.document_id == document_id, Invoice.id.in_(linked)))
        .order_by(Invoice.id)
    ).all()
    return [Covering(invoice, 1 + int(others_count)) for invoice, others_count in rows]


def bills_covered(session: Session, invoice_ids: Sequence[int]) -> dict[int, list[str]]:
    """invoice id → the bill numbers of every document it covers (sorted)."""
    if not invoice_ids:
        return {}
    ids = list(invoice_ids)
    first = select(Invoice.id.label("invoice_id"), Invoice.document_id).where(Invoice.id.in_(ids))
    links = select(InvoiceDocument.invoice_id, InvoiceDocument.document_id).where(
        InvoiceDocument.invoice_id.in_(ids)
    )
    pairs = union(first, links).subquery()
    rows = session.execute(
        select(pairs.c.invoice_id, Document.bill_no).join(
            Document, Document.id == pairs.c.document_id
        )
    ).all()
    bills: dict[int, list[str]] = {}
    for invoice_id, bill_no in rows:
        bills.setdefault(invoice_id, []).append(bill_no)
    return {invoice_id: sorted(set(nos)) for invoice_id, nos in bills.items()}


@dataclass(frozen=True, slots=True)
class LineShare:
    """The part of an invoice that belongs to one document, read from the invoice's lines.

    ``merged``: the invoice also carries other bills' lines (or covers other documents).
    ``incl`` / ``excl``: the 价税合计 / 金额 of the lines attributed to the document; None
    when the invoice is the document's own (count it whole) or its lines cannot be
    attributed (a merged invoice then counts fully for each bill, up to the bill's amount).
    """

    merged: bool
    incl: Decimal | None = None
    excl: Decimal | None = None


def _detail_ids(payload: Mapping[str, Any] | None) -> set[str]:
    lines = (payload or {}).get("billDetail") or []
    ids = {str(line.get("detailId") or "").strip() for line in lines if isinstance(line, dict)}
    ids.discard("")
    return ids


def _line_key(line: Mapping[str, Any]) -> str | None:
    """The bill line an invoice line came from: ``detailId``, else ``billSourceId`` (§8)."""
    for name in ("detailId", "billSourceId"):
        value = str(line.get(name) or "").strip()
        if value:
            return value
    return None


def _money(value: Any) -> Decimal:
    if value is None or value == "":
        return Decimal("0")
    return Decimal(str(value))


def share_of(payload: Mapping[str, Any] | None, raw: Any, *, documents: int = 1) -> LineShare:
    """The coverage rule for one invoice and one document (``payload``: its BILL.PUSH bill).

    | the invoice's lines (``raw`` ``goods``/``invoiceDetail``)            | share            |
    |---------------------------------------------------------------------|------------------|
    | all from this bill's ``detailId``s, each once, one document linked  | own: whole       |
    | some from other bills, every line keyed, this bill's ids each once  | attributed lines |
    | merged, but a line without key or this bill's id twice (ambiguous)  | unattributable   |
    | no lines (or the bill has no ids), several documents linked         | unattributable   |
    """
    lines = [line for line in _raw_lines(raw) if isinstance(line, Mapping)]
    ids = _detail_ids(payload)
    if not lines or not ids:
        return LineShare(merged=documents > 1)
    keys = [_line_key(line) for line in lines]
    mine = [key for key in keys if key is not None and key in ids]
    foreign = any(key is not None and key not in ids for key in keys)
    ambiguous = len(mine) != len(set(mine)) or any(key is None for key in keys)
    if not (foreign or documents > 1 or len(mine) != len(set(mine))):
        return LineShare(merged=False)
    if ambiguous:
        return LineShare(merged=True)
    incl = excl = Decimal("0.00")
    for line, key in zip(lines, keys, strict=True):
        if key not in ids:
            continue
        amount = _money(line.get("amount"))
        excl += amount
        if line.get("includeTaxAmount") not in (None, ""):
            incl += _money(line.get("includeTaxAmount"))
        else:
            incl += amount + _money(line.get("taxAmount"))
    return LineShare(merged=True, incl=incl, excl=excl)


def _raw_lines(raw: Any) -> list[Any]:
    if not isinstance(raw, Mapping):
        return []
    lines = raw.get("invoiceDetail") or raw.get("goods") or []
    return list(lines) if isinstance(lines, list) else []


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
    document_id = reported.pop("document_id", None)
    if document_id is not None and match.document_id != document_id:
        # Merged invoice reported for another of its documents: the first one's attempt stays.
        reported.pop("push_attempt", None)
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
