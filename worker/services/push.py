"""Push documents to the cloud (BILL.PUSH, one bill per call) and apply the answers.

``push_documents(rt, document_ids)`` is the one push: task ``fapiao.push`` runs it for one id
(a batch of one), ``fapiao.push_batch`` for up to ``push.batch_size``. Every document gets
the outcome below; the fixed costs are paid once per batch. Both tasks *gather*: the batch is
filled up to ``push.batch_size`` with other due drafts of its tenants (``_gather``), so a
stream of one-document requests is pushed in a few batches, not one task per document.

Steps, per document

| step | what                                                   | if not                       |
|------|--------------------------------------------------------|------------------------------|
| 1    | the document exists and is a ``draft``                 | ``skipped`` (duplicate msg)  |
| 2    | its tenant is configured and not paused                | ``paused``: stays draft      |
|      |                                                        | (unknown tenant: ``failed``) |
| 3    | its stored payload is a bill (``schemas.erp.Bill``)    | ``failed`` with the reason   |
| 3b   | the known credit quota (``store.quota``) covers its    | ``held``: stays draft,       |
|      | 价税合计 after what is in flight                         | reason ``quota_held``, due   |
|      |                                                        | when the hold ends           |
| 4    | claim draft→pushing (compare-and-set, attempt+1,       | ``skipped`` (lost the race)  |
|      | lease); steps 1–4 are one transaction; commit          |                              |
| 5    | token (cache, single-flight) and BILL.PUSH; the ledger |                              |
|      | row is committed before the request leaves             |                              |
| 6    | the retry policy maps the outcome to one transition    |                              |

Outcome → transition (``worker.retry_policy`` decides; this module only writes)

| action          | event     | document      | extra                                         |
|-----------------|-----------|---------------|-----------------------------------------------|
| ``apply``       | accepted  | pushed        | first poll due after ``poll_schedule[0]``, or |
|                 |           |               | after the callbacks' poll grace when the      |
|                 |           |               | cloud's callback is already stored (it        |
|                 |           |               | overtook the answer; its reconcile queries)   |
| ``reject``      | refused   | rejected      | the cloud's errorCode + message               |
| ``query``       | unsure    | in_doubt      | ``fapiao.resolve_in_doubt`` soon              |
| ``retry``       | retry     | draft         | ``next_attempt_at`` = now + jittered backoff  |
| ``give_up``     | give_up   | failed        | retries exhausted, last error kept            |
| ``pause_tenant``| retry     | draft         | reason names the setting; tenant paused; the  |
|                 |           |               | document waits, pushed again after resume     |

A transient failure while getting the token (nothing sent) counts like a transient push
answer; a refused token (bad credentials) is ``pause_tenant``. The answer is applied with
``attempt`` = this claim's number: if the sweeper meanwhile declared the lease expired
(``in_doubt``), an ``accepted`` still lands (in_doubt → pushed); anything else is left to
the in-doubt resolver.

Costs, per batch

| step | what                                                   | per                          |
|------|--------------------------------------------------------|------------------------------|
| 1    | ONE transaction: read every document (one SELECT),     | batch                        |
|      | steps 1–3 per document (tenant pauses read once per    |                              |
|      | tenant), step 3b (ONE SELECT of the batch's quota rows,|                              |
|      | a reservation SUM per tenant/seller with a known quota,|                              |
|      | ONE UPDATE of the held drafts),                        |                              |
|      | ONE bulk claim (``claim_many_for_push``: one           |                              |
|      | compare-and-set UPDATE, one multi-row event INSERT),   |                              |
|      | ``give_up`` of bad payloads / unknown tenants; commit  |                              |
| 2    | steps 5–6: one BILL.PUSH per bill, run CONCURRENTLY by |  document, at most           |
|      | a thread pool; the calls' ledger rows were written by  | ``push.batch_concurrency``   |
|      | ONE INSERT in step 1's transaction, their completions  | at a time                    |
|      | go in ONE transaction after the last call returns      |                              |
|      | (``worker.ledger.PushBatchLedger``)                    |                              |
| 3    | ONE transaction applies every answer, each a compare-  | batch                        |
|      | and-set ``transition`` (``expected_status=pushing``,   |                              |
|      | ``attempt``); a lost race is handled per document (an  |                              |
|      | ``accepted`` still lands on ``in_doubt``, else the     |                              |
|      | document is skipped) and never undoes the others; then |                              |
|      | ONE UPDATE defers the first poll of every ``pushed``   |                              |
|      | one whose callback is already stored (after the writes:|                              |
|      | a callback stored meanwhile is seen, a later one finds |                              |
|      | ``pushed`` and the receiver defers)                    |                              |
| 4    | follow-ups (retries, in-doubt queries, ERP             | after commit, by the task    |
|      | notifications) are sent after the commit               |                              |

The lease (``_lease``): one bill to send is claimed for one ``push_lease`` (its call leaves
as soon as the claim commits; ``push_lease`` has room for the token and the call). Several
are claimed for ``push_lease`` × (⌈sendable / concurrency⌉ + 1): one per round of calls,
plus one for the wait before the first round. A call whose turn comes when less than one
``push_lease`` is left is not sent (``transient``: back to draft, retried): it could not
finish inside its lease. If a call raises unexpectedly (a database outage while writing its
ledger row; a Redis outage is a transient "not sent": Redis is only used before the bill
leaves) its document is left ``pushing``; if step 3 fails as a whole, every document of the
batch stays ``pushing``. In both cases the lease expires, the sweeper makes them
``in_doubt`` and a BILL.INVOICE.QUERY settles each one — the same safety net as a worker
dying mid-push.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from time import monotonic
from typing import Any, Final

from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from schemas.cloud_contract import ErrorCode, OutcomeClass
from schemas.erp import Bill
from schemas.kingdee import InterfaceCode
from schemas.tenants import TenantConfig
from store.claims import claim_many_for_push
from store.db import unit_of_work
from store.inbox import defer_polls_of_waiting
from store.lifecycle import LostRace, TransitionResult, transition
from store.models import CloudCall, Document, DocumentEvent
from store.quota import QuotaGate, hold_documents
from store.states import DocumentStatus, Event, EventOutcome
from worker import queues
from worker.coalesce import PushCoalescer
from worker.kingdee import (
    PENDING_OUTCOME,
    CallContext,
    CloudConfigError,
    CloudResult,
    CloudTransientError,
    config_reason,
)
from worker.ledger import PrewrittenPush, PushBatchLedger, SqlCallLedger, prewrite_pushes
from worker.retry_policy import Action, Decision, decide_push
from worker.runtime import Followup, Runtime
from worker.services.cloud_call import call_each, call_with_token
from worker.services.erp_outbox import owe_notification
from worker.services.red_refusal import explain_red_refusal
from worker.services.tenancy import is_tenant_paused, pause_tenant

__all__ = ["PushOutcome", "push_documents"]

log = logging.getLogger(__name__)

# The cloud may need a moment to make a just-pushed bill queryable.
FIRST_IN_DOUBT_QUERY: Final = timedelta(seconds=2)


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """What happened, for the task's return value and the tests."""

    status: str  # skipped / paused / the document's new state
    detail: str = ""
    followups: list[Followup] = field(default_factory=list)
    # Set on the outcomes of gathered documents (``gather``), which have no id in the call.
    document_id: int | None = None
    bill_no: str = ""


