"""Reconcile stored callbacks (``callback_inbox``) with the documents they are about, in batches.

The receiver stored the raw body, deduplicated and acknowledged it; this runs afterwards.
``reconcile_callbacks(rt, inbox_ids)`` is the only path: a ``fapiao.reconcile`` task passes its
own row, and the batch is that row plus whatever else is waiting (one row is a batch of one).

| phase | what                                                                        | commits |
|-------|-----------------------------------------------------------------------------|---------|
| claim | release the reconcile key (``worker.coalesce``), then ONE ``WITH chosen AS  | none    |
|       | MATERIALIZED (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) UPDATE … RETURNING`` | (auto-  |
|       | (picked once: a plain ``IN (SELECT …)`` may be re-run): the task's own rows | commit) |
|       | first, then waiting ``received`` rows oldest first, up to                   |         |
|       | ``callbacks.batch_size``; each gets ``claimed_until`` = now + lease. Then   |         |
|       | the documents of every bill of the batch with their tenants' pause flags,  |         |
|       | one SELECT. A full batch sends a ``fapiao.reconcile`` for the next waiting  |         |
|       | row at once (another worker takes it while this one asks the cloud)        |         |
| ask   | the confirming BILL.INVOICE.QUERY calls of the batch, concurrently          | –       |
|       | (``push.batch_concurrency`` threads, as ``fapiao.push_batch``); each call's |         |
|       | ledger row written when its answer comes                                    |         |
| apply | ONE transaction: per row (a SAVEPOINT when the batch applies more than     | 1       |
|       | one) its transitions and its inbox settle; a                                |         |
|       | lost race or a late reason to wait defers that row only; then the batch's  |         |
|       | deferred rows and unusable / orphan rows                                   |         |

Which rows a claim takes (``claimed_until``, migration 0008; the sweeper's ``stale_inbox``
reads it the same way):

| row                                           | gathered by any task | taken by its own message |
|-----------------------------------------------|----------------------|--------------------------|
| never claimed (NULL) or ``claimed_until`` past | yes                  | yes                      |
| under a live claim (another task works on it)  | no                   | no: that task does it    |
| deferred, its not-before not reached yet       | no                   | yes                      |

A deferred row keeps the reason in ``error`` (a claim clears it), which is how a not-before
is told from a live claim: the re-sent message of a deferred row IS the retry the deferral
scheduled (its countdown is the backoff; a message a little early, a clock apart, is not
lost), while no other task may take the row before its time. A task that dies leaves its
rows claimed until the lease ends — push lease × (⌈batch / concurrency⌉ + 1), one per round
of calls, as a push batch's — then the sweeper re-offers them.

Per row, as before batching:

| step | what                                                                          |
|------|-------------------------------------------------------------------------------|
| 1    | the inbox row is still ``received`` (else: duplicate task, nothing to do)      |
| 2    | ``parse_callback`` (按票 one object, 按单 array, or BILL.RETURN) — a body that  |
|      | cannot be used → row ``failed`` with the reason                                |
| 3    | per billNo: the current document (``sellerTaxpayerId`` narrows it); none →    |
|      | row ``orphan``. An invoice callback about one ``invoiced`` (or ``reversed``)   |
|      | document that only repeats stored invoices (every value already recorded) →   |
|      | row ``processed`` at                                                           |
|      | once, with a note: no query, nothing to apply (a forged one changes nothing)   |
| 4    | BILL.RETURN → ``returned`` once a confirming query finds the bill gone (with  |
|      | ``confirm_with_query``; still there → nothing changes, the row is processed   |
|      | with a note); invoice callbacks → the invoices, either from a                 |
|      | confirming BILL.INVOICE.QUERY (``callbacks.confirm_with_query``, default) or   |
|      | from the callback itself → verdict → transition (``worker.services.invoices``) |
|      | A ``bizControl`` is recorded with it (``worker.services.quota``: lower only,   |
|      | also for a repeat settled in step 3)                                          |
| 5    | row ``processed`` (linked to the document), ERP notifications owed, in the     |
|      | same transaction (or savepoint) as its transitions                             |

Confirming with a query means a forged callback (the endpoint has no signature) can only
cause a query, never a wrong state: the cloud's own answer is applied, the callback is just
the trigger. INVOICE.CANCEL (作废) and INVOICE.RED (红冲) take the same path: the query of the
bill shows each invoice's ``invoiceStatus`` and ``canRedAmount``, which
``worker.services.invoices`` turns into invoice standings and, when every issued invoice is
voided or reversed, the document's ``reversed_all``. Duplicates and out-of-order callbacks
change nothing because the verdict is computed from every invoice known, an invoice's
standing and the state table only move forward.

Contract dialects (docs/CLOUD-CONTRACT.md §14): callbacks of AES tenants are decoded with each
AES tenant's key (``TenantsFile.callback_codecs``). A 回退 whose confirming query gives an
AMBIGUOUS empty answer (``unknown_bill`` not declared ``error``/``empty_data``) cannot be
confirmed: the callback is unsigned, so no call that changes the cloud (a withdraw probe) may
follow from it; the document is left as it is, the row's note says why, and the stuck alert
counter is raised (an operator checks the console and withdraws the document). Under
``failed_in_query=omitted`` the query lists issued invoices only: failed issuances the
callback reports and the query does not list are applied from the callback only for a tenant
that declares ``failed_in_query = "omitted"``; otherwise the stuck alert is raised (a callback
alone never decides, invariant 4).

Deferred (row stays ``received``, ``attempts`` + 1, ``claimed_until`` = now + the retry table's
``reconcile`` wait, its task sent again with that countdown; after that row's limit the row is
``failed``): the confirming query could not be made, the tenant is paused, the document is
still ``pushing``/``draft`` (the callback overtook the push answer), or its transition lost a
race. Several documents of one callback are applied together: one deferred defers the row.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import Table, case, or_, select, update
from sqlalchemy.orm import Session

from schemas.kingdee import (
    CallbackParseError,
    InvoiceItem,
    ParsedCallback,
    parse_callback_with,
)
from schemas.tenants import TenantConfig
from store.db import autocommit_session, unit_of_work
from store.inbox import settle_callback
from store.invoices import invoices_of
from store.lifecycle import LostRace, TransitionResult, transition
from store.models import CallbackInbox, Document
from store.states import DocumentStatus, Event, InboxState
from worker import metrics, queues
from worker.coalesce import ReconcileCoalescer
from worker.runtime import Followup, Runtime
from worker.services.cloud_call import call_each
from worker.services.erp_outbox import owe_after_issuance, owe_notification
from worker.services.invoices import all_known, apply_invoices
from worker.services.query import QueryAnswer, query_bill
from worker.services.quota import observe_biz_control
from worker.services.tenancy import documents_and_pauses, is_paused_from

__all__ = ["ReconcileOutcome", "reconcile_callbacks"]

log = logging.getLogger(__name__)

_INBOX: Final = cast("Table", CallbackInbox.__table__)
_WAITING_FOR_PUSH: Final = frozenset(
    {DocumentStatus.draft, DocumentStatus.pushing, DocumentStatus.in_doubt}
)
_NOTHING_NEW: Final = "already invoiced with every invoice as reported; nothing to confirm"
_SETTLED: Final = frozenset({DocumentStatus.invoiced, DocumentStatus.reversed})
_RETURNABLE: Final = frozenset(
    {DocumentStatus.pushed, DocumentStatus.invoice_failed, DocumentStatus.withdrawing}
)


@dataclass(frozen=True, slots=True)
class ReconcileOutcome:
    state: str  # the inbox row's state afterwards (or "skipped")
    detail: str = ""
    followups: list[Followup] = field(default_factory=list)


class _Defer(Exception):
    """Not now: leave the row received and try again shortly."""


@dataclass(slots=True)
class _Step:
    """One document of a claimed callback: its confirming query (if any), then its apply."""

    bill_no: str
    items: list[InvoiceItem]
    document: Document
    tenant: TenantConfig | None
    query: bool = False  # a confirming query is owed
    answer: QueryAnswer | None = None
    apply: bool = True  # False: decided without a change (the note says why, if anything)
    note: str | None = None


@dataclass(slots=True)
class _Job:
    """One claimed inbox row through the batch."""

    inbox_id: int
    attempts: int
    raw: bytes
    parsed: ParsedCallback | None = None
    by_bill: dict[str, tuple[str | None, list[InvoiceItem]]] = field(default_factory=dict)
    found: list[tuple[str, list[InvoiceItem], Document | None]] = field(default_factory=list)
    paused: dict[str, bool] = field(default_factory=dict)
    unusable: str | None = None
    nothing_new: bool = False
    steps: list[_Step] = field(default_factory=list)
    defer: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # on a deferred message (Flower)
    outcome: ReconcileOutcome | None = None


def reconcile_callbacks(rt: Runtime, inbox_ids: list[int]) -> list[tuple[int, ReconcileOutcome]]:
    """Claim ``inbox_ids`` and other waiting callbacks, confirm, apply (module docstring).

    Returns ``(inbox id, outcome)`` for the given ids first (in order; ``skipped`` when
    another task holds one or it is done), then for each row gathered.
    """
    own = list(dict.fromkeys(int(i) for i in inbox_ids))
    # Before the claim reads the waiting rows (worker.coalesce: why nothing is left behind).
    ReconcileCoalescer(rt.redis).release_reconcile()
    now = rt.clock()
    size = max(rt.settings.callbacks.batch_size, len(own))
    concurrency = rt.settings.push.batch_concurrency
    lease = rt.policy.push_lease.total_seconds() * (math.ceil(size / concurrency) + 1)
    with autocommit_session(rt.sessions) as session:
        claimed = _claim(session, own, size, now, now + timedelta(seconds=lease))
        jobs = [_Job(int(r.id), int(r.attempts or 0), bytes(r.raw_body)) for r in claimed]
        following = _next_waiting(session, now, [j.inbox_id for j in jobs]) if (
            len(jobs) >= size
        ) else None  # fmt: skip
        _read(rt, session, jobs)
        for job in jobs:
            if job.nothing_new:
                job.outcome = _settle_nothing_new(rt, session, job)
        missing = [i for i in own if i not in {j.inbox_id for j in jobs}]
        skipped = _why_not_claimed(session, missing) if missing else {}
    if following is not None:
        # The batch is full: the next waiting row's task may start now, on another worker.
        rt.dispatch([following])
    for job in jobs:
        _plan(rt, job)
    _ask(rt, [step for job in jobs if job.defer is None for step in job.steps if step.query])
    for job in jobs:
        _judge(rt, job)
    _apply(rt, jobs)

    outcomes = {job.inbox_id: job.outcome for job in jobs if job.outcome is not None}
    results = [
        (i, outcomes.pop(i) if i in outcomes else ReconcileOutcome("skipped", skipped.get(i, "")))
        for i in own
    ]
    return results + list(outcomes.items())


# ------------------------------------------------------------------------------------ claim


def _claimable(now: datetime, own: list[int]) -> Any:
    """Rows a claim may take (module docstring table): past their time, or a task's own row
    that only waits for its not-before (a deferred row: ``error`` holds why)."""
    due = or_(_INBOX.c.claimed_until.is_(None), _INBOX.c.claimed_until <= now)
    if not own:
        return due
    return or_(due, _INBOX.c.id.in_(own) & _INBOX.c.error.is_not(None))


def _claim(
    session: Session, own: list[int], size: int, now: datetime, until: datetime
) -> list[Any]:
    """One UPDATE … RETURNING: the batch's rows, claimed until ``until`` (module docstring)."""
    claimable = _claimable(now, own)
    received = _INBOX.c.state == InboxState.received.value
    order: list[Any] = [_INBOX.c.received_at, _INBOX.c.id]
    if own:
        order.insert(0, case((_INBOX.c.id.in_(own), 0), else_=1))
    # MATERIALIZED: picked once. As a plain ``IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)``
    # PostgreSQL may run the subquery again while updating, and each run, seeing the rows
    # already claimed as taken, picks n more: a batch of 2 claimed 5 in a test.
    chosen = (
        select(_INBOX.c.id)
        .where(received, claimable)
        .order_by(*order)
        .limit(size)
        .with_for_update(skip_locked=True)
        .cte("chosen")
        .prefix_with("MATERIALIZED")
    )
    rows = session.execute(
        update(_INBOX)
        # The conditions again: the row as it is when locked, not as the subquery saw it.
        .where(_INBOX.c.id.in_(select(chosen.c.id)), received, claimable)
        .values(claimed_until=until, error=None)
        .returning(_INBOX.c.id, _INBOX.c.attempts, _INBOX.c.raw_body, _INBOX.c.received_at)
    ).all()
    ranks = {inbox_id: index for index, inbox_id in enumerate(own)}
    return sorted(rows, key=lambda r: (ranks.get(r.id, len(ranks)), r.received_at, r.id))


