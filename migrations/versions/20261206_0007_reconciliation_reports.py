"""reconciliation_reports: one row per three-way reconciliation run (ERP, bridge, cloud).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "reconciliation_reports",
        sa.Column("id", _id(), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("since", sa.Date(), nullable=False),
        sa.Column("until", sa.Date(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("erp_bills", sa.Integer(), nullable=True),
        sa.Column("documents", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("queried", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("total", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("counts", _json(), nullable=False),
        sa.Column("findings", _json(), nullable=False),
        sa.Column("unanswered", _json(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_reports")),
    )
    op.create_index(
        "ix_reconciliation_reports_tenant_started",
        "reconciliation_reports",
        ["tenant", "started_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_reconciliation_reports_tenant_started", table_name="reconciliation_reports")
    op.drop_table("reconciliation_reports")