@dataclass(frozen=True, slots=True)
class _Answer:
    outcome: OutcomeClass
    error_code: str | None
    message: str
    auth_refreshed: bool
    config_reason: str | None = None


@dataclass(slots=True)
class _Pending:
    """A document of a batch that passed steps 1–2 (its bill or the reason it has none)."""

    index: int
    document_id: int
    bill_no: str
    tenant: str
    bill: dict[str, Any] | None
    problem: str | None
    attempt: int = 0
    prewritten: PrewrittenPush | None = None  # its BILL.PUSH ledger row, written at claim


def push_documents(
    rt: Runtime, document_ids: Sequence[int], *, gather: bool = False
) -> list[PushOutcome]:
    """Push each of ``document_ids`` once (module docstring); one id is a batch of one.

    One ``PushOutcome`` per id, in order. An id listed twice is pushed once (the copy is
    skipped). With ``gather`` (the tasks), the batch is filled up to ``push.batch_size``
    with other due drafts of the same tenants (``_gather``); their outcomes follow, each
    naming its ``document_id`` and ``bill_no``.
    """
    outcomes: list[PushOutcome | None] = [None] * len(document_ids)
    gathering = _Gathering() if gather else None
    started = monotonic()
    calls, deadline, ledger = _claim(rt, document_ids, outcomes, started, gathering=gathering)
    answers = _call_all(rt, calls, deadline=deadline, ledger=ledger)
    ledger.flush()  # the calls' ledger rows completed before their answers are applied
    _apply_answers(rt, calls, answers, outcomes)
    assert all(outcome is not None for outcome in outcomes)
    done = [outcome for outcome in outcomes if outcome is not None]
    if gathering is None:
        return done
    given = len(document_ids)
    for offset, (document_id, bill_no) in enumerate(gathering.gathered):
        done[given + offset] = replace(
            done[given + offset], document_id=document_id, bill_no=bill_no
        )
    if gathering.followups and done:
        done[0] = replace(done[0], followups=done[0].followups + gathering.followups)
    return done