def _next_waiting(session: Session, now: datetime, claimed: list[int]) -> Followup | None:
    """A ``fapiao.reconcile`` for the oldest row still waiting after a full batch."""
    row = session.execute(
        select(_INBOX.c.id, Document.bill_no, Document.tenant)
        .outerjoin(Document, Document.id == _INBOX.c.document_id)
        .where(
            _INBOX.c.state == InboxState.received.value,
            _claimable(now, []),
            _INBOX.c.id.not_in(claimed),
        )
        .order_by(_INBOX.c.received_at, _INBOX.c.id)
        .limit(1)
    ).first()
    if row is None:
        return None
    kwargs: dict[str, Any] = {"inbox_id": int(row.id)}
    if row.bill_no is not None:
        kwargs["bill_no"], kwargs["tenant"] = row.bill_no, row.tenant
    return Followup(queues.RECONCILE, kwargs)


def _why_not_claimed(session: Session, inbox_ids: list[int]) -> dict[int, str]:
    rows = session.execute(
        select(_INBOX.c.id, _INBOX.c.state).where(_INBOX.c.id.in_(inbox_ids))
    ).all()
    why = {i: "no such callback" for i in inbox_ids}
    for row in rows:
        why[int(row.id)] = (
            "claimed by another reconcile task"
            if row.state == InboxState.received.value
            else f"callback already {row.state}"
        )
    return why


