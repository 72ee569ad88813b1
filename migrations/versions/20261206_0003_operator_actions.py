"""operator_actions: one audit row per operator action; erp_outbox.updated_at.

`operator_actions` records who did what and why (bulk replay/withdraw, single-document
replay/withdraw, tenant pause/resume, notification resend) from the CLI and the HTTP API.
`erp_outbox.updated_at` says when a notification last changed (parked since, resent at);
rows written before this revision get the best time known (delivered, else created).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
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
        "operator_actions",
        sa.Column("id", _id(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("filter", _json(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_actions")),
    )
    op.create_index("ix_operator_actions_created_at", "operator_actions", ["created_at"])
    op.add_column("erp_outbox", sa.Column("updated_at", _ts(), nullable=True))
    op.execute("UPDATE erp_outbox SET updated_at = COALESCE(delivered_at, created_at)")


def downgrade() -> None:
    op.drop_column("erp_outbox", "updated_at")
    op.drop_index("ix_operator_actions_created_at", table_name="operator_actions")
    op.drop_table("operator_actions")