@dataclass(slots=True)
class _Gathering:
    """What ``_gather`` needs from step 1 and leaves for the caller."""

    paused: dict[str, bool] = field(default_factory=dict)  # by tenant, read once
    gathered: list[tuple[int, str]] = field(default_factory=list)  # (id, bill_no)
    followups: list[Followup] = field(default_factory=list)  # the next batch's push


def _lease(push_lease: float, sendable: int, concurrency: int) -> float:
    """Seconds the claim of ``sendable`` bills lasts (module docstring, "The lease")."""
    if sendable <= 1:
        return push_lease
    return push_lease * (math.ceil(sendable / concurrency) + 1)


def _claim(
    rt: Runtime,
    document_ids: Sequence[int],
    outcomes: list[PushOutcome | None],
    started: float,
    *,
    gathering: _Gathering | None = None,
) -> tuple[list[_Pending], float, PushBatchLedger]:
    """Step 1 in one transaction: the documents to call for, the monotonic time after
    which a call may no longer start, and the calls' ledger (their ``pending`` rows written
    in this transaction: committed before any request leaves). Fills ``outcomes`` of the
    others (with ``gathering``: the gathered documents' slots are appended to ``outcomes``,
    their ids and bill numbers to ``gathering.gathered``)."""
    push_lease = rt.policy.push_lease.total_seconds()
    calls: list[_Pending] = []
    with unit_of_work(rt.sessions) as session:
        ids = list(document_ids)
        if gathering is not None:
            ids += _gather(rt, session, document_ids, gathering)
            outcomes.extend([None] * (len(ids) - len(document_ids)))
        candidates = _candidates(rt, session, ids, outcomes, gathering=gathering)
        sendable = sum(1 for c in candidates if c.problem is None)
        lease_seconds = _lease(push_lease, sendable, rt.settings.push.batch_concurrency)
        claims = claim_many_for_push(
            session,
            [c.document_id for c in candidates],
            lease_seconds,
            now=rt.clock(),
            actor=rt.actor,
        )
        for pending in candidates:
            claim = claims.get(pending.document_id)
            if claim is None:
                outcomes[pending.index] = PushOutcome("skipped", "another worker claimed it")
                continue
            pending.attempt = claim.push_attempt
            if pending.problem is not None:
                outcomes[pending.index] = _give_up_unpushable(
                    rt, session, pending.document_id, pending.attempt, pending.problem,
                    pending.tenant,
                )  # fmt: skip
                continue
            known = rt.tenant(pending.tenant)
            assert known is not None
            doubt = _unproven_earlier_push(session, known, pending.document_id, pending.attempt)
            if doubt is not None:
                outcomes[pending.index] = _query_first(
                    rt, session, pending.document_id, pending.bill_no, pending.tenant,
                    pending.attempt, doubt,
                )  # fmt: skip
            else:
                calls.append(pending)
        prewritten = prewrite_pushes(session, [(c.tenant, c.document_id, c.attempt) for c in calls])
    for pending in calls:
        pending.prewritten = prewritten[pending.document_id]
    ledger = PushBatchLedger(SqlCallLedger(rt.sessions), list(prewritten.values()))
    # A lone bill's call leaves right after the commit: its lease has no round to wait for.
    deadline = math.inf if sendable <= 1 else started + lease_seconds - push_lease
    return calls, deadline, ledger