def _read(rt: Runtime, session: Session, jobs: list[_Job]) -> None:
    """Parse every row; the documents of all their bills and the tenants' pause flags in one
    statement; the nothing-new shortcut (step 3)."""
    codecs = rt.tenants.callback_codecs()
    bill_nos: set[str] = set()
    for job in jobs:
        try:
            job.parsed = parse_callback_with(job.raw, codecs)
        except CallbackParseError as exc:
            job.unusable = str(exc)
            continue
        job.by_bill = _items_by_bill(job.parsed)
        bill_nos.update(job.by_bill)
    if not bill_nos:
        return
    candidates, paused_flags = _documents_and_pauses(session, sorted(bill_nos))
    for job in jobs:
        if job.parsed is None:
            continue
        job.found = [
            (bill_no, items, _find_document(candidates.get(bill_no, []), bill_no, seller))
            for bill_no, (seller, items) in job.by_bill.items()
        ]
        job.paused = {
            d.tenant: _is_paused(rt, d.tenant, paused_flags) for _, _, d in job.found if d
        }
        job.nothing_new = _nothing_new(session, job.parsed, job.found)


def _items_by_bill(parsed: ParsedCallback) -> dict[str, tuple[str | None, list[InvoiceItem]]]:
    grouped: dict[str, tuple[str | None, list[InvoiceItem]]] = {}
    if parsed.returned is not None:
        seller = parsed.returned.sellerTaxpayerId or None
        grouped[parsed.returned.billNo] = (seller, [])
    for item in parsed.items:
        seller, items = grouped.setdefault(item.billNo, (item.sellerTaxpayerId or None, []))
        items.append(item)
    return grouped


