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
from typing import TYPE_CHECKING, Any, Final, cast

from sqlalchemy import CompoundSelect, bindparam, exists, func, or_, select, union
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from store.columns import CENT, jsonable, utcnow
from store.models import Document, Invoice, InvoiceDocument
from store.states import InvoiceStanding

if TYPE_CHECKING:
    from sqlalchemy import Table

__all__ = [
    "Covering",
    "InvoiceBelongsElsewhere",
    "InvoiceRecord",
    "LineShare",
    "RecordOutcome",
    "StandingChange",
    "bills_covered",
    "coverings",
    "documents_covering",
    "invoices_of",
    "known_invoice",
    "record_invoice",
    "record_reversal",
    "record_void",
    "reversed_amounts",
    "share_of",
    "standing_of",
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
class StandingChange:
    """An invoice's standing after issuance moved forward (``InvoiceStanding``)."""

    invoice_id: int
    before: InvoiceStanding
    after: InvoiceStanding


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    invoice_id: int
    outcome: RecordOutcome
    # A row just created on PostgreSQL, as stored (``_as_stored``; not in the session), and
    # whether no invoice covered the document before it: then ``coverings`` would read back
    # exactly the rows this transaction created since (the caller may skip that read).
    stored: Invoice | None = None
    alone: bool = False
    standing_change: StandingChange | None = None  # the invoice's standing moved forward


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
    invoice_property: int | None = None,
    original_invoice_code: str | None = None,
    original_invoice_num: str | None = None,
    can_red_amount: Decimal | None = None,
    can_red_tax_amount: Decimal | None = None,
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
        "invoice_property": invoice_property,
        "original_invoice_code": original_invoice_code or None,
        "original_invoice_num": original_invoice_num or None,
        "can_red_amount": can_red_amount,
        "can_red_tax_amount": can_red_tax_amount,
        "raw": raw,
    }
    keyed = bool(reported["order_no"] or reported["invoice_num"])
    # A keyed report is inserted first (ON CONFLICT DO NOTHING: one statement for a new
    # invoice, no SAVEPOINT); only a conflict means "find the row we have". A report without
    # keys has no unique index to conflict on, so it is looked for first.
    existing = None if keyed else _find(session, document_id, reported)
    if existing is None:
        is_pg = session.get_bind().dialect.name == "postgresql"
        standing = standing_of(_Values(reported))
        if standing is not InvoiceStanding.normal:
            reported = {**reported, "standing": standing.value, "status_changed_at": now}
        created, alone = _insert(session, document_id, reported, now)
        if created is not None:
            stored = _as_stored(created, document_id, reported, now) if is_pg else None
            change = (
                None
                if standing is InvoiceStanding.normal
                else StandingChange(created, InvoiceStanding.normal, standing)
            )
            return InvoiceRecord(created, RecordOutcome.created, stored, alone, change)
        reported = {k: v for k, v in reported.items() if k not in ("standing", "status_changed_at")}
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
    change = _advance_standing(existing, now)
    if changed or change:
        existing.updated_at = now
        session.flush()
    if linked:
        return InvoiceRecord(existing.id, RecordOutcome.linked, standing_change=change)
    outcome = RecordOutcome.updated if changed or change else RecordOutcome.unchanged
    return InvoiceRecord(existing.id, outcome, standing_change=change)


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
    statement = _LINKS[
        "postgresql" if session.get_bind().dialect.name == "postgresql" else "sqlite"
    ]
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
        statement = _pg_insert_statement(tuple(sorted(values)))
        row = session.execute(statement, {f"v_{k}": v for k, v in values.items()}).first()
        return (None, False) if row is None else (int(row[0]), bool(row[1]))
    created: int | None = session.execute(_SQLITE_INSERT, values).scalar_one_or_none()
    if created is not None:
        _link(session, created, document_id, now)
    return created, False


# Prebuilt statements (as in store.lifecycle): building and cache-keying the CTE per call cost
# more CPU than PostgreSQL spends running it. Same SQL, values bound as parameters.
_SQLITE_INSERT: Final = sqlite_insert(_invoices).on_conflict_do_nothing().returning(_invoices.c.id)
_LINKS: Final = {
    dialect: insert(_links).on_conflict_do_nothing().returning(_links.c.invoice_id)
    for dialect, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}
_PG_INSERTS: dict[tuple[str, ...], Any] = {}
_MAX_CACHED_SHAPES: Final = 64  # column sets: which reported values are known


