"""tenant_quota: the credit quota (授信额度) the cloud reported per tenant and seller, and its hold.

One row per (tenant, seller_tax_id): the day and month surplus of the latest believable
``bizControl`` (or issuance failure 授信额度不足), when and from what it was observed, and
whether pushes for that tenant/seller are held (why, until when). See ``store.quota``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _money() -> sa.Numeric[object]:
    return sa.Numeric(16, 2)


def upgrade() -> None:
    op.create_table(
        "tenant_quota",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("seller_tax_id", sa.String(32), nullable=False),
        sa.Column("day_surplus", _money(), nullable=True),
        sa.Column("month_surplus", _money(), nullable=True),
        sa.Column("is_warning", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("issue_biz_type", sa.String(16), nullable=True),
        sa.Column("biz_type", sa.String(16), nullable=True),
        sa.Column("observed_at", _ts(), nullable=True),
        sa.Column("source", sa.String(24), nullable=True),
        sa.Column("held", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("hold_reason", sa.Text(), nullable=True),
        sa.Column("held_until", _ts(), nullable=True),
        sa.Column("held_at", _ts(), nullable=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "seller_tax_id", name=op.f("pk_tenant_quota")),
    )


def downgrade() -> None:
    op.drop_table("tenant_quota")