def _nothing_new(
    session: Session,
    parsed: ParsedCallback,
    found: list[tuple[str, list[InvoiceItem], Document | None]],
) -> bool:
    """An invoice callback about one ``invoiced`` document whose every invoice is stored
    with every value it reports (``worker.services.invoices.all_known``)."""
    if parsed.style == "return" or len(found) != 1:
        return False
    _, items, document = found[0]
    if document is None or document.status not in _SETTLED:
        return False
    return all_known(document, invoices_of(session, document.id), items)


def _documents_and_pauses(
    session: Session, bill_nos: list[str]
) -> tuple[dict[str, list[Document]], dict[str, bool]]:
    """The current revisions with these billNos (``store.queries.documents_by_bill_no`` for
    several bills) and the ``tenant_state.paused`` flag of their tenants, in one statement."""
    rows = documents_and_pauses(
        session, Document.bill_no.in_(bill_nos), Document.is_current.is_(True)
    )
    documents: dict[str, list[Document]] = {}
    paused: dict[str, bool] = {}
    for document, tenant_paused in rows:
        documents.setdefault(document.bill_no, []).append(document)
        paused[document.tenant] = tenant_paused
    return documents, paused


def _find_document(candidates: list[Document], bill_no: str, seller: str | None) -> Document | None:
    if seller:
        wanted = seller.strip().upper()
        candidates = [d for d in candidates if d.seller_tax_id.upper() == wanted]
    if len(candidates) > 1:
        log.error(
            "callback matches several documents",
            extra={"bill_no": bill_no, "document_ids": [d.id for d in candidates]},
        )
        return None
    return candidates[0] if candidates else None