def _candidates(
    rt: Runtime,
    session: Session,
    document_ids: Sequence[int],
    outcomes: list[PushOutcome | None],
    gathering: _Gathering | None = None,
) -> list[_Pending]:
    """Steps 1–3 for every id (one SELECT; tenant pauses read once per tenant): the drafts
    to claim, each with its bill or the reason it has none. Fills ``outcomes`` of the rest."""
    rows = {
        row.id: row
        for row in session.execute(
            select(
                Document.id,
                Document.status,
                Document.tenant,
                Document.seller_tax_id,
                Document.bill_no,
                Document.payload,
                Document.total_incl_tax,
                Document.total_amount,
            ).where(Document.id.in_(sorted(set(document_ids))))
        )
    }
    paused: dict[str, bool] = {} if gathering is None else gathering.paused
    candidates: list[_Pending] = []
    amounts: dict[int, tuple[str, Decimal | None]] = {}
    seen: set[int] = set()
    for index, document_id in enumerate(document_ids):
        if document_id in seen:
            outcomes[index] = PushOutcome("skipped", "listed twice in the batch")
            continue
        seen.add(document_id)
        row = rows.get(document_id)
        if row is None:
            outcomes[index] = PushOutcome("skipped", "no such document")
            continue
        if row.status != DocumentStatus.draft:
            outcomes[index] = PushOutcome("skipped", f"document is {row.status}, not draft")
            continue
        tenant = rt.tenant(row.tenant)
        if tenant is not None:
            if tenant.name not in paused:
                paused[tenant.name] = is_tenant_paused(rt, session, tenant)
            if paused[tenant.name]:
                outcomes[index] = PushOutcome("paused", f"tenant {tenant.name} is paused")
                continue
        bill, problem = _bill_or_problem(row.tenant, tenant is not None, row.payload)
        candidates.append(_Pending(index, document_id, row.bill_no, row.tenant, bill, problem))
        incl = row.total_incl_tax if row.total_incl_tax is not None else row.total_amount
        amounts[document_id] = (row.seller_tax_id, incl)
    return _quota_gate(rt, session, candidates, amounts, outcomes)


def _quota_gate(
    rt: Runtime,
    session: Session,
    candidates: list[_Pending],
    amounts: dict[int, tuple[str, Decimal | None]],
    outcomes: list[PushOutcome | None],
) -> list[_Pending]:
    """Drafts the known credit quota cannot cover wait (``store.quota``): still ``draft``, due
    when the hold ends, nothing sent, nothing failed. One SELECT of the batch's quota rows;
    a reservation SUM only per (tenant, seller) with a known quota."""
    sendable = [c for c in candidates if c.problem is None]
    if not sendable:
        return candidates
    now = rt.clock()
    gate = QuotaGate.load(session, {(c.tenant, amounts[c.document_id][0]) for c in sendable}, now)
    admitted: list[_Pending] = []
    held: dict[tuple[datetime, str], list[int]] = {}
    for pending in candidates:
        if pending.problem is None:
            seller, amount = amounts[pending.document_id]
            admission = gate.admit(pending.tenant, seller, amount)
            if admission is not None:
                held.setdefault((admission.until, admission.message), []).append(
                    pending.document_id
                )
                outcomes[pending.index] = PushOutcome("held", admission.message)
                continue
        admitted.append(pending)
    for (until, message), ids in held.items():
        hold_documents(session, ids, until=until, message=message, now=now)
        log.info("push held for quota", extra={"document_ids": ids, "until": until.isoformat()})
    gate.write_holds()
    return admitted