def _pg_insert_statement(columns: tuple[str, ...]) -> Any:
    """PostgreSQL: one round trip for the invoice and its first link (nothing when the invoice
    conflicts), and whether the document had no invoice before (every part of the statement
    reads the snapshot taken before it: the new rows are not counted). Built once per set of
    ``columns``; parameters ``v_<column>``."""
    statement = _PG_INSERTS.get(columns)
    if statement is not None:
        return statement
    binds = {name: bindparam(f"v_{name}", type_=_invoices.c[name].type) for name in columns}
    new = (
        pg_insert(_invoices)
        .values(binds)
        .on_conflict_do_nothing()
        .returning(_invoices.c.id)
        .cte("new_invoice")
    )
    document = binds["document_id"]
    alone = ~exists().where(_invoices.c.document_id == document) & ~exists().where(
        _links.c.document_id == document
    )
    statement = (
        pg_insert(_links)
        .from_select(
            ["invoice_id", "document_id", "created_at"],
            select(new.c.id, document, binds["created_at"]),
        )
        .returning(_links.c.invoice_id, alone)
        .add_cte(new)
    )
    if len(_PG_INSERTS) >= _MAX_CACHED_SHAPES:
        _PG_INSERTS.clear()
    _PG_INSERTS[columns] = statement
    return statement


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


def _covering_pairs(invoice_ids: Sequence[int]) -> CompoundSelect[int, int]:
    """(invoice_id, document_id) of every document each invoice covers: its first one and the
    linked ones (``invoice_documents``)."""
    ids = list(invoice_ids)
    first = select(Invoice.id.label("invoice_id"), Invoice.document_id).where(Invoice.id.in_(ids))
    links = select(InvoiceDocument.invoice_id, InvoiceDocument.document_id).where(
        InvoiceDocument.invoice_id.in_(ids)
    )
    return union(first, links)


def bills_covered(session: Session, invoice_ids: Sequence[int]) -> dict[int, list[str]]:
    """invoice id → the bill numbers of every document it covers (sorted)."""
    if not invoice_ids:
        return {}
    pairs = _covering_pairs(invoice_ids).subquery()
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
    """Copy the reported values that are known; True when something changed.

    After-issuance facts never go backwards: a voided (6) or reversed (3) ``invoiceStatus``
    stays, and what is left to reverse (``canRedAmount``/``canRedTaxAmount``) only goes down
    (a late INVOICE.OPEN or an old query answer carries the values from before)."""
    changed = False
    for name, value in reported.items():
        if value is None:
            continue
        if name == "invoice_status" and invoice.invoice_status in _FINAL_STATUSES:
            continue
        if name in ("can_red_amount", "can_red_tax_amount"):
            current = getattr(invoice, name)
            if current is not None and Decimal(value) >= current:
                continue
        if name == "raw":
            value = jsonable(value)  # compare as stored: decimals are strings there
        if getattr(invoice, name) != value:
            setattr(invoice, name, value)
            changed = True
    return changed


# --- after issuance -------------------------------------------------------------------------

# invoiceStatus values that end an invoice's life (§10.2): 3 红冲 (fully), 6 作废.
INVOICE_STATUS_REVERSED: Final = "3"
INVOICE_STATUS_VOIDED: Final = "6"
_FINAL_STATUSES: Final = frozenset({INVOICE_STATUS_REVERSED, INVOICE_STATUS_VOIDED})
_STANDING_RANK: Final = {
    InvoiceStanding.normal: 0,
    InvoiceStanding.partially_reversed: 1,
    InvoiceStanding.reversed: 2,
    InvoiceStanding.voided: 2,
}