def _is_paused(rt: Runtime, tenant_name: str, paused_in_database: dict[str, bool]) -> bool:
    """``is_tenant_paused`` from a ``tenant_state`` flag already read."""
    tenant = rt.tenant(tenant_name)
    return tenant is not None and is_paused_from(tenant, paused_in_database.get(tenant_name, False))


# ------------------------------------------------------------------------------------- plan


def _plan(rt: Runtime, job: _Job) -> None:
    """The row's steps and the reasons to wait known before any call (step 4's checks)."""
    if job.parsed is None or job.outcome is not None:
        return
    confirm = rt.settings.callbacks.confirm_with_query
    try:
        for bill_no, items, document in job.found:
            if document is None:
                continue
            job.labels = {"bill_no": bill_no, "tenant": document.tenant}
            tenant = rt.tenant(document.tenant)
            step = _Step(bill_no, items, document, tenant)
            status = DocumentStatus(document.status)
            if job.parsed.style == "return":
                if status in _WAITING_FOR_PUSH:
                    raise _Defer(f"document is {status}; waiting for the push answer")
                if status not in _RETURNABLE and status is not DocumentStatus.returned:
                    log.warning(
                        "return callback for a document that cannot be returned",
                        extra={"document_id": document.id, "status": status.value},
                    )
                    step.apply, step.note = False, f"document is {status.value}; 回退 not applied"
                elif status in _RETURNABLE and confirm:
                    step.query = True
            else:
                if status in (DocumentStatus.draft, DocumentStatus.pushing):
                    raise _Defer(f"document is {status}; waiting for the push answer")
                # The query's ledger row is written when its answer comes (the client's
                # ledger, one autocommit INSERT), not held for the apply transaction: held
                # for a batch, a worker killed before that commit would lose every row of
                # the batch's calls (bench.chaos's ledger check), not just one in flight.
                step.query = confirm
            if step.query or job.parsed.style != "return":
                if tenant is None:
                    raise _Defer(f"tenant {document.tenant!r} is not configured")
                if job.paused.get(document.tenant, False):
                    raise _Defer(f"tenant {tenant.name} is paused")
            job.steps.append(step)
    except _Defer as exc:
        job.defer = str(exc)
        for step in job.steps:
            step.query = False


def _ask(rt: Runtime, steps: list[_Step]) -> None:
    """The batch's confirming queries, at most ``push.batch_concurrency`` at a time.

    Invariant 4: the callback is unsigned, so it only triggers a question to the cloud.
    """

    def one(step: _Step) -> QueryAnswer:
        assert step.tenant is not None
        document = step.document
        try:
            return query_bill(
                rt, step.tenant, bill_no=document.bill_no, seller_tax_id=document.seller_tax_id,
                document_id=document.id, attempt=document.push_attempt,
            )  # fmt: skip
        except Exception as exc:
            log.exception("confirming query failed", extra={"document_id": document.id})
            return QueryAnswer("retry", f"{type(exc).__name__}: {exc}")

    for step, answer in zip(steps, call_each(rt, one, steps), strict=True):
        step.answer = answer