def _gather(
    rt: Runtime, session: Session, document_ids: Sequence[int], gathering: _Gathering
) -> list[int]:
    """Other waiting drafts of the batch's tenants, to fill it up to ``push.batch_size``
    (step 1 then reads them with the batch's own documents, as one batch).

    Under a stream of one-document requests the first task to run claims whatever else is
    waiting of its tenant, so the worker runs a few batches instead of one task per
    document; the intake sends a tenant's next ``fapiao.push`` only once this task has
    released the tenant's key (``worker.coalesce``, which says why no draft is left
    behind), and the gathered drafts' own messages, if any, find them claimed. When the
    batch is full, a ``fapiao.push`` for the next waiting draft goes out after the commit.

    Gathered: the tenants of every document read (its own may be claimed already), known
    and not paused; oldest first; drafts never pushed or whose retry is due (a retry waits
    its backoff; a never-pushed draft counts even when the sweeper re-sent its message and
    moved ``next_attempt_at`` on, else a backlog's oldest drafts would be passed over; not
    one that carries a reason to wait, ``last_error_code``, until it is due).
    ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite serialises writers) passes over drafts
    another worker's claim holds right now; the claim's compare-and-set decides either way.
    """
    room = rt.settings.push.batch_size - len(document_ids)
    if room <= 0:
        return []
    tenants: list[str] = []
    names = session.execute(
        select(Document.tenant).where(Document.id.in_(sorted(set(document_ids)))).distinct()
    ).scalars()
    for name in sorted(names):
        known = rt.tenant(name)
        if known is None:
            continue
        if name not in gathering.paused:
            gathering.paused[name] = is_tenant_paused(rt, session, known)
        if not gathering.paused[name]:
            tenants.append(name)
    if not tenants:
        return []
    PushCoalescer(rt.redis).release(tenants)  # before the read (worker.coalesce)
    due = list(
        session.execute(
            select(Document.id, Document.bill_no, Document.tenant)
            .where(
                Document.status == DocumentStatus.draft.value,
                Document.tenant.in_(tenants),
                or_(
                    Document.next_attempt_at <= rt.clock(),
                    # Never pushed and no reason recorded to wait (a hold sets one): only the
                    # sweeper's re-send moved next_attempt_at on.
                    and_(Document.push_attempt == 0, Document.last_error_code.is_(None)),
                ),
                Document.id.not_in(sorted(set(document_ids))),
            )
            .order_by(Document.id)
            .limit(room + 1)
            .with_for_update(skip_locked=True)
        )
    )
    if len(due) > room:
        after = due.pop()
        kwargs = {"document_id": after.id, "bill_no": after.bill_no, "tenant": after.tenant}
        gathering.followups.append(Followup(queues.PUSH, kwargs))
    gathering.gathered.extend((row.id, row.bill_no) for row in due)
    return [row.id for row in due]


def _apply_answers(
    rt: Runtime,
    calls: list[_Pending],
    answers: list[_Answer | None],
    outcomes: list[PushOutcome | None],
) -> None:
    """Step 3: every answer's transition in ONE transaction (a lost race is per document)."""
    if not calls:
        return
    now = rt.clock()
    plans: list[tuple[_Pending, _Plan | None]] = []
    for pending, answer in zip(calls, answers, strict=True):
        if answer is None:
            plans.append((pending, None))
            continue
        decision = _decide(rt, answer, pending.attempt)
        plan = _plan(
            rt, pending.document_id, pending.bill_no, pending.tenant, pending.attempt, answer,
            decision, now,
        )  # fmt: skip
        plans.append((pending, plan))
    with unit_of_work(rt.sessions) as session:
        pushed: list[int] = []
        for pending, maybe_plan in plans:
            if maybe_plan is None:
                outcomes[pending.index] = PushOutcome(
                    DocumentStatus.pushing.value,
                    "the call failed unexpectedly; the lease expiry and a query settle it",
                )
                continue
            try:
                outcome = _write(rt, session, maybe_plan)
            except LostRace:  # moved on again while the late acceptance was applied
                outcome = PushOutcome(
                    "skipped", f"document moved on before {maybe_plan.event} was applied"
                )
            outcomes[pending.index] = outcome
            if outcome.status == DocumentStatus.pushed.value:
                pushed.append(pending.document_id)
        # After the writes, in their transaction: no callback stored meanwhile is missed.
        grace = timedelta(seconds=rt.settings.callbacks.poll_grace_seconds)
        defer_polls_of_waiting(session, pushed, now + grace)


# Outcomes of an earlier BILL.PUSH after which the bill may be live in the cloud.
_MAY_HAVE_LANDED: Final = frozenset(
    {
        OutcomeClass.UNKNOWN_OUTCOME.value,
        OutcomeClass.ACCEPTED.value,
        OutcomeClass.DUPLICATE.value,
        PENDING_OUTCOME,
    }
)
# Applied events that prove the bill is not live in the cloud (any more).
_PROOF_OF_ABSENCE: Final = frozenset({Event.absent.value, Event.withdrawn_ok.value})


