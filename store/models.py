"""The database tables (SQLAlchemy 2.x typed declarative models).

| table             | one row per                                 | status/state written by  |
|-------------------|---------------------------------------------|--------------------------|
| `documents`       | revision of a 开票申请单 (tenant, seller, billNo) | `store.lifecycle` (1)  |
| `document_events` | transition, stale answer or supersession    | `store.lifecycle` (1)    |
| `invoices`        | invoice issued (or issuance failed)         | reconcile / poll         |
| `invoice_documents` | (invoice, document it covers)             | `store.invoices`         |
| `cloud_calls`     | call to Kingdee (the ledger, masked)        | the Kingdee client       |
| `callback_inbox`  | raw callback received (deduplicated)        | the callback receiver    |
| `erp_outbox`      | notification owed to the ERP webhook        | `fapiao.notify_erp`      |
| `tenant_state`    | tenant: paused or not                       | `store.tenants`          |
| `tenant_quota`    | (tenant, seller): credit quota known, hold  | `store.quota`            |
| `operator_actions` | operator action (bulk or single), the audit | `producers.operations`   |
| `reconciliation_reports` | reconciliation run (window, tenant) | `store.reconciliation` |

(1) with its two dedicated rows: `store.claims` (draft -> pushing) and `store.acceptance`
(new documents and revisions); every event row is shaped by `store.lifecycle.event_row`.

Decisions other modules rely on:
- Every `status` change goes through `store.lifecycle` (never assign it directly).
- A new revision is a new `documents` row; exactly one row per (tenant, seller_tax_id,
  bill_no) has `is_current = true` (a partial unique index enforces it). Operator views and
  lookups by bill number filter on `is_current`.
- `invoices.document_id` is NOT NULL and names the document the invoice was FIRST recorded
  for: invoices nobody can match stay as `orphan` rows in `callback_inbox` until an
  operator or a later query links them. Which documents an invoice covers is
  `invoice_documents` (one row per pair, the first document's included): a merged invoice
  (BILL.PUSH `autoMerge=1`, docs/CLOUD-CONTRACT.md §6.6) has several.
- `invoices.invoice_code` is NOT NULL and `''` for 数电 invoices, so the unique
  (invoice_code, invoice_num) constraint also holds for them; `order_no` and `invoice_num`
  are NULL when absent (`''` is normalised to NULL) and unique when present.
- `cloud_calls.message` is passed through `store.ledger.mask_secrets` on assignment.
- Timestamps are aware UTC, money is `Decimal` (see `store.columns`); the document payload
  keeps amounts as JSON strings and refuses floats.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

from store.columns import JSONValue, Money, UTCDateTime, utcnow
from store.ledger import mask_secrets
from store.states import (
    POLLED_STATUSES,
    DocumentStatus,
    EventOutcome,
    InboxState,
    InvoiceStanding,
    OutboxState,
)

__all__ = [
    "Base",
    "CallbackInbox",
    "CloudCall",
    "Document",
    "DocumentEvent",
    "ErpOutbox",
    "Invoice",
    "InvoiceDocument",
    "OperatorAudit",
    "ReconciliationReport",
    "TenantQuota",
    "TenantState",
    "metadata",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _partial(predicate: str) -> dict[str, Any]:
    """Same WHERE clause for a partial index on both databases."""
    return {"postgresql_where": text(predicate), "sqlite_where": text(predicate)}


STATUS_VALUES = tuple(s.value for s in DocumentStatus)
POLLED_PREDICATE = _in("status", tuple(s.value for s in POLLED_STATUSES))
ATTEMPT_PREDICATE = _in("status", (DocumentStatus.draft.value, DocumentStatus.withdrawing.value))


class Base(DeclarativeBase):
    metadata = metadata


class Document(Base):
    """One revision of an invoice application form (开票申请单)."""

    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint(
            "tenant", "seller_tax_id", "bill_no", "revision", name="uq_documents_identity"
        ),
        Index(
            "uq_documents_current",
            "tenant",
            "seller_tax_id",
            "bill_no",
            unique=True,
            **_partial("is_current"),
        ),
        Index("ix_documents_bill_no", "bill_no"),
        Index("ix_documents_original_document_id", "original_document_id"),
        Index("ix_documents_status_changed", "status", "status_changed_at"),
        Index("ix_documents_poll_due", "status", "next_poll_at", **_partial(POLLED_PREDICATE)),
        Index(
            "ix_documents_attempt_due", "status", "next_attempt_at", **_partial(ATTEMPT_PREDICATE)
        ),
        Index("ix_documents_lease", "lease_expires_at", **_partial("status = 'pushing'")),
        CheckConstraint(_in("status", STATUS_VALUES), name="status"),
        CheckConstraint("revision >= 1", name="revision_positive"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    seller_tax_id: Mapped[str] = mapped_column(String(32))
    bill_no: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    is_current: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    content_hash: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(24), default=DocumentStatus.draft.value)
    # Optimistic lock: bumped by every write that a decision may depend on.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    push_attempt: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    poll_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    in_doubt_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error_code: Mapped[str | None] = mapped_column(String(64))
    last_error_message: Mapped[str | None] = mapped_column(Text)
    invoice_type: Mapped[str | None] = mapped_column(String(8))
    total_amount: Mapped[Decimal] = mapped_column(Money)
    total_incl_tax: Mapped[Decimal | None] = mapped_column(Money)
    total_tax: Mapped[Decimal | None] = mapped_column(Money)
    issued_amount: Mapped[Decimal] = mapped_column(
        Money, default=Decimal("0.00"), server_default=text("0")
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSONValue(allow_float=False))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A red-letter (红冲) document: the document whose invoice it reverses.
    original_document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"))

    def __repr__(self) -> str:
        return (
            f"<Document #{self.id} {self.tenant}/{self.seller_tax_id}/{self.bill_no}"
            f" r{self.revision} {self.status} v{self.version}>"
        )


class DocumentEvent(Base):
    """Append-only audit of every transition (and of stale answers and supersessions)."""

    __tablename__ = "document_events"
    __table_args__ = (
        Index("ix_document_events_document_id", "document_id", "id"),
        CheckConstraint(_in("outcome", tuple(o.value for o in EventOutcome)), name="outcome"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str] = mapped_column(String(24))
    event: Mapped[str] = mapped_column(String(24))
    outcome: Mapped[str] = mapped_column(String(16), default=EventOutcome.applied.value)
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Invoice(Base):
    """An invoice the cloud issued for a document (or an issuance that failed)."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("order_no", name="uq_invoices_order_no"),
        UniqueConstraint("invoice_code", "invoice_num", name="uq_invoices_code_num"),
        Index("ix_invoices_document_id", "document_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    push_attempt: Mapped[int | None] = mapped_column(Integer)
    order_no: Mapped[str | None] = mapped_column(String(64))  # orderNo 发票流水号
    invoice_code: Mapped[str] = mapped_column(String(20), default="", server_default=text("''"))
    invoice_num: Mapped[str | None] = mapped_column(String(32))
    invoice_type: Mapped[str | None] = mapped_column(String(8))
    invoice_status: Mapped[str | None] = mapped_column(String(4))
    total_amount: Mapped[Decimal | None] = mapped_column(Money)
    total_tax_amount: Mapped[Decimal | None] = mapped_column(Money)
    include_tax_amount: Mapped[Decimal | None] = mapped_column(Money)
    invoice_date: Mapped[date | None] = mapped_column(Date)
    invoice_file_url: Mapped[str | None] = mapped_column(Text)  # invoiceFileUrl
    invoice_pdf_file_url: Mapped[str | None] = mapped_column(Text)  # invoicePdfFileUrl
    invoice_xml_file_url: Mapped[str | None] = mapped_column(Text)  # invoiceXmlFileUrl
    invoice_image_url: Mapped[str | None] = mapped_column(Text)  # invoiceImageUrl
    issue_error_message: Mapped[str | None] = mapped_column(Text)  # issueErrorMessage
    raw: Mapped[Any | None] = mapped_column(JSONValue())
    # After issuance (docs/CLOUD-CONTRACT.md §15). A red invoice (invoiceProperty 1) names the
    # blue one it reverses; a blue one keeps what is left to reverse (only ever lower) and its
    # standing (InvoiceStanding, only ever forward), with the red invoices known against it.
    invoice_property: Mapped[int | None] = mapped_column(Integer)  # invoiceProperty 0 蓝 1 红
    original_invoice_code: Mapped[str | None] = mapped_column(String(20))
    original_invoice_num: Mapped[str | None] = mapped_column(String(32))
    can_red_amount: Mapped[Decimal | None] = mapped_column(Money)  # canRedAmount
    can_red_tax_amount: Mapped[Decimal | None] = mapped_column(Money)  # canRedTaxAmount
    standing: Mapped[str] = mapped_column(
        String(24),
        default=InvoiceStanding.normal.value,
        server_default=text(f"'{InvoiceStanding.normal.value}'"),
    )
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # standing's
    reversals: Mapped[Any | None] = mapped_column(JSONValue())  # red invoices against it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @validates("order_no", "invoice_num")
    def _empty_is_absent(self, key: str, value: str | None) -> str | None:
        return value or None

    @validates("invoice_code")
    def _code_never_null(self, key: str, value: str | None) -> str:
        return value or ""


class InvoiceDocument(Base):
    """An invoice covers a document (several rows for a merged invoice)."""

    __tablename__ = "invoice_documents"
    __table_args__ = (Index("ix_invoice_documents_document_id", "document_id"),)

    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CloudCall(Base):
    """The ledger: one row per call to Kingdee, secrets masked."""

    __tablename__ = "cloud_calls"
    __table_args__ = (
        Index("ix_cloud_calls_document_id", "document_id"),
        Index("ix_cloud_calls_tenant_created", "tenant", "created_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"))
    interface: Mapped[str] = mapped_column(String(40))  # BILL.PUSH, getAppToken, login, ...
    request_id: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int | None] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(24))
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @validates("message", "error_code")
    def _masked(self, key: str, value: str | None) -> str | None:
        return None if value is None else mask_secrets(value)


