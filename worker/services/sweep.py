"""The sweeper: whatever a crash, a lost message or a flushed Redis dropped, found again.

One ``sweep(rt)`` pass (beat, ``fapiao.sweep``):

| finds (``store.queries``)                     | does                                          |
|-----------------------------------------------|-----------------------------------------------|
| drafts due (new, retry due, enqueue lost)     | ``fapiao.push_batch`` per ``push.batch_size`` |
|                                               | drafts (a lone draft: ``fapiao.push``)        |
| pushing past its lease (worker died mid-push) | unsure → ``in_doubt``, then a query           |
| withdrawing due                               | ``fapiao.withdraw`` each                      |
| ERP notifications due                         | ``fapiao.notify_erp`` each                    |
| callbacks received but not processed          | ``fapiao.reconcile`` each                     |
| the oldest document of a state older than its | an alert: structured log + counter            |
| ``stuck_alert`` age                           |                                               |

Every claim advances the row's due time before the commit, so concurrent sweepers never
send the same row twice, and a message lost again is re-found one interval later. Sending
happens after the commit; duplicates are harmless (claims are compare-and-set).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from store.db import unit_of_work
from store.lifecycle import LostRace, transition
from store.models import Document
from store.queries import (
    due_drafts,
    due_outbox,
    due_withdrawals,
    expired_leases,
    oldest_by_status,
    stale_inbox,
)
from store.states import DocumentStatus, Event
from worker import metrics, queues
from worker.runtime import Followup, Runtime

__all__ = ["SWEEP_BATCH", "SweepReport", "sweep"]

log = logging.getLogger(__name__)

SWEEP_BATCH: Final = 500


@dataclass(slots=True)
class SweepReport:
    drafts: int = 0
    expired_leases: int = 0
    withdrawals: int = 0
    notifications: int = 0
    callbacks: int = 0
    alerts: list[str] = field(default_factory=list)
    followups: list[Followup] = field(default_factory=list)


def sweep(rt: Runtime, *, limit: int = SWEEP_BATCH) -> SweepReport:
    """One pass (module docstring); the caller sends ``report.followups`` afterwards."""
    report = SweepReport()
    now = rt.clock()
    # A claimed row whose message is lost again is due once more after this.
    again = timedelta(seconds=max(30.0, rt.policy.push_lease.total_seconds()))
    with unit_of_work(rt.sessions) as session:
        drafts = due_drafts(session, now, limit, redeliver_after=again)
        withdrawals = due_withdrawals(session, now, limit, redeliver_after=again)
        outbox = due_outbox(session, now, limit, redeliver_after=again)
        inbox = stale_inbox(session, now, limit, older_than=again)
        # Label notification and callback messages with their bill (Flower / log search by
        # bill number).
        labels: dict[int, tuple[str, str]] = {}
        for row in outbox:
            owner = session.get(Document, row.document_id) if row.document_id else None
            if owner is not None:
                labels[row.id] = (owner.bill_no, owner.tenant)
        callback_labels: dict[int, tuple[str, str]] = {}
        for row in inbox:
            owner = session.get(Document, row.document_id) if row.document_id else None
            if owner is not None:
                callback_labels[row.id] = (owner.bill_no, owner.tenant)
    owed = [(doc.id, doc.bill_no, doc.tenant) for doc in drafts]
    for task, message in queues.push_messages(owed, rt.settings.push.batch_size):
        report.followups.append(Followup(task, message))
    for doc in withdrawals:
        report.followups.append(Followup(queues.WITHDRAW, _kwargs(doc.id, doc.bill_no, doc.tenant)))
    for row in outbox:
        kwargs: dict[str, object] = {"outbox_id": row.id}
        if row.id in labels:
            kwargs["bill_no"], kwargs["tenant"] = labels[row.id]
        report.followups.append(Followup(queues.NOTIFY_ERP, kwargs))
    for row in inbox:
        callback: dict[str, object] = {"inbox_id": row.id}
        if row.id in callback_labels:
            callback["bill_no"], callback["tenant"] = callback_labels[row.id]
        report.followups.append(Followup(queues.RECONCILE, callback))
    report.drafts, report.withdrawals = len(drafts), len(withdrawals)
    report.notifications, report.callbacks = len(outbox), len(inbox)

    with unit_of_work(rt.sessions) as session:
        expired = expired_leases(session, now, limit, grace=again)
    for doc in expired:
        with unit_of_work(rt.sessions) as session:
            try:
                result = transition(
                    session,
                    doc.id,
                    Event.unsure,
                    actor=rt.actor,
                    expected_status=DocumentStatus.pushing,
                    attempt=doc.push_attempt,
                    reason=(
                        f"push lease of attempt {doc.push_attempt} expired (the worker died or"
                        " hung mid-call); a query decides / 推送租约过期，需查询确认"
                    ),
                    changes={"poll_count": 0, "next_poll_at": now},
                    now=now,
                )
            except LostRace:
                continue  # the worker finished meanwhile
        if result.applied:
            report.expired_leases += 1
            report.followups.append(
                Followup(queues.RESOLVE_IN_DOUBT, _kwargs(doc.id, doc.bill_no, doc.tenant))
            )

    with unit_of_work(rt.sessions) as session:
        oldest = oldest_by_status(session)
    for status, since in oldest.items():
        limit_seconds = rt.settings.stuck_alert.for_state(status.value)
        if limit_seconds is None:
            continue
        age = now - since
        if age.total_seconds() >= limit_seconds:
            metrics.stuck_documents().labels(status=status.value).inc()
            report.alerts.append(status.value)
            log.warning(
                "documents stuck in a state",
                extra={
                    "status": status.value,
                    "oldest_since": since.isoformat(),
                    "age_seconds": int(age.total_seconds()),
                    "alert_after_seconds": limit_seconds,
                },
            )
    metrics.sweeps().inc()
    return report


def _kwargs(document_id: int, bill_no: str, tenant: str) -> dict[str, object]:
    return {"document_id": document_id, "bill_no": bill_no, "tenant": tenant}