def _unproven_earlier_push(
    session: Session, tenant: TenantConfig, document_id: int, attempt: int
) -> str | None:
    """Why pushing attempt ``attempt`` could create a SECOND live bill (None: safe).

    Under dialect ``duplicate_bill=accepted`` (and while it is undeclared) the cloud may take
    a billNo it already holds as a new bill. So a billNo is pushed again only with proof the
    cloud does not hold it: no earlier push may have landed, or an ``absent`` (a query or the
    withdraw probe) / ``withdrawn_ok`` event came after the last one that may have. This is
    what guards a replay of a document that gave up in doubt, a re-claim after a lost lease,
    and any other path back to ``draft``. A tenant declaring ``duplicate_bill = "refused"``
    needs no proof: a live bill's re-push is answered "duplicate", which is settled by a query.
    """
    if attempt <= 1 or tenant.declares("duplicate_bill", "refused"):
        return None
    landed = session.execute(
        select(CloudCall.attempt, CloudCall.outcome)
        .where(
            CloudCall.document_id == document_id,
            CloudCall.interface == InterfaceCode.BILL_PUSH.value,
            CloudCall.attempt < attempt,
            or_(
                CloudCall.outcome.in_(sorted(_MAY_HAVE_LANDED)),
                # 9999 系统异常 is transient, but nothing says the exception came before the
                # bills were stored (simulator fault push_system_error_after_commit).
                and_(
                    CloudCall.outcome == OutcomeClass.TRANSIENT.value,
                    CloudCall.error_code == ErrorCode.SYSTEM_ERROR.value,
                ),
            ),
        )
        .order_by(CloudCall.attempt.desc())
        .limit(1)
    ).first()
    if landed is None:
        return None
    events = session.execute(
        select(DocumentEvent.event, DocumentEvent.outcome)
        .where(DocumentEvent.document_id == document_id)
        .order_by(DocumentEvent.id)
    ).all()
    claims = 0
    for event in events:
        if event.outcome != EventOutcome.applied.value:
            continue
        if event.event == Event.claim.value:
            claims += 1
        elif claims >= landed.attempt and event.event in _PROOF_OF_ABSENCE:
            return None
    return (
        f"push attempt {landed.attempt} ended {landed.outcome} and nothing since proves the"
        " cloud does not hold the bill; a second push could create a second live bill"
        " (duplicate_bill is not declared 'refused'), so BILL.INVOICE.QUERY decides first"
        " / 此前推送可能已到达发票云，先查询再决定是否重新推送"
    )


def _query_first(
    rt: Runtime,
    session: Session,
    document_id: int,
    bill_no: str,
    tenant: str,
    attempt: int,
    reason: str,
) -> PushOutcome:
    """pushing → in_doubt without a call: the in-doubt resolver queries (and probes)."""
    now = rt.clock()
    result = transition(
        session,
        document_id,
        Event.unsure,
        actor=rt.actor,
        expected_status=DocumentStatus.pushing,
        attempt=attempt,
        reason=reason,
        changes={"poll_count": 0, "next_poll_at": now, "last_error_message": reason},
        now=now,
    )
    kwargs = {"document_id": document_id, "bill_no": bill_no, "tenant": tenant}
    log.warning("push held back for a query", extra={**kwargs, "attempt": attempt})
    return PushOutcome(result.to_status.value, reason, [Followup(queues.RESOLVE_IN_DOUBT, kwargs)])


def _call_all(
    rt: Runtime, calls: list[_Pending], *, deadline: float, ledger: PushBatchLedger
) -> list[_Answer | None]:
    """One BILL.PUSH per document, at most ``push.batch_concurrency`` at a time, in order,
    recorded in ``ledger`` (the caller flushes it).

    A call that would start after ``deadline`` (monotonic) is not sent: it might not end
    inside its lease. ``None`` where a call raised (logged; the document stays pushing).
    """

    def one(pending: _Pending) -> _Answer | None:
        if monotonic() > deadline:
            return _Answer(
                OutcomeClass.TRANSIENT,
                None,
                "not sent: less than one push lease was left of the batch's claim"
                " / 批量推送租约将到期，未发送",
                False,
            )
        assert pending.bill is not None
        try:
            return _call(
                rt,
                tenant_name=pending.tenant,
                document_id=pending.document_id,
                attempt=pending.attempt,
                bill=pending.bill,
                ledger=ledger,
                request_id=pending.prewritten.request_id if pending.prewritten else None,
            )
        except Exception:
            log.exception(
                "push call failed; the document stays pushing until its lease expires",
                extra={"document_id": pending.document_id, "bill_no": pending.bill_no},
            )
            return None

    return call_each(rt, one, calls)


