"""A small stand-in for the operator routes of the ``ops`` branch (``/v1/overview``, the
document list, bulk replay), added to a test app ONLY when the app does not serve them yet.

The contract is the one in the console brief; once the real routes are merged, ``install``
adds nothing and the browser tests run against the real ones.
"""

from __future__ import annotations

from typing import Any

from fastapi import BackgroundTasks, FastAPI, Request
from sqlalchemy import func, select

from producers.documents import jsonable, replay_candidates, replay_document
from producers.http import Actor, OperatorActor
from store.columns import utcnow
from store.db import unit_of_work
from store.models import Document
from store.states import DocumentStatus

FAKED = ("/v1/overview", "/v1/operations/replay")


def _served(app: FastAPI, path: str, method: str) -> bool:
    # The OpenAPI document lists routes of included routers too (app.routes wraps those).
    return method.lower() in app.openapi().get("paths", {}).get(path, {})


def _selected(session: Any, status: list[str], tenant: str | None, q: str | None) -> Any:
    statement = select(Document).where(Document.is_current.is_(True))
    if status:
        statement = statement.where(Document.status.in_(status))
    if tenant:
        statement = statement.where(Document.tenant == tenant)
    if q:
        statement = statement.where(func.lower(Document.bill_no).contains(q.lower()))
    return statement.order_by(Document.status_changed_at, Document.id)


def install(app: FastAPI) -> list[str]:
    """Add the missing routes; returns the paths it added."""
    sessions = app.state.components.sessions
    enqueuer = app.state.components.enqueuer
    added: list[str] = []

    if not _served(app, "/v1/overview", "GET"):
        added.append("/v1/overview")

        @app.get("/v1/overview")
        def overview(actor: Actor) -> dict[str, Any]:
            now = utcnow()
            with sessions() as session:
                rows = session.execute(
                    select(
                        Document.status,
                        Document.tenant,
                        func.count(),
                        func.min(Document.status_changed_at),
                    )
                    .where(Document.is_current.is_(True))
                    .group_by(Document.status, Document.tenant)
                ).all()
            states = [
                {
                    "status": status,
                    "tenant": tenant,
                    "count": count,
                    "oldest_age_seconds": (now - oldest).total_seconds(),
                }
                for status, tenant, count, oldest in rows
            ]

            def count(state: str) -> int:
                return sum(row["count"] for row in states if row["status"] == state)

            return {
                "states": states,
                "attention": {
                    "stuck": 0,
                    "failed": count("failed"),
                    "rejected": count("rejected"),
                    "invoice_failed": count("invoice_failed"),
                    "paused_tenants": [],
                    "parked_notifications": 0,
                },
            }

    if not _served(app, "/v1/documents", "GET"):
        added.append("/v1/documents")

        @app.get("/v1/documents")
        def documents(request: Request, actor: Actor) -> dict[str, Any]:
            query = request.query_params
            now = utcnow()
            with sessions() as session:
                found = session.scalars(
                    _selected(
                        session, query.getlist("status"), query.get("tenant"), query.get("q")
                    ).limit(int(query.get("limit") or 50))
                ).all()
                items = [
                    {
                        "id": doc.id,
                        "bill_no": doc.bill_no,
                        "tenant": doc.tenant,
                        "seller_tax_id": doc.seller_tax_id,
                        "buyer_name": doc.payload.get("buyerName"),
                        "status": doc.status,
                        "age_seconds": (now - doc.status_changed_at).total_seconds(),
                        "reason": doc.last_error_message,
                        "last_error_code": doc.last_error_code,
                        "total_incl_tax": doc.total_incl_tax,
                        "status_changed_at": doc.status_changed_at,
                        "updated_at": doc.updated_at,
                        "revision": doc.revision,
                    }
                    for doc in found
                ]
            return {"items": jsonable(items), "next_cursor": None}

    if not _served(app, "/v1/operations/replay", "POST"):
        added.append("/v1/operations/replay")

        @app.post("/v1/operations/replay")
        async def bulk_replay(
            request: Request, background: BackgroundTasks, actor: OperatorActor
        ) -> dict[str, Any]:
            body = await request.json()
            wanted = body.get("filter") or {}
            dry_run = bool(body.get("dry_run"))
            states = [DocumentStatus(s) for s in wanted.get("status") or ["failed", "rejected"]]
            with unit_of_work(sessions) as session:
                chosen = [
                    doc
                    for doc in replay_candidates(
                        session,
                        states=states,
                        bill_nos=wanted.get("bill_nos") or (),
                        tenant=wanted.get("tenant"),
                        limit=body.get("limit"),
                    )
                    if not wanted.get("q") or wanted["q"].lower() in doc.bill_no.lower()
                ]
                listed = []
                for doc in chosen:
                    if dry_run:
                        listed.append((doc.bill_no, doc.tenant, "draft", "applied"))
                        continue
                    done = replay_document(session, doc, actor=actor, reason=body.get("reason"))
                    listed.append((done.bill_no, done.tenant, done.to_status, "applied"))
                    background.add_task(enqueuer.push, done.document_id, done.bill_no, done.tenant)
            return {
                "dry_run": dry_run,
                "action": "replay",
                "count": len(listed),
                "documents": [
                    {"bill_no": b, "tenant": t, "status": s, "outcome": o} for b, t, s, o in listed
                ],
                "audit_id": None,
            }

    return added
