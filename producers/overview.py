"""The operator's overview (``fapiao status``): states by tenant, ages, what needs a person.

For each tenant (those of the tenants file, plus any still found in the database):

| member | meaning |
|---|---|
| ``states[state].count`` | current documents in the state |
| ``states[state].oldest_age_seconds`` | how long the longest-waiting one has been there |
| ``states[state].stuck`` | that age is past ``FAPIAO_STUCK_ALERT__<STATE>`` |
| ``states[state].stuck_count`` | how many documents are past it |
| ``attention`` | documents in failed / rejected / in_doubt / invoice_failed (need an operator) |
| ``paused``, ``paused_reason`` | paused by an operator, the worker (auth errors) or the file |
| ``parked_notifications`` | ERP webhook deliveries given up on |

``callbacks`` counts inbox rows by state for all tenants (orphans: no document matched).

``operator_overview`` reshapes it for ``GET /v1/overview``: one row per (state, tenant) with
documents, and the totals that need a person.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from schemas.settings import StuckAlertSettings
from schemas.tenants import TenantsFile
from store.columns import utcnow
from store.models import CallbackInbox, Document, ErpOutbox, TenantState
from store.states import DocumentStatus, InboxState, OutboxState

__all__ = ["ATTENTION_STATES", "operator_overview", "overview"]

ATTENTION_STATES: Final = (
    DocumentStatus.failed,
    DocumentStatus.rejected,
    DocumentStatus.in_doubt,
    DocumentStatus.invoice_failed,
)


def overview(
    session: Session,
    tenants: TenantsFile,
    stuck_alert: StuckAlertSettings,
    *,
    tenant: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The overview of the module docstring (JSON-ready except datetimes)."""
    at = now or utcnow()
    statement = (
        select(Document.tenant, Document.status, func.count(), func.min(Document.status_changed_at))
        .where(Document.is_current.is_(True))
        .group_by(Document.tenant, Document.status)
    )
    if tenant is not None:
        statement = statement.where(Document.tenant == tenant)
    rows = session.execute(statement).all()
    paused = {row.tenant: row for row in session.scalars(select(TenantState))}
    parked = dict(
        session.execute(
            select(Document.tenant, func.count())
            .join(ErpOutbox, ErpOutbox.document_id == Document.id)
            .where(ErpOutbox.state == OutboxState.parked.value)
            .group_by(Document.tenant)
        ).all()
    )
    limits = {
        state.value: limit
        for state in DocumentStatus
        if (limit := stuck_alert.for_state(state.value)) is not None
    }
    stuck_counts: dict[tuple[str, str], int] = {}
    if limits:
        stuck_statement = (
            select(Document.tenant, Document.status, func.count())
            .where(
                Document.is_current.is_(True),
                or_(
                    *(
                        and_(
                            Document.status == state,
                            Document.status_changed_at < at - timedelta(seconds=limit),
                        )
                        for state, limit in limits.items()
                    )
                ),
            )
            .group_by(Document.tenant, Document.status)
        )
        if tenant is not None:
            stuck_statement = stuck_statement.where(Document.tenant == tenant)
        for name, status, count in session.execute(stuck_statement).all():
            stuck_counts[(name, status)] = int(count)
    inbox = dict(
        session.execute(
            select(CallbackInbox.state, func.count()).group_by(CallbackInbox.state)
        ).all()
    )

    found: dict[str, dict[str, tuple[int, datetime | None]]] = {}
    for name, status, count, changed in rows:
        found.setdefault(name, {})[status] = (int(count), changed)
    names = [t.name for t in tenants.tenants if tenant is None or t.name == tenant]
    names += sorted(set(found) - set(names))

    result: list[dict[str, Any]] = []
    for name in names:
        config = tenants.by_name(name)
        state_row = paused.get(name)
        states: dict[str, dict[str, Any]] = {}
        for state in DocumentStatus:
            count, since = found.get(name, {}).get(state.value, (0, None))
            age = None if since is None else max(0.0, (at - since).total_seconds())
            limit = stuck_alert.for_state(state.value)
            states[state.value] = {
                "count": count,
                "oldest_age_seconds": age,
                "stuck": bool(count and age is not None and limit is not None and age > limit),
                "stuck_count": stuck_counts.get((name, state.value), 0),
            }
        result.append(
            {
                "tenant": name,
                "configured": config is not None,
                "paused": bool(state_row and state_row.paused) or bool(config and config.paused),
                "paused_reason": (
                    state_row.paused_reason
                    if state_row and state_row.paused
                    else ("paused = true in the tenants file" if config and config.paused else None)
                ),
                "states": states,
                "total": sum(item["count"] for item in states.values()),
                "attention": sum(states[s.value]["count"] for s in ATTENTION_STATES),
                "parked_notifications": int(parked.get(name, 0)),
            }
        )
    return {
        "generated_at": at,
        "tenants": result,
        "callbacks": {state.value: int(inbox.get(state.value, 0)) for state in InboxState},
    }


def operator_overview(data: dict[str, Any]) -> dict[str, Any]:
    """``overview()``'s answer as ``GET /v1/overview`` gives it: ``states`` (non-empty
    (state, tenant) cells, oldest first within a state) and ``attention`` (totals)."""
    states: list[dict[str, Any]] = []
    for state in DocumentStatus:
        for row in data["tenants"]:
            cell = row["states"][state.value]
            if cell["count"]:
                states.append(
                    {
                        "status": state.value,
                        "tenant": row["tenant"],
                        "count": cell["count"],
                        "oldest_age_seconds": cell["oldest_age_seconds"],
                        "stuck_count": cell["stuck_count"],
                    }
                )

    def total(state: DocumentStatus) -> int:
        return sum(int(row["states"][state.value]["count"]) for row in data["tenants"])

    rows = data["tenants"]
    return {
        "generated_at": data["generated_at"],
        "states": states,
        "attention": {
            "stuck": sum(cell["stuck_count"] for cell in states),
            "failed": total(DocumentStatus.failed),
            "rejected": total(DocumentStatus.rejected),
            "in_doubt": total(DocumentStatus.in_doubt),
            "invoice_failed": total(DocumentStatus.invoice_failed),
            "paused_tenants": [row["tenant"] for row in rows if row["paused"]],
            "parked_notifications": sum(int(row["parked_notifications"]) for row in rows),
        },
        "callbacks": data["callbacks"],
    }