def _judge(rt: Runtime, job: _Job) -> None:
    """Read each answer: what to apply, what to note, or why the row waits."""
    if job.defer is not None or job.parsed is None:
        return
    try:
        for step in job.steps:
            if step.answer is None:
                continue
            if job.parsed.style == "return":
                _judge_return(step, step.answer)
            else:
                _judge_invoices(step, step.answer, job.parsed)
    except _Defer as exc:
        job.defer = str(exc)


def _judge_return(step: _Step, answer: QueryAnswer) -> None:
    document = step.document
    status = DocumentStatus(document.status)
    if answer.kind == "present" and answer.ambiguous:
        # unknown_bill=empty_list (or undeclared): the empty answer may be the cloud's way
        # of saying "no such bill" — or the bill is live. The callback is unsigned
        # (invariant 4), so nothing that changes the cloud (a withdraw probe) may follow
        # from it: the document stays as it is, and the operator is alerted.
        metrics.stuck_documents().labels(status=status.value).inc()
        log.warning(
            "return callback cannot be confirmed: ambiguous empty query answer",
            extra={"document_id": document.id, "bill_no": document.bill_no},
        )
        step.apply, step.note = (
            False,
            (
                "回退 not confirmed: BILL.INVOICE.QUERY answers an empty invoiceList, which"
                " under this tenant's unknown_bill reading may mean the bill is gone or still"
                " there; check the cloud console and withdraw the document if it is gone"
            ),
        )
    elif answer.kind == "present":
        log.warning(
            "return callback not confirmed: the cloud still has the bill",
            extra={"document_id": document.id, "bill_no": document.bill_no},
        )
        step.apply = False
        step.note = "回退 not confirmed: BILL.INVOICE.QUERY still finds the bill; unchanged"
    elif answer.kind != "absent":
        raise _Defer(f"confirming query failed: {answer.reason}")


def _judge_invoices(step: _Step, answer: QueryAnswer, parsed: ParsedCallback) -> None:
    document = step.document
    if answer.kind == "absent":
        log.warning(
            "callback not confirmed: the cloud does not know the bill",
            extra={"document_id": document.id, "bill_no": document.bill_no},
        )
        step.apply = False
        return
    if answer.kind != "present":
        raise _Defer(f"confirming query failed: {answer.reason}")
    assert step.tenant is not None
    step.items = answer.items + _failures_the_query_omits(step.tenant, step.items, answer.items)


def _failures_the_query_omits(
    tenant: TenantConfig, reported: list[InvoiceItem], listed: list[InvoiceItem]
) -> list[InvoiceItem]:
    """Failed issuances the callback reports and the query does not list, to apply anyway.

    Dialect ``failed_in_query=omitted``: the query lists issued invoices only, so a failure is
    known from its callback alone. Only a tenant that DECLARES ``omitted`` gets them applied
    from the (unsigned) callback; otherwise invariant 4 holds (a callback is only a trigger)
    and an unconfirmed failure raises the stuck alert instead. A failure never removes an
    issued invoice: a later one still moves the document on.
    """
    known = {item.dedupe_key for item in listed}
    omitted = [i for i in reported if i.is_failed and i.dedupe_key not in known]
    if not omitted or tenant.declares("failed_in_query", "omitted"):
        return omitted
    if not listed:
        metrics.stuck_documents().labels(status="pushed").inc()
        log.warning(
            "callback reports failed issuance the query does not show",
            extra={"tenant": tenant.name, "bill_no": omitted[0].billNo},
        )
    return []


# ------------------------------------------------------------------------------------ apply


class _Rollback(Exception):
    """The batch's only applied row must wait: its transaction is rolled back whole."""


def _apply(rt: Runtime, jobs: list[_Job]) -> None:
    """The batch's writes in one transaction (module docstring). A row applying documents
    gets a SAVEPOINT when others share the transaction; alone, a reason to wait rolls the
    transaction back and the deferral is written in one of its own."""
    jobs = [job for job in jobs if job.outcome is None]
    if not jobs:
        return
    applying = [job for job in jobs if _applies(job)]
    if any(job.parsed is not None and job.parsed.bizControl is not None for job in applying):
        with autocommit_session(rt.sessions) as session:
            _observe_quotas(rt, session, applying)
    try:
        with unit_of_work(rt.sessions) as session:
            for job in applying:
                _apply_job(rt, session, job, nested=len(applying) > 1)
            _settle_rest(rt, session, jobs)
    except _Rollback:
        with unit_of_work(rt.sessions) as session:
            _settle_rest(rt, session, jobs)


