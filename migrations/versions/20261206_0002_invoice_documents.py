"""invoice_documents: an invoice may cover several documents (merged invoices, autoMerge=1).

`invoices.document_id` stays: it names the document the invoice was first recorded for.
Every invoice gets its link to that document here, so `invoice_documents` alone answers
"which invoices cover this document" (docs/CLOUD-CONTRACT.md §6.6).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "invoice_documents",
        sa.Column("invoice_id", _id(), nullable=False),
        sa.Column("document_id", _id(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_documents_invoice_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_invoice_documents_document_id_documents"),
        ),
        sa.PrimaryKeyConstraint("invoice_id", "document_id", name=op.f("pk_invoice_documents")),
    )
    op.create_index("ix_invoice_documents_document_id", "invoice_documents", ["document_id"])
    op.execute(
        "INSERT INTO invoice_documents (invoice_id, document_id, created_at)"
        " SELECT id, document_id, created_at FROM invoices"
    )


def downgrade() -> None:
    # Links to documents other than the first are lost: invoices.document_id remains.
    op.drop_index("ix_invoice_documents_document_id", table_name="invoice_documents")
    op.drop_table("invoice_documents")
