"""callback_inbox.claimed_until: the lease / not-before of a received callback.

A reconcile task claims the rows of its batch by setting ``claimed_until`` (now + lease) in
the statement that picks them; a deferred row gets now + its retry wait. Until then no other
task gathers the row and the sweeper does not re-offer it. NULL: never claimed. The
gathering reads ``state = 'received'`` rows oldest first, which the existing partial index
``ix_callback_inbox_received`` (``received_at``) already serves: no new index.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "callback_inbox", sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("callback_inbox", "claimed_until")