def _observe_quotas(rt: Runtime, session: Session, jobs: list[_Job]) -> None:
    """The ``bizControl`` of the batch's confirmed invoice callbacks, each upsert committed on
    its own before the batch's transaction, in (tenant, seller) order.

    Not inside that transaction: a quota row locked there stays locked while the batch writes
    its documents, and a push batch (drafts, then ``QuotaGate``'s quota rows) or another
    reconcile batch deadlocked with it (70 per 1,000 documents in bench.throughput when each
    row took its quota row in turn). Lower only (``store.quota``), so recording it before
    the invoices is what the one-callback path did, and one recorded for a row that is then
    deferred is recorded again, unchanged, when the row is retried.
    """
    observed = [
        ((step.tenant.name, step.document.seller_tax_id), job.parsed.bizControl)
        for job in jobs
        if job.parsed is not None and job.parsed.style != "return"
        for step in job.steps
        if step.apply and step.tenant is not None and job.parsed.bizControl is not None
    ]
    observed.sort(key=lambda pair: pair[0])
    for (tenant, seller), biz in observed:
        observe_biz_control(rt, session, tenant, seller, biz)


def _applies(job: _Job) -> bool:
    return (
        job.defer is None
        and job.parsed is not None
        and (job.nothing_new or any(d is not None for _, _, d in job.found))
    )


def _apply_job(rt: Runtime, session: Session, job: _Job, *, nested: bool) -> None:
    savepoint = session.begin_nested() if nested else None
    try:
        job.outcome = _apply_row(rt, session, job)
    except (_Defer, LostRace) as exc:
        if savepoint is None:
            job.defer = str(exc)
            raise _Rollback from exc
        savepoint.rollback()
        job.defer = str(exc)
        return
    except Exception:
        if savepoint is None:
            raise
        # One row's bug must not take the batch's other rows with it: this row waits.
        savepoint.rollback()
        log.exception("callback not applied", extra={"inbox_id": job.inbox_id})
        job.defer = "unexpected error while applying; see the worker log"
        return
    if savepoint is not None:
        savepoint.commit()


def _settle_nothing_new(rt: Runtime, session: Session, job: _Job) -> ReconcileOutcome:
    """Step 3: a repeat of what is stored (a second callback style, a redelivery, a callback
    after the poller found the invoices), settled in the read session: no query, no
    transaction (autocommit on PostgreSQL, as the read)."""
    parsed = job.parsed
    assert parsed is not None
    document = job.found[0][2]
    assert document is not None
    if parsed.bizControl is not None:
        # The poller may have applied the invoices first; the quota is still news.
        observe_biz_control(rt, session, document.tenant, document.seller_tax_id, parsed.bizControl)
    settle_callback(
        session, job.inbox_id, InboxState.processed, document_id=document.id,
        error=_NOTHING_NEW, now=rt.clock(),
    )  # fmt: skip
    return ReconcileOutcome(InboxState.processed.value, _NOTHING_NEW)


def _apply_row(rt: Runtime, session: Session, job: _Job) -> ReconcileOutcome:
    parsed = job.parsed
    assert parsed is not None
    now = rt.clock()
    followups: list[Followup] = []
    notes: list[str] = []
    for step in job.steps:
        if step.note:
            notes.append(f"{step.bill_no}: {step.note}" if parsed.style == "return" else step.note)
        if not step.apply:
            continue
        if parsed.style == "return":
            followups += _apply_return(rt, session, step, parsed)
        else:
            followups += _apply_invoices(rt, session, step, parsed)
    note = "; ".join(notes) or None
    settle_callback(
        session, job.inbox_id, InboxState.processed, document_id=job.steps[0].document.id,
        error=note, now=now,
    )  # fmt: skip
    return ReconcileOutcome(InboxState.processed.value, note or "", followups)


