"""Tenant pauses as the services see them: is a tenant paused, and pausing one.

A tenant is paused by the operator switch in the tenants file (``paused = true``) or by the
``tenant_state`` row (``fapiao tenants pause``, or a service that met configuration or
credentials the cloud refuses). A paused tenant's documents wait; nothing is sent for it.

| function                  | what                                                          |
|---------------------------|---------------------------------------------------------------|
| ``is_tenant_paused``      | either switch, reading ``tenant_state``                       |
| ``documents_and_pauses``  | documents and their tenants' ``tenant_state`` flags, in one   |
|                           | statement (``document_and_pause``: the document of one id)    |
| ``is_paused_from``        | either switch, with the ``tenant_state`` flag already read    |
| ``pause_tenant``          | pause in the caller's transaction (counter + error log)       |
"""

from __future__ import annotations

import logging

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from schemas.tenants import TenantConfig
from store import tenants as tenant_state
from store.models import Document, TenantState
from worker import metrics
from worker.runtime import Runtime

__all__ = [
    "document_and_pause",
    "documents_and_pauses",
    "is_paused_from",
    "is_tenant_paused",
    "pause_tenant",
]

log = logging.getLogger(__name__)


def is_tenant_paused(rt: Runtime, session: Session, tenant: TenantConfig) -> bool:
    """Paused by the operator switch in the tenants file or in ``tenant_state``."""
    return tenant.paused or tenant_state.is_paused(session, tenant.name)


def documents_and_pauses(
    session: Session, *where: ColumnElement[bool]
) -> list[tuple[Document, bool]]:
    """The documents matching ``where`` (by id) and their tenant's ``tenant_state.paused``
    flag, in one statement; the documents are re-read even if the session holds them.

    The flag alone is not the whole answer: ``is_paused_from`` adds the tenants file switch.
    """
    rows = session.execute(
        select(Document, TenantState.paused)
        .outerjoin(TenantState, TenantState.tenant == Document.tenant)
        .where(*where)
        .order_by(Document.id)
        .execution_options(populate_existing=True)
    ).all()
    return [(document, bool(paused)) for document, paused in rows]


def document_and_pause(session: Session, document_id: int) -> tuple[Document | None, bool]:
    """``documents_and_pauses`` of one id: the document (None) and its tenant's flag."""
    found = documents_and_pauses(session, Document.id == document_id)
    return found[0] if found else (None, False)


def is_paused_from(tenant: TenantConfig, paused_in_database: bool) -> bool:
    """``is_tenant_paused`` with the ``tenant_state`` flag already read."""
    return tenant.paused or paused_in_database


def pause_tenant(rt: Runtime, session: Session, tenant: str, reason: str) -> None:
    """Pause ``tenant`` (in the caller's transaction) so nothing else hammers a broken config."""
    tenant_state.pause_tenant(session, tenant, reason, now=rt.clock())
    metrics.tenant_pauses().labels(tenant=tenant).inc()
    log.error("tenant paused", extra={"tenant": tenant, "reason": reason})