class CallbackInbox(Base):
    """A callback body as received, stored before it is acknowledged."""

    __tablename__ = "callback_inbox"
    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_callback_inbox_dedupe_key"),
        Index(
            "ix_callback_inbox_received",
            "received_at",
            **_partial(f"state = '{InboxState.received.value}'"),
        ),
        Index("ix_callback_inbox_document_id", "document_id"),
        CheckConstraint(_in("state", tuple(s.value for s in InboxState)), name="state"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    dedupe_key: Mapped[str] = mapped_column(String(200))
    raw_body: Mapped[bytes] = mapped_column(LargeBinary)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    style: Mapped[str | None] = mapped_column(String(24))  # per_invoice / per_bill / return
    state: Mapped[str] = mapped_column(
        String(16), default=InboxState.received.value, server_default=text("'received'")
    )
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Lease / not-before (worker.services.reconcile): a task's batch claim, or a deferred
    # row's retry time. Nobody gathers or re-offers the row before it; NULL: never claimed.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ErpOutbox(Base):
    """A notification owed to the ERP webhook (delivered with retries, then parked)."""

    __tablename__ = "erp_outbox"
    __table_args__ = (
        Index(
            "ix_erp_outbox_due",
            "next_attempt_at",
            **_partial(f"state = '{OutboxState.pending.value}'"),
        ),
        Index("ix_erp_outbox_document_id", "document_id"),
        CheckConstraint(_in("state", tuple(s.value for s in OutboxState)), name="state"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[Any] = mapped_column(JSONValue())
    state: Mapped[str] = mapped_column(
        String(16), default=OutboxState.pending.value, server_default=text("'pending'")
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the row last changed (an attempt, parking, an operator's resend); NULL only on rows
    # written before migration 0003 left them unchanged.
    updated_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )


class TenantState(Base):
    """Whether a tenant is paused (operators pause/resume; the worker pauses on auth errors)."""

    __tablename__ = "tenant_state"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TenantQuota(Base):
    """The credit quota (授信额度) the cloud last reported for a tenant and seller, and whether
    pushes for them are held because it cannot cover the next bill (``store.quota``)."""

    __tablename__ = "tenant_quota"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    seller_tax_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    day_surplus: Mapped[Decimal | None] = mapped_column(Money)  # daySurplusLimit
    month_surplus: Mapped[Decimal | None] = mapped_column(Money)  # monthSurplusLimit
    is_warning: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    issue_biz_type: Mapped[str | None] = mapped_column(String(16))  # issueBizType
    biz_type: Mapped[str | None] = mapped_column(String(16))  # bizType
    observed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source: Mapped[str | None] = mapped_column(String(24))  # callback / issuance_error / ...
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    hold_reason: Mapped[str | None] = mapped_column(Text)
    held_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    held_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OperatorAudit(Base):
    """One operator action: who, what, why, on which selection, how many documents changed.

    One row per action, however many documents it touched (a bulk replay of 300 documents is
    one row; each document's own event row still names the actor and reason). Dry runs
    change nothing and are not recorded by the bridge (``dry_run`` stays for callers that
    record a preview)."""

    __tablename__ = "operator_actions"
    __table_args__ = (Index("ix_operator_actions_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))  # replay, withdraw, tenant.pause, ...
    reason: Mapped[str | None] = mapped_column(Text)
    filter: Mapped[Any] = mapped_column(JSONValue())  # the selection as the operator gave it
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReconciliationReport(Base):
    """One three-way reconciliation run (ERP list, bridge, cloud) and what it found.

    ``tenant`` NULL: every tenant. ``counts``: findings per kind (every kind present, 0
    included); ``findings``: the findings as ``schemas.reconciliation.Finding.as_json``."""

    __tablename__ = "reconciliation_reports"
    __table_args__ = (Index("ix_reconciliation_reports_tenant_started", "tenant", "started_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(64))
    since: Mapped[date] = mapped_column(Date)
    until: Mapped[date] = mapped_column(Date)
    trigger: Mapped[str] = mapped_column(String(16))  # cli, api, beat
    actor: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    erp_bills: Mapped[int | None] = mapped_column(Integer)  # NULL: no ERP list given
    documents: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    queried: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    total: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    counts: Mapped[Any] = mapped_column(JSONValue())
    findings: Mapped[Any] = mapped_column(JSONValue())
    unanswered: Mapped[Any | None] = mapped_column(JSONValue())  # bills the cloud left unanswered