def _bill_or_problem(
    tenant_name: str, tenant_known: bool, payload: Any
) -> tuple[dict[str, Any] | None, str | None]:
    """Steps 2–3: the wire bill, or why there is none (unknown tenant, invalid payload)."""
    if not tenant_known:
        return None, (
            f"tenant {tenant_name!r} is not in the tenants file (FAPIAO_TENANTS_FILE);"
            " add it and replay / 租户未配置"
        )
    try:
        return Bill.model_validate(dict(payload or {})).to_wire(), None
    except ValidationError as exc:
        return None, f"stored payload is not a valid bill: {exc.errors()[0]['msg']} / 单据数据无效"


def _give_up_unpushable(
    rt: Runtime, session: Session, document_id: int, attempt: int, problem: str, tenant: str
) -> PushOutcome:
    """pushing → failed for a document that cannot be sent at all (in the claim's transaction)."""
    result = transition(
        session,
        document_id,
        Event.give_up,
        actor=rt.actor,
        expected_status=DocumentStatus.pushing,
        attempt=attempt,
        reason=problem,
        changes={"last_error_code": None, "last_error_message": problem},
    )
    followups = owe_notification(rt, session, document_id, [result], reason=problem, tenant=tenant)
    return PushOutcome(result.to_status.value, problem, followups)


def _decide(rt: Runtime, answer: _Answer, attempt: int) -> Decision:
    decision = decide_push(
        answer.outcome,
        attempt=attempt,
        backoff=rt.policy.backoff,
        auth_refreshed=answer.auth_refreshed,
        rng=rt.rng,
    )
    if answer.config_reason is not None:
        return Decision(Action.PAUSE_TENANT)
    return decision


def _call(
    rt: Runtime,
    *,
    tenant_name: str,
    document_id: int,
    attempt: int,
    bill: dict[str, Any],
    ledger: PushBatchLedger | None = None,
    request_id: str | None = None,
) -> _Answer:
    tenant = rt.tenant(tenant_name)
    assert tenant is not None
    client = rt.client(tenant)
    # The first request carries the requestId of the row written at claim; the one retry
    # after a refused token is a new request (new requestId, a row of its own).
    first = CallContext(document_id, attempt, request_id=request_id, ledger=ledger)
    contexts = iter([first])
    again = CallContext(document_id, attempt, ledger=ledger)

    def push(token: str) -> CloudResult:
        return client.push(bill, access_token=token, context=next(contexts, again))

    try:
        result: CloudResult = call_with_token(rt, client, push)
    except CloudConfigError as exc:
        return _Answer(OutcomeClass.CONFIG_ERROR, None, exc.reason, True, exc.reason)
    except CloudTransientError as exc:
        return _Answer(OutcomeClass.TRANSIENT, None, exc.reason, False)
    except RedisError as exc:
        # Redis is only touched BEFORE the bill leaves (token cache, rate gate) or after the
        # cloud refused a stale token (invalidate): the bill was not applied, so this is a
        # transient failure (back to draft, retried), not an unknown outcome.
        reason = f"not sent: Redis unavailable (token cache / rate gate): {exc} / Redis不可用"
        return _Answer(OutcomeClass.TRANSIENT, None, reason, False)
    return _Answer(result.outcome, result.error_code, result.message, result.auth_refreshed)


def _describe(answer: _Answer) -> str:
    code = f"[{answer.error_code}] " if answer.error_code else ""
    return f"{answer.outcome.value}: {code}{answer.message}".strip()


@dataclass(slots=True)
class _Plan:
    """The transition an answer calls for (the outcome table), not yet written."""

    document_id: int
    bill_no: str
    tenant: str
    attempt: int
    answer: _Answer
    action: Action
    event: Event
    reason: str
    changes: dict[str, Any]
    followups: list[Followup]
    now: datetime


