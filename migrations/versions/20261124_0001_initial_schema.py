"""Initial schema: documents, document_events, invoices, cloud_calls, callback_inbox,
erp_outbox, tenant_state.

Written from an autogenerate draft and reviewed by hand. Self-contained on purpose (the
status lists are copied, not imported), so later model changes cannot rewrite history.
Works on PostgreSQL (JSONB, timestamptz, partial indexes) and SQLite (JSON text, partial
indexes; INTEGER PRIMARY KEY for auto-increment).

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = (
    "draft", "pushing", "in_doubt", "pushed", "partially_invoiced", "invoiced",
    "invoice_failed", "rejected", "failed", "withdrawing", "withdrawn", "returned",
)
POLLED = ("in_doubt", "pushed", "partially_invoiced", "invoice_failed")
ATTEMPTED = ("draft", "withdrawing")
EVENT_OUTCOMES = ("applied", "stale", "superseded")
INBOX_STATES = ("received", "processed", "orphan", "failed")
OUTBOX_STATES = ("pending", "delivered", "parked")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _partial(predicate: str) -> dict[str, sa.TextClause]:
    return {"postgresql_where": sa.text(predicate), "sqlite_where": sa.text(predicate)}


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _money() -> sa.Numeric[object]:
    return sa.Numeric(precision=16, scale=2)


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", _id(), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("seller_tax_id", sa.String(32), nullable=False),
        sa.Column("bill_no", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("is_current", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("push_attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("lease_expires_at", _ts(), nullable=True),
        sa.Column("next_attempt_at", _ts(), nullable=True),
        sa.Column("next_poll_at", _ts(), nullable=True),
        sa.Column("poll_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("in_doubt_since", _ts(), nullable=True),
        sa.Column("last_error_code", sa.String(64), nullable=True),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("invoice_type", sa.String(8), nullable=True),
        sa.Column("total_amount", _money(), nullable=False),
        sa.Column("total_incl_tax", _money(), nullable=True),
        sa.Column("total_tax", _money(), nullable=True),
        sa.Column("issued_amount", _money(), server_default=sa.text("0"), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.Column("status_changed_at", _ts(), nullable=False),
        sa.CheckConstraint(_in("status", STATUSES), name=op.f("ck_documents_status")),
        sa.CheckConstraint("revision >= 1", name=op.f("ck_documents_revision_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
        sa.UniqueConstraint(
            "tenant", "seller_tax_id", "bill_no", "revision", name="uq_documents_identity"
        ),
    )
    # Exactly one current revision per (tenant, seller, billNo); also the fast lookup.
    op.create_index(
        "uq_documents_current",
        "documents",
        ["tenant", "seller_tax_id", "bill_no"],
        unique=True,
        **_partial("is_current"),
    )
    op.create_index("ix_documents_bill_no", "documents", ["bill_no"])
    op.create_index("ix_documents_status_changed", "documents", ["status", "status_changed_at"])
    # Sweeps and polls scan only live rows, so they stay flat as history grows.
    op.create_index(
        "ix_documents_poll_due",
        "documents",
        ["status", "next_poll_at"],
        **_partial(_in("status", POLLED)),
    )
    op.create_index(
        "ix_documents_attempt_due",
        "documents",
        ["status", "next_attempt_at"],
        **_partial(_in("status", ATTEMPTED)),
    )
    op.create_index(
        "ix_documents_lease", "documents", ["lease_expires_at"], **_partial("status = 'pushing'")
    )

    op.create_table(
        "document_events",
        sa.Column("id", _id(), nullable=False),
        sa.Column("document_id", _id(), nullable=False),
        sa.Column("from_status", sa.String(24), nullable=True),
        sa.Column("to_status", sa.String(24), nullable=False),
        sa.Column("event", sa.String(24), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.CheckConstraint(
            _in("outcome", EVENT_OUTCOMES), name=op.f("ck_document_events_outcome")
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_document_events_document_id_documents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_events")),
    )
    op.create_index(
        "ix_document_events_document_id", "document_events", ["document_id", "id"]
    )

    op.create_table(
        "invoices",
        sa.Column("id", _id(), nullable=False),
        sa.Column("document_id", _id(), nullable=False),
        sa.Column("push_attempt", sa.Integer(), nullable=True),
        sa.Column("order_no", sa.String(64), nullable=True),
        sa.Column("invoice_code", sa.String(20), server_default=sa.text("''"), nullable=False),
        sa.Column("invoice_num", sa.String(32), nullable=True),
        sa.Column("invoice_type", sa.String(8), nullable=True),
        sa.Column("invoice_status", sa.String(4), nullable=True),
        sa.Column("total_amount", _money(), nullable=True),
        sa.Column("total_tax_amount", _money(), nullable=True),
        sa.Column("include_tax_amount", _money(), nullable=True),
        sa.Column("invoice_date", sa.Date(), nullable=True),
        sa.Column("invoice_file_url", sa.Text(), nullable=True),
        sa.Column("invoice_pdf_file_url", sa.Text(), nullable=True),
        sa.Column("invoice_xml_file_url", sa.Text(), nullable=True),
        sa.Column("invoice_image_url", sa.Text(), nullable=True),
        sa.Column("issue_error_message", sa.Text(), nullable=True),
        sa.Column("raw", _json(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name=op.f("fk_invoices_document_id_documents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("invoice_code", "invoice_num", name="uq_invoices_code_num"),
        sa.UniqueConstraint("order_no", name="uq_invoices_order_no"),
    )
    op.create_index("ix_invoices_document_id", "invoices", ["document_id"])

    op.create_table(
        "cloud_calls",
        sa.Column("id", _id(), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("document_id", _id(), nullable=True),
        sa.Column("interface", sa.String(40), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(24), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name=op.f("fk_cloud_calls_document_id_documents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cloud_calls")),
    )
    op.create_index("ix_cloud_calls_document_id", "cloud_calls", ["document_id"])
    op.create_index("ix_cloud_calls_tenant_created", "cloud_calls", ["tenant", "created_at"])

    op.create_table(
        "callback_inbox",
        sa.Column("id", _id(), nullable=False),
        sa.Column("received_at", _ts(), nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=False),
        sa.Column("raw_body", sa.LargeBinary(), nullable=False),
        sa.Column("remote_addr", sa.String(64), nullable=True),
        sa.Column("style", sa.String(24), nullable=True),
        sa.Column("state", sa.String(16), server_default=sa.text("'received'"), nullable=False),
        sa.Column("processed_at", _ts(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("document_id", _id(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint(_in("state", INBOX_STATES), name=op.f("ck_callback_inbox_state")),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_callback_inbox_document_id_documents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_inbox")),
        sa.UniqueConstraint("dedupe_key", name="uq_callback_inbox_dedupe_key"),
    )
    op.create_index(
        "ix_callback_inbox_received",
        "callback_inbox",
        ["received_at"],
        **_partial("state = 'received'"),
    )
    op.create_index("ix_callback_inbox_document_id", "callback_inbox", ["document_id"])

    op.create_table(
        "erp_outbox",
        sa.Column("id", _id(), nullable=False),
        sa.Column("document_id", _id(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("state", sa.String(16), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", _ts(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("delivered_at", _ts(), nullable=True),
        sa.CheckConstraint(_in("state", OUTBOX_STATES), name=op.f("ck_erp_outbox_state")),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name=op.f("fk_erp_outbox_document_id_documents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erp_outbox")),
    )
    op.create_index(
        "ix_erp_outbox_due", "erp_outbox", ["next_attempt_at"], **_partial("state = 'pending'")
    )
    op.create_index("ix_erp_outbox_document_id", "erp_outbox", ["document_id"])

    op.create_table(
        "tenant_state",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("paused_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", name=op.f("pk_tenant_state")),
    )


def downgrade() -> None:
    op.drop_table("tenant_state")
    op.drop_table("erp_outbox")  # dropping a table drops its indexes
    op.drop_table("callback_inbox")
    op.drop_table("cloud_calls")
    op.drop_table("invoices")
    op.drop_table("document_events")
    op.drop_table("documents")
