"""documents.original_document_id: a red-letter (红冲) document names the document it reverses.

Set when a red 开票申请单 is accepted (``fapiao reverse``, ``POST …/reverse``, or an ERP's own
red bill matched to its original); NULL for every blue document and for rows written before
this revision.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


_FK = "fk_documents_original_document_id_documents"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a nullable REFERENCES column in place; a batch rebuild of `documents`
        # would have to carry its partial indexes over.
        op.execute(
            "ALTER TABLE documents ADD COLUMN original_document_id INTEGER"
            f" CONSTRAINT {_FK} REFERENCES documents (id)"
        )
    else:
        op.add_column("documents", sa.Column("original_document_id", _id(), nullable=True))
        op.create_foreign_key(_FK, "documents", "documents", ["original_document_id"], ["id"])
    op.create_index("ix_documents_original_document_id", "documents", ["original_document_id"])


def downgrade() -> None:
    op.drop_index("ix_documents_original_document_id", table_name="documents")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(_FK, "documents", type_="foreignkey")
    op.drop_column("documents", "original_document_id")