def _plan(
    rt: Runtime,
    document_id: int,
    bill_no: str,
    tenant: str,
    attempt: int,
    answer: _Answer,
    decision: Decision,
    now: datetime,
) -> _Plan:
    kwargs = {"document_id": document_id, "bill_no": bill_no, "tenant": tenant}
    action = decision.action
    reason = _describe(answer)
    changes: dict[str, Any] = {
        "last_error_code": answer.error_code,
        "last_error_message": answer.message or None,
    }
    followups: list[Followup] = []
    if action is Action.APPLY:
        event = Event.accepted
        changes = {
            "last_error_code": None,
            "last_error_message": None,
            "poll_count": 0,
            "next_poll_at": now + rt.policy.poll_schedule.delay(0),
        }
    elif action is Action.REJECT:
        event = Event.refused
        reason = f"the cloud refused the bill / 发票云拒绝: {reason}"
        red = explain_red_refusal(answer.error_code, answer.message)
        if red is not None:
            reason = f"{reason} — {red}"
            changes["last_error_message"] = f"{answer.message} — {red}"
    elif action is Action.QUERY:
        event = Event.unsure
        changes.update(poll_count=0, next_poll_at=now + FIRST_IN_DOUBT_QUERY)
        followups.append(
            Followup(queues.RESOLVE_IN_DOUBT, kwargs, FIRST_IN_DOUBT_QUERY.total_seconds())
        )
    elif action is Action.RETRY:
        assert decision.delay is not None
        event = Event.retry
        changes["next_attempt_at"] = now + decision.delay
        reason = f"attempt {attempt} failed before issuing ({reason}); retry in {decision.delay}"
        if decision.delay.total_seconds() <= rt.policy.max_countdown:
            followups.append(Followup(queues.PUSH, kwargs, decision.delay.total_seconds()))
        # Longer waits: the sweeper's due_drafts finds it at next_attempt_at.
    elif action is Action.GIVE_UP:
        event = Event.give_up
        reason = (
            f"gave up after {attempt} attempts; last error: {reason}. Fix the cause and"
            " replay / 多次重试失败"
        )
        changes["last_error_message"] = reason
    else:  # PAUSE_TENANT: configuration or auth that survived a fresh token
        # The tenant is paused and its documents WAIT (back to draft, due at once): after
        # `fapiao tenants resume` the sweeper pushes them again, no replay needed. No
        # PUSH follow-up: a paused tenant's drafts are not swept or pushed meanwhile.
        event = Event.retry
        changes["next_attempt_at"] = now
        if answer.config_reason is not None:
            reason = answer.config_reason
        else:
            reason = config_reason(
                tenant,
                "BILL.PUSH",
                http_status=None,
                error_code=answer.error_code,
                message=answer.message,
            )
        changes["last_error_message"] = reason
        reason = f"{reason} — tenant {tenant} paused; the document waits for resume"
    return _Plan(
        document_id, bill_no, tenant, attempt, answer, action, event, reason, changes, followups,
        now,
    )  # fmt: skip


def _write(rt: Runtime, session: Session, plan: _Plan) -> PushOutcome:
    """Apply ``plan`` in the caller's transaction (compare-and-set; lost race handled)."""
    document_id, event, reason, changes = plan.document_id, plan.event, plan.reason, plan.changes
    try:
        result = transition(
            session,
            document_id,
            event,
            actor=rt.actor,
            expected_status=DocumentStatus.pushing,
            attempt=plan.attempt,
            reason=reason,
            changes=changes,
            now=plan.now,
        )
    except LostRace:
        late = _after_lost_race(rt, session, document_id, plan.attempt, event, reason, changes)
        if late is None:
            return PushOutcome("skipped", f"document moved on before {event} was applied")
        result = late
    if plan.action is Action.PAUSE_TENANT:
        pause_tenant(rt, session, plan.tenant, reason)
    followups = plan.followups + owe_notification(
        rt, session, document_id, [result], reason=reason, now=plan.now, tenant=plan.tenant
    )
    log.info(
        "push applied",
        extra={
            "document_id": document_id,
            "bill_no": plan.bill_no,
            "attempt": plan.attempt,
            "outcome": plan.answer.outcome.value,
            "event": event.value,
            "status": result.to_status.value,
        },
    )
    return PushOutcome(result.to_status.value, reason, followups)


def _after_lost_race(
    rt: Runtime,
    session: Any,
    document_id: int,
    attempt: int,
    event: Event,
    reason: str,
    changes: dict[str, Any],
) -> TransitionResult | None:
    """The lease expired and the sweeper made it in_doubt: only an acceptance may still land."""
    document = session.get(Document, document_id, populate_existing=True)
    if document is None or document.push_attempt != attempt:
        return None
    if document.status == DocumentStatus.in_doubt and event is Event.accepted:
        result: TransitionResult = transition(
            session,
            document_id,
            Event.accepted,
            actor=rt.actor,
            expected_status=DocumentStatus.in_doubt,
            expected_version=document.version,
            attempt=attempt,
            reason=f"{reason} (answer arrived after the lease expired)",
            changes=changes,
        )
        return result
    return None