def _apply_return(
    rt: Runtime, session: Session, step: _Step, parsed: ParsedCallback
) -> list[Followup]:
    """BILL.RETURN → ``returned``, once the cloud confirmed the bill left it (or trusting)."""
    reason = (parsed.returned.reason if parsed.returned else "") or "no reason given"
    document = step.document
    result = transition(
        session,
        document.id,
        Event.returned,
        actor=rt.actor,
        expected_status=DocumentStatus(document.status),
        expected_version=document.version,
        reason=f"the cloud handed the bill back (回退): {reason}",
        changes={"last_error_message": reason},
    )
    return owe_notification(rt, session, document.id, [result], reason=reason)


def _apply_invoices(
    rt: Runtime, session: Session, step: _Step, parsed: ParsedCallback
) -> list[Followup]:
    """Apply the (confirmed) invoices. The document is read once here, ``populate_existing``
    (not before the query: the claim's read served the checks), and its transition is
    compare-and-set."""
    assert step.tenant is not None
    tenant = step.tenant
    document_id = step.document.id
    source = f"callback {parsed.interfaceCode} ({parsed.style})"
    if step.answer is not None:
        source += " confirmed by BILL.INVOICE.QUERY"
    document = session.get(Document, document_id, populate_existing=True)
    assert document is not None
    results: list[TransitionResult] = []
    if document.status == DocumentStatus.in_doubt:
        # An invoice for the bill proves the push landed.
        results.append(
            transition(
                session,
                document_id,
                Event.accepted,
                actor=rt.actor,
                expected_status=DocumentStatus.in_doubt,
                expected_version=document.version,
                attempt=document.push_attempt,
                reason=f"{source} shows the bill in the cloud",
                changes={"next_poll_at": rt.clock()},
            )
        )
        session.refresh(document)
    # The callback's bizControl was recorded just before this transaction
    # (``_observe_quotas``), before the invoices: an issuance refused for quota has the last word.
    more, verdict = apply_invoices(rt, session, document, step.items, reason=source, just_read=True)
    results += more
    followups = owe_notification(rt, session, document_id, results, tenant=tenant.name)
    followups += owe_after_issuance(rt, session, verdict.after)
    return followups


def _settle_rest(rt: Runtime, session: Session, jobs: list[_Job]) -> None:
    """Rows not applied: unusable → ``failed``, no document → ``orphan``, a reason to wait
    → deferred (``attempts`` + 1, not before the retry's wait) or, past the retry table's
    limit, ``failed``."""
    now = rt.clock()
    retry = rt.policy.retries.reconcile
    for job in jobs:
        if job.outcome is not None and job.defer is None:
            continue
        if job.unusable is not None:
            job.outcome = _finish(session, job, InboxState.failed, job.unusable, now)
        elif job.defer is not None:
            attempts = job.attempts + 1
            if retry.exhausted(attempts):
                why = f"gave up after {attempts} tries: {job.defer}"
                job.outcome = _finish(session, job, InboxState.failed, why, now, attempts)
                continue
            wait = retry.delay(attempts, rt.rng).total_seconds()
            session.execute(
                update(_INBOX)
                .where(_INBOX.c.id == job.inbox_id)
                .values(
                    attempts=attempts,
                    error=job.defer,
                    claimed_until=now + timedelta(seconds=wait),
                )
            )
            followup = Followup(queues.RECONCILE, {"inbox_id": job.inbox_id, **job.labels}, wait)
            job.outcome = ReconcileOutcome(InboxState.received.value, job.defer, [followup])
        elif job.outcome is None:
            bills = ", ".join(sorted(job.by_bill)) or "(none)"
            why = f"no document for billNo {bills}"
            job.outcome = _finish(session, job, InboxState.orphan, why, now)


def _finish(
    session: Session,
    job: _Job,
    state: InboxState,
    error: str | None,
    now: datetime,
    attempts: int | None = None,
) -> ReconcileOutcome:
    try:
        settle_callback(session, job.inbox_id, state, error=error, now=now)
    except LookupError:
        return ReconcileOutcome("skipped", "callback row vanished")
    if attempts is not None:
        session.execute(update(_INBOX).where(_INBOX.c.id == job.inbox_id).values(attempts=attempts))
    log.warning(
        "callback not applied",
        extra={"inbox_id": job.inbox_id, "state": state.value, "error": error},
    )
    return ReconcileOutcome(state.value, error or "")
