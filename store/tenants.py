"""Pausing and resuming tenants (`tenant_state`).

Operators pause/resume from the CLI or HTTP API; the worker pauses a tenant when a
configuration or authentication error survives one token refresh. A paused tenant's drafts,
polls and withdrawals are skipped by the sweeps in `store.queries`. A tenant without a row
is not paused. Nothing here commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from store.columns import utcnow
from store.models import TenantState

__all__ = ["is_paused", "pause_tenant", "paused_tenants", "resume_tenant"]


def _upsert(session: Session, tenant: str, values: dict[str, Any]) -> None:
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(TenantState).values(tenant=tenant, **values)
    session.execute(
        statement.on_conflict_do_update(index_elements=[TenantState.tenant], set_=values)
    )
    loaded = session.identity_map.get(identity_key(TenantState, tenant))
    if loaded is not None:
        session.expire(loaded)


def pause_tenant(
    session: Session, tenant: str, reason: str, *, now: datetime | None = None
) -> None:
    """Pause `tenant` with an operator-facing reason (the latest reason wins)."""
    now = now or utcnow()
    _upsert(
        session,
        tenant,
        {"paused": True, "paused_reason": reason, "paused_at": now, "updated_at": now},
    )


def resume_tenant(session: Session, tenant: str, *, now: datetime | None = None) -> None:
    now = now or utcnow()
    _upsert(
        session,
        tenant,
        {"paused": False, "paused_reason": None, "paused_at": None, "updated_at": now},
    )


def is_paused(session: Session, tenant: str) -> bool:
    paused = session.scalar(select(TenantState.paused).where(TenantState.tenant == tenant))
    return bool(paused)


def paused_tenants(session: Session) -> dict[str, TenantState]:
    rows = session.scalars(
        select(TenantState)
        .where(TenantState.paused.is_(True))
        .execution_options(populate_existing=True)
    )
    return {row.tenant: row for row in rows}
