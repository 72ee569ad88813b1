"""after issuance: the `reversed` document state; per-invoice standing after 作废 / 红冲.

`documents.status` may be `reversed` (every issued invoice voided or fully red-flushed).
`invoices` gains what the cloud reports after issuance: `invoice_property` (0 blue, 1 red),
`original_invoice_code` / `original_invoice_num` (the blue invoice a red one reverses),
`can_red_amount` / `can_red_tax_amount` (left to reverse), `standing` (normal,
partially_reversed, reversed, voided), `status_changed_at` (when the standing changed) and
`reversals` (the red invoices known against a blue one). Existing rows are `normal`.

SQLite changes a CHECK constraint by rebuilding the table (batch mode, migrations/env.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = (
    "draft",
    "pushing",
    "in_doubt",
    "pushed",
    "partially_invoiced",
    "invoiced",
    "invoice_failed",
    "rejected",
    "failed",
    "withdrawing",
    "withdrawn",
    "returned",
)
_AFTER = (*_BEFORE, "reversed")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _money() -> sa.Numeric[object]:
    return sa.Numeric(precision=16, scale=2)


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def _status_check(before: Sequence[str], after: Sequence[str]) -> None:
    """Swap the allowed values of ``ck_documents_status``.

    SQLite: rebuilding ``documents`` (batch mode) is impossible with foreign keys on and rows
    referencing it (the migration runs in a transaction, where ``PRAGMA foreign_keys`` cannot
    change), so the CHECK's text is edited in place, the procedure SQLite documents for
    loosening a constraint (ALTER TABLE, "making other kinds of table schema changes").
    """
    if op.get_bind().dialect.name == "sqlite":
        version = op.get_bind().exec_driver_sql("PRAGMA schema_version").scalar_one()
        op.execute("PRAGMA writable_schema=ON")
        op.get_bind().exec_driver_sql(
            "UPDATE sqlite_master SET sql = replace(sql, ?, ?)"
            " WHERE type = 'table' AND name = 'documents'",
            (_in("status", before), _in("status", after)),
        )
        op.execute(f"PRAGMA schema_version={int(version) + 1}")
        op.execute("PRAGMA writable_schema=OFF")
        return
    op.drop_constraint(op.f("ck_documents_status"), "documents", type_="check")
    op.create_check_constraint(op.f("ck_documents_status"), "documents", _in("status", after))


_COLUMNS = (
    ("invoice_property", sa.Integer),
    ("original_invoice_code", lambda: sa.String(20)),
    ("original_invoice_num", lambda: sa.String(32)),
    ("can_red_amount", _money),
    ("can_red_tax_amount", _money),
    ("status_changed_at", lambda: sa.DateTime(timezone=True)),
    ("reversals", _json),
)


def upgrade() -> None:
    _status_check(_BEFORE, _AFTER)
    # Plain ADD COLUMN on both databases (no table rebuild on SQLite).
    for name, kind in _COLUMNS:
        op.add_column("invoices", sa.Column(name, kind(), nullable=True))
    op.add_column(
        "invoices",
        sa.Column("standing", sa.String(24), server_default=sa.text("'normal'"), nullable=False),
    )


def downgrade() -> None:
    op.execute("UPDATE documents SET status = 'invoiced' WHERE status = 'reversed'")
    for name in ("standing", *(name for name, _ in reversed(_COLUMNS))):
        op.execute(f"ALTER TABLE invoices DROP COLUMN {name}")
    _status_check(_AFTER, _BEFORE)
