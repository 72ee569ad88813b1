"""Polling: find the invoices of accepted documents when callbacks are late or lost.

``poll_due(rt)`` (beat, ``fapiao.poll_due``) claims due documents in batches with
``store.queries.due_for_poll`` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, an atomic
``UPDATE … RETURNING`` on SQLite) and sends one task each: ``fapiao.resolve_in_doubt`` for
``in_doubt``, ``fapiao.poll`` for ``pushed`` / ``partially_invoiced`` / ``invoice_failed``.

``poll_document(rt, id)`` queries one document and applies its invoices
(``worker.services.invoices``); the next query is due after ``poll_schedule.delay(poll_count)``
— seconds at first, hours later, capped. A document waiting longer than
``poll.alert_after_seconds`` in its state raises an alert (structured log + counter) on each
poll; polling goes on.

| query says          | what happens                                                    |
|---------------------|-----------------------------------------------------------------|
| invoices            | upsert, verdict → issued_all / issued_some / issue_failed        |
| nothing issued yet  | next poll scheduled                                             |
| nothing issued yet  | (an empty invoiceList, ambiguous or not: the bill was accepted) |
| bill absent         | reason on the document + stuck alert (someone withdrew it in    |
| (-10011, data: [])  | the console?); polling goes on, slowly                          |
| don't know          | next poll scheduled                                             |
| config/auth         | tenant paused; polls resume when it is                          |

Overdue issuance: an auto-issue bill (``autoInvoice`` 1) still without any invoice
``poll.issue_overdue_seconds`` after it reached ``pushed`` gets ``last_error_code``
``issue_overdue`` and a reason telling the operator what to check, once, with the stuck alert.
Issuance takes seconds to minutes; and under the ``failed_in_query=omitted`` reading a failed
issuance whose callback was lost looks exactly like "not issued yet" to every query, so only
age can reveal it. Polling goes on; invoices that arrive later clear the flag
(``worker.services.invoices``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from schemas.tenants import TenantConfig
from store.db import autocommit_session, unit_of_work
from store.lifecycle import LostRace, update_fields
from store.models import Document
from store.queries import due_for_poll
from store.states import ISSUE_OVERDUE, DocumentStatus
from worker import metrics, queues
from worker.ledger import HeldCallLedger, SqlCallLedger
from worker.runtime import Followup, Runtime
from worker.services.erp_outbox import owe_after_issuance, owe_notification
from worker.services.invoices import apply_invoices
from worker.services.query import QueryAnswer, query_bill
from worker.services.tenancy import document_and_pause, is_paused_from, pause_tenant

__all__ = ["POLL_BATCH", "PollOutcome", "poll_document", "poll_due"]

log = logging.getLogger(__name__)

POLL_BATCH: Final = 200
_POLLABLE: Final = frozenset(
    {DocumentStatus.pushed, DocumentStatus.partially_invoiced, DocumentStatus.invoice_failed}
)


@dataclass(frozen=True, slots=True)
class PollOutcome:
    status: str
    detail: str = ""
    followups: list[Followup] = field(default_factory=list)


def poll_due(rt: Runtime, *, limit: int = POLL_BATCH) -> list[Followup]:
    """Claim due documents and return one task each (send after this returns: committed)."""
    now = rt.clock()
    # If a poll task is lost, the row is due again after this (well below any broker limit).
    lost_cover = timedelta(seconds=max(30.0, rt.policy.push_lease.total_seconds()))
    with unit_of_work(rt.sessions) as session:
        due = due_for_poll(session, now, limit, reschedule_after=lost_cover)
    followups: list[Followup] = []
    for doc in due:
        task = queues.RESOLVE_IN_DOUBT if doc.status is DocumentStatus.in_doubt else queues.POLL
        followups.append(
            Followup(task, {"document_id": doc.id, "bill_no": doc.bill_no, "tenant": doc.tenant})
        )
    return followups


def _absent_reason(bill_no: str, answer: str) -> str:
    return (
        f"the cloud accepted {bill_no} but BILL.INVOICE.QUERY now says it does not have it"
        f" ({answer}). Was it withdrawn or deleted in the cloud console (开票管理 → 开票申请单)?"
        " Check there; if it is gone, withdraw the document here and submit it again"
        " / 发票云已接收的单据现查询不到，请在发票云核对"
    )


def _overdue_reason(bill_no: str, waited: timedelta, failed_in_query: str | None) -> str:
    minutes = int(waited.total_seconds() // 60)
    if failed_in_query == "listed":
        cause = "the cloud still lists it as not issued"
    else:
        cause = (
            "the query would not show a failed issuance under this tenant's cloud"
            " (failed_in_query is not declared `listed`), so it may have failed"
        )
    return (
        f"no invoice for {bill_no} {minutes} min after the cloud accepted it; {cause}."
        " Look the bill up in the cloud console (开票管理 → 开票申请单): if issuance failed,"
        " fix it there and issue again, or withdraw it here (`fapiao withdraw`) and submit it"
        " again / 推送后长时间仍未开票，请在发票云核对开票申请单状态"
    )


def poll_document(rt: Runtime, document_id: int) -> PollOutcome:
    """Query one accepted document and apply what the cloud shows (module docstring)."""
    with autocommit_session(rt.sessions) as session:  # one read: no transaction needed
        document, paused_in_database = document_and_pause(session, document_id)
        if document is None:
            return PollOutcome("skipped", "no such document")
        status = DocumentStatus(document.status)
        if status not in _POLLABLE:
            return PollOutcome("skipped", f"document is {status}, nothing to poll")
        tenant = rt.tenant(document.tenant)
        if tenant is None:
            return PollOutcome("skipped", f"tenant {document.tenant!r} is not configured")
        if is_paused_from(tenant, paused_in_database):
            return PollOutcome("paused", f"tenant {tenant.name} is paused")
        bill_no, seller = document.bill_no, document.seller_tax_id
        attempt, poll_count = document.push_attempt, document.poll_count
        waiting = rt.clock() - document.status_changed_at
        may_turn_overdue = (
            status is DocumentStatus.pushed
            and str(document.payload.get("autoInvoice", "1")) == "1"
            and document.last_error_code != ISSUE_OVERDUE
            and waiting.total_seconds() >= rt.settings.poll.issue_overdue_seconds
        )

    # The query's ledger row goes in the transaction below (one commit less); if that rolls
    # back or none comes, on its own (worker.ledger.HeldCallLedger).
    held = HeldCallLedger(SqlCallLedger(rt.sessions))
    try:
        answer = query_bill(
            rt, tenant, bill_no=bill_no, seller_tax_id=seller, document_id=document_id,
            attempt=attempt, ledger=held,
        )  # fmt: skip
        return _apply_answer(
            rt, document_id, tenant, answer, held, bill_no=bill_no, poll_count=poll_count,
            waiting=waiting, may_turn_overdue=may_turn_overdue,
        )  # fmt: skip
    finally:
        held.flush()


def _apply_answer(
    rt: Runtime,
    document_id: int,
    tenant: TenantConfig,
    answer: QueryAnswer,
    held: HeldCallLedger,
    *,
    bill_no: str,
    poll_count: int,
    waiting: timedelta,
    may_turn_overdue: bool,
) -> PollOutcome:
    now = rt.clock()
    next_poll = now + rt.policy.poll_schedule.delay(poll_count)
    with unit_of_work(rt.sessions) as session:
        held.write(session)
        document = session.get(Document, document_id, populate_existing=True)
        if document is None or DocumentStatus(document.status) not in _POLLABLE:
            return PollOutcome("skipped", "document moved on while querying")
        if answer.kind == "config":
            pause_tenant(rt, session, tenant.name, answer.reason)
            return PollOutcome("paused", answer.reason)
        followups: list[Followup] = []
        before = final = document.status
        overdue = False
        try:
            if answer.kind == "present":
                results, verdict = apply_invoices(
                    rt, session, document, answer.items, reason="BILL.INVOICE.QUERY"
                )
                followups += owe_notification(rt, session, document_id, results, now=now)
                followups += owe_after_issuance(rt, session, verdict.after, now=now)
                moved = [r for r in results if r.applied]
                if moved:
                    final = moved[-1].to_status.value
                    # A state change means news is flowing: poll quickly again.
                    next_poll = now + rt.policy.poll_schedule.delay(0)
            if final != DocumentStatus.invoiced:
                changes: dict[str, Any] = {"next_poll_at": next_poll}
                if final != before:
                    changes["poll_count"] = 0
                if answer.kind == "absent":
                    changes["last_error_message"] = _absent_reason(bill_no, answer.reason)
                elif may_turn_overdue and answer.kind == "present" and final == before:
                    overdue = True
                    changes["last_error_code"] = ISSUE_OVERDUE
                    changes["last_error_message"] = _overdue_reason(
                        bill_no, waiting, tenant.declared("failed_in_query")
                    )
                update_fields(session, document_id, changes, now=now)
        except LostRace as exc:
            return PollOutcome("skipped", str(exc))
    if answer.kind == "absent":
        # Every reading of the contract answers a bill the cloud holds with an element for it:
        # this is not "not issued yet". Alert at once (the stuck-documents alert), not only
        # after poll.alert_after_seconds.
        metrics.stuck_documents().labels(status=final).inc()
        log.error(
            "accepted bill not found in the cloud",
            extra={"document_id": document_id, "bill_no": bill_no, "answer": answer.reason},
        )
        return PollOutcome(final, _absent_reason(bill_no, answer.reason), followups)
    if overdue:
        metrics.stuck_documents().labels(status=final).inc()
        log.warning(
            "auto-issue bill without an invoice for too long",
            extra={
                "document_id": document_id,
                "bill_no": bill_no,
                "waiting_seconds": int(waiting.total_seconds()),
            },
        )
    elif final != DocumentStatus.invoiced and rt.policy.poll_schedule.overdue(waiting):
        metrics.stuck_documents().labels(status=final).inc()
        log.warning(
            "document waiting too long for invoices",
            extra={
                "document_id": document_id,
                "bill_no": bill_no,
                "status": final,
                "waiting_seconds": int(waiting.total_seconds()),
            },
        )
    return PollOutcome(final, answer.reason, followups)