class _Values:
    """Attribute access over a ``reported`` mapping (``standing_of`` reads rows and reports)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        return self._values.get(name)


def reversed_amounts(reversals: Any) -> tuple[Decimal, Decimal]:
    """The amount and tax (absolute, excluding tax) of the red invoices in ``reversals``."""
    amount = tax = Decimal("0.00")
    for entry in reversals or []:
        if isinstance(entry, Mapping):
            amount += abs(_money(entry.get("totalAmount")))
            tax += abs(_money(entry.get("totalTaxAmount")))
    return amount, tax


def standing_of(invoice: Invoice | _Values) -> InvoiceStanding:
    """An issued blue invoice's standing from what the cloud said (docs/CLOUD-CONTRACT.md §15).

    | fact                                                       | standing             |
    |------------------------------------------------------------|----------------------|
    | ``invoiceStatus`` 6                                        | voided               |
    | ``invoiceStatus`` 3, or red invoices known for its amount  | reversed             |
    | 0 < ``canRedAmount`` < amount, or red invoices known for part | partially_reversed |
    | otherwise (red invoices, failures, not issued)             | normal               |

    Deliberately NOT read (each means different things under different readings,
    docs/DIALECTS.md): ``invoiceStatus`` 2 (部分红冲 under ``partial_red=status_2``, 待开 in
    5.1.03), ``originalInvoiceStatus`` 3 (said for a partial 红冲 too under ``keeps_0``) and
    ``canRedAmount`` 0 (also a voided invoice's, and an unset field's).
    """
    if invoice.invoice_property == 1 or not invoice.invoice_num:
        return InvoiceStanding.normal
    if invoice.invoice_status == INVOICE_STATUS_VOIDED:
        return InvoiceStanding.voided
    if invoice.invoice_status == INVOICE_STATUS_REVERSED:
        return InvoiceStanding.reversed
    total = abs(invoice.total_amount) if invoice.total_amount is not None else None
    red, _ = reversed_amounts(invoice.reversals)
    if total and red >= total - CENT:
        return InvoiceStanding.reversed
    left = invoice.can_red_amount
    if red > 0 or (total and left is not None and Decimal("0") < left < total):
        return InvoiceStanding.partially_reversed
    return InvoiceStanding.normal


def _advance_standing(invoice: Invoice, now: datetime) -> StandingChange | None:
    """Move ``invoice.standing`` forward to what its values say (never back). No flush."""
    before = InvoiceStanding(invoice.standing or InvoiceStanding.normal.value)
    after = standing_of(invoice)
    if _STANDING_RANK[after] <= _STANDING_RANK[before]:
        return None
    invoice.standing = after.value
    invoice.status_changed_at = now
    return StandingChange(invoice.id, before, after)


def _blue_invoice(
    session: Session, tenant: str, seller_tax_id: str, code: str | None, number: str
) -> Invoice | None:
    """The stored blue invoice of (tenant, seller) with this code/number (数电: no code)."""
    statement = (
        select(Invoice)
        .join(Document, Document.id == Invoice.document_id)
        .where(
            Document.tenant == tenant,
            Document.seller_tax_id == seller_tax_id,
            Invoice.invoice_num == number,
            or_(Invoice.invoice_property.is_(None), Invoice.invoice_property != 1),
        )
        .execution_options(populate_existing=True)
    )
    if code:
        statement = statement.where(Invoice.invoice_code == code)
    return session.scalars(statement.order_by(Invoice.id)).first()


def record_reversal(
    session: Session,
    *,
    tenant: str,
    seller_tax_id: str,
    original_code: str | None,
    original_num: str,
    red: Mapping[str, Any],
    now: datetime,
) -> tuple[int | None, StandingChange | None]:
    """A red invoice ``red`` (its §9.1 fields) reverses the stored blue invoice named by
    ``original_code``/``original_num``: it is added to the blue one's ``reversals`` once
    (keyed by ``orderNo``, else code + number) and what is left to reverse goes down by it.
    Returns the blue invoice's id (None: not stored here) and its standing change. No commit.
    """
    blue = _blue_invoice(session, tenant, seller_tax_id, original_code, original_num)
    if blue is None:
        return None, None
    key = _red_key(red)
    known = [dict(entry) for entry in (blue.reversals or []) if isinstance(entry, Mapping)]
    if key is None or any(_red_key(entry) == key for entry in known):
        return blue.id, _advance_standing(blue, now)
    entry = {
        name: jsonable(red.get(name))
        for name in (
            "billNo", "orderNo", "invoiceCode", "invoiceNum", "invoiceDate",
            "totalAmount", "totalTaxAmount", "includeTaxAmount",
        )
        if red.get(name) not in (None, "")
    }  # fmt: skip
    blue.reversals = [*known, entry]
    amount, tax = reversed_amounts(blue.reversals)
    if blue.total_amount is not None:
        left = max(Decimal("0.00"), abs(blue.total_amount) - amount)
        if blue.can_red_amount is None or left < blue.can_red_amount:
            blue.can_red_amount = left
    if blue.total_tax_amount is not None:
        left_tax = max(Decimal("0.00"), abs(blue.total_tax_amount) - tax)
        if blue.can_red_tax_amount is None or left_tax < blue.can_red_tax_amount:
            blue.can_red_tax_amount = left_tax
    change = _advance_standing(blue, now)
    blue.updated_at = now
    session.flush()
    return blue.id, change


def record_void(
    session: Session,
    *,
    tenant: str,
    seller_tax_id: str,
    original_code: str | None,
    original_num: str,
    now: datetime,
) -> tuple[int | None, StandingChange | None]:
    """作废 of the stored blue invoice named by ``original_code``/``original_num`` (an
    INVOICE.CANCEL item that carries only ``original*``). Same return as ``record_reversal``."""
    blue = _blue_invoice(session, tenant, seller_tax_id, original_code, original_num)
    if blue is None:
        return None, None
    if blue.invoice_status not in _FINAL_STATUSES:
        blue.invoice_status = INVOICE_STATUS_VOIDED
    change = _advance_standing(blue, now)
    if change is not None:
        blue.updated_at = now
        session.flush()
    return blue.id, change


def _red_key(red: Mapping[str, Any]) -> str | None:
    order = str(red.get("orderNo") or "").strip()
    if order:
        return f"order:{order}"
    number = str(red.get("invoiceNum") or "").strip()
    return f"invoice:{red.get('invoiceCode') or ''}:{number}" if number else None


def documents_covering(session: Session, invoice_ids: Sequence[int]) -> dict[int, list[int]]:
    """invoice id → the ids of every document it covers (its first one and linked ones)."""
    if not invoice_ids:
        return {}
    covering: dict[int, list[int]] = {}
    for invoice_id, document_id in session.execute(_covering_pairs(invoice_ids)).all():
        covering.setdefault(int(invoice_id), []).append(int(document_id))
    return {key: sorted(set(value)) for key, value in covering.items()}
