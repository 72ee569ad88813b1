"""Decide an ``in_doubt`` document with BILL.INVOICE.QUERY — never by pushing again blind.

| query says                  | transition          | then                                      |
|-----------------------------|---------------------|-------------------------------------------|
| the bill is there           | accepted → pushed   | its invoices applied at once (may go      |
|                             |                     | straight on to (partially_)invoiced)      |
| absent (单据不存在)         | absent → draft      | ``fapiao.push`` again, same billNo        |
| absent, but the push said   | give_up → failed    | a contradiction: an operator must look    |
| "duplicate" (已存在/重复)   |                     | (pushing again would loop forever)        |
| absent after attempt        | give_up → failed    | reason: the pushes never reached the cloud|
| ``push.max_attempts``       |                     |                                           |
| don't know (network, 9999…) | none                | next query after the poll schedule        |
| config/auth after refresh   | none; tenant paused | stays in_doubt until resumed              |
| don't know for too long     | give_up → failed    | reason says what to check and do          |

An EMPTY answer for our bill (an element with an empty ``invoiceList``) is ambiguous when the
tenant does not declare ``unknown_bill`` = ``error``/``empty_data`` (``QueryAnswer.ambiguous``):
under ``empty_list`` it is also how the cloud answers a bill it never received. Taking it for
"accepted" would leave a push that never arrived waiting forever; taking it for "absent" could
push a live bill twice where ``duplicate_bill=accepted``. So it is settled by proof:

| ambiguous empty answer, and …                    | proof / probe                 | then      |
|--------------------------------------------------|-------------------------------|-----------|
| this attempt's BILL.PUSH was answered duplicate  | the cloud said it holds it    | pushed    |
| ``duplicate_bill = "refused"`` declared          | none needed: a re-push of the | draft →   |
|                                                  | same billNo is refused        | push      |
|                                                  | (-10009 → in_doubt → pushed)  |           |
|                                                  | if the bill is live           |           |
| otherwise: probe BILL.WITHDRAW of that billNo    | 单据不存在 (item or envelope)  | draft →   |
|                                                  | 撤回成功 / 单据已撤回: not     | push, same|
|                                                  | live any more                 | billNo    |
|                                                  | 已开票 / 开票中 / 不允许撤回   | pushed    |
|                                                  | don't know                    | stays     |
|                                                  |                               | in_doubt  |

The probe and its answer are written into the transition's reason (``document_events``), so an
operator sees why a bill was pushed again. Loops are bounded: every re-push is a new attempt,
and ``push.max_attempts`` ends the cycle in ``failed`` with a reason (``_stop_reason``); a probe
that never answers counts toward ``in_doubt.max_queries`` / ``max_age_seconds`` like a query.

"Too long" is ``in_doubt.max_queries`` queries (counted by the poll sweep) or
``in_doubt.max_age_seconds`` since the document became in_doubt, whichever comes first.
Answers are applied with the document's current ``push_attempt``: an answer about an older
attempt can never override a newer decision (``store.lifecycle``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.cloud_contract import OutcomeClass
from schemas.kingdee import InterfaceCode
from schemas.tenants import TenantConfig
from store.db import autocommit_session, unit_of_work
from store.lifecycle import LostRace, TransitionResult, transition, update_fields
from store.models import CloudCall, Document
from store.states import DocumentStatus, Event
from worker import queues
from worker.runtime import Followup, Runtime
from worker.services.erp_outbox import owe_after_issuance, owe_notification
from worker.services.invoices import apply_invoices
from worker.services.query import QueryAnswer, query_bill
from worker.services.tenancy import document_and_pause, is_paused_from, pause_tenant
from worker.services.withdraw import call_withdraw

__all__ = ["ResolveOutcome", "resolve_in_doubt"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResolveOutcome:
    status: str
    detail: str = ""
    followups: list[Followup] = field(default_factory=list)


def resolve_in_doubt(rt: Runtime, document_id: int) -> ResolveOutcome:
    """Query once and apply what the cloud says (module docstring)."""
    with autocommit_session(rt.sessions) as session:  # one read: no transaction needed
        document, paused_in_database = document_and_pause(session, document_id)
        if document is None:
            return ResolveOutcome("skipped", "no such document")
        if document.status != DocumentStatus.in_doubt:
            return ResolveOutcome("skipped", f"document is {document.status}, not in_doubt")
        tenant = rt.tenant(document.tenant)
        if tenant is None:
            return ResolveOutcome("skipped", f"tenant {document.tenant!r} is not configured")
        if is_paused_from(tenant, paused_in_database):
            return ResolveOutcome("paused", f"tenant {tenant.name} is paused")
        snapshot = _Snapshot(
            bill_no=document.bill_no,
            seller_tax_id=document.seller_tax_id,
            attempt=document.push_attempt,
            poll_count=document.poll_count,
            since=document.in_doubt_since or document.status_changed_at,
        )

    answer = query_bill(
        rt,
        tenant,
        bill_no=snapshot.bill_no,
        seller_tax_id=snapshot.seller_tax_id,
        document_id=document_id,
        attempt=snapshot.attempt,
    )
    present_reason = "BILL.INVOICE.QUERY found the bill in the cloud / 查询到单据"
    if answer.kind == "present" and answer.ambiguous:
        answer, present_reason = _settle_ambiguous(rt, tenant, document_id, snapshot, answer)
    now = rt.clock()
    with unit_of_work(rt.sessions) as session:
        document = session.get(Document, document_id, populate_existing=True)
        if document is None or document.status != DocumentStatus.in_doubt:
            return ResolveOutcome("skipped", "document moved on while querying")
        if document.push_attempt != snapshot.attempt:
            return ResolveOutcome("skipped", "a newer push attempt exists")
        try:
            applied = _apply_answer(
                rt, session, document, tenant, snapshot, answer, present_reason, now
            )
        except LostRace as exc:
            return ResolveOutcome("skipped", str(exc))
        if isinstance(applied, ResolveOutcome):
            return applied
        results, followups = applied
        followups += owe_notification(rt, session, document_id, results, now=now)
        final = results[-1].to_status.value if results else DocumentStatus.in_doubt.value
    log.info(
        "in-doubt resolved",
        extra={"document_id": document_id, "bill_no": snapshot.bill_no, "status": final},
    )
    return ResolveOutcome(final, answer.reason, followups)


def _apply_answer(
    rt: Runtime,
    session: Session,
    document: Document,
    tenant: TenantConfig,
    snapshot: _Snapshot,
    answer: QueryAnswer,
    present_reason: str,
    now: datetime,
) -> ResolveOutcome | tuple[list[TransitionResult], list[Followup]]:
    """The query's answer applied to the re-read document (module docstring table), in the
    caller's transaction: the transitions made and the follow-ups owed, or the outcome when
    nothing moved (still in doubt; tenant paused). Raises ``LostRace``."""
    document_id = document.id
    kwargs = {"document_id": document_id, "bill_no": snapshot.bill_no, "tenant": tenant.name}
    results: list[TransitionResult] = []
    followups: list[Followup] = []
    if answer.kind == "present":
        results.append(
            transition(
                session,
                document_id,
                Event.accepted,
                actor=rt.actor,
                expected_status=DocumentStatus.in_doubt,
                expected_version=document.version,
                attempt=snapshot.attempt,
                reason=present_reason,
                changes={
                    "poll_count": 0,
                    "next_poll_at": now + rt.policy.poll_schedule.delay(0),
                    "last_error_code": None,
                    "last_error_message": None,
                },
                now=now,
            )
        )
        session.refresh(document)
        more, verdict = apply_invoices(
            rt, session, document, answer.items, reason="BILL.INVOICE.QUERY"
        )
        results += more
        followups += owe_after_issuance(rt, session, verdict.after, now=now)
    elif answer.kind == "absent" and (
        stop := _stop_reason(rt, session, document_id, snapshot, answer.reason)
    ):
        results.append(
            transition(
                session,
                document_id,
                Event.give_up,
                actor=rt.actor,
                expected_status=DocumentStatus.in_doubt,
                expected_version=document.version,
                attempt=snapshot.attempt,
                reason=stop,
                changes={"last_error_message": stop},
                now=now,
            )
        )
    elif answer.kind == "absent":
        results.append(
            transition(
                session,
                document_id,
                Event.absent,
                actor=rt.actor,
                expected_status=DocumentStatus.in_doubt,
                expected_version=document.version,
                attempt=snapshot.attempt,
                reason=f"the cloud does not have the bill, safe to push again: "
                f"{answer.reason} / 单据不存在，可重新推送",
                changes={"next_attempt_at": now},
                now=now,
            )
        )
        followups.append(Followup(queues.PUSH, kwargs))
    else:
        if answer.kind == "config":
            pause_tenant(rt, session, tenant.name, answer.reason)
            return ResolveOutcome("paused", answer.reason)
        given_up = _give_up_if_too_long(rt, session, document, snapshot, answer.reason)
        if given_up is None:
            update_fields(
                session,
                document_id,
                {
                    "next_poll_at": now + rt.policy.poll_schedule.delay(snapshot.poll_count),
                    "last_error_message": answer.reason,
                },
                now=now,
            )
            return ResolveOutcome("in_doubt", answer.reason)
        results.append(given_up)
    return results, followups


def _settle_ambiguous(
    rt: Runtime,
    tenant: TenantConfig,
    document_id: int,
    snapshot: _Snapshot,
    answer: QueryAnswer,
) -> tuple[QueryAnswer, str]:
    """An unambiguous answer for an ambiguous empty one (module docstring), and the reason
    to record if it says "present"."""
    reading = tenant.declared("unknown_bill") or "undeclared"
    seen = (
        f"BILL.INVOICE.QUERY listed {snapshot.bill_no} with an empty invoiceList, which is"
        f" ambiguous under unknown_bill={reading}"
    )
    with autocommit_session(rt.sessions) as session:
        last_push = _last_push(session, document_id, snapshot.attempt)
    if last_push is not None and last_push.outcome == OutcomeClass.DUPLICATE.value:
        return answer, f"{seen}; BILL.PUSH was answered duplicate: the cloud holds it / 查询到单据"
    if tenant.declares("duplicate_bill", "refused"):
        return (
            QueryAnswer(
                "absent",
                f"{seen}; duplicate_bill=refused is declared, so pushing the same billNo again"
                " is safe (a live bill is refused as a duplicate)",
            ),
            "",
        )
    verdict, message = call_withdraw(
        rt, tenant, bill_no=snapshot.bill_no, seller_tax_id=snapshot.seller_tax_id,
        document_id=document_id, attempt=snapshot.attempt,
    )  # fmt: skip
    probe = f"{seen}; probe BILL.WITHDRAW answered: {message or verdict}"
    if verdict == "gone":
        return QueryAnswer("absent", f"{probe} → the cloud never had it"), ""
    if verdict == "done":
        return QueryAnswer("absent", f"{probe} → not live in the cloud any more"), ""
    if verdict == "refused":
        return answer, f"{probe} → the bill is in the cloud / 撤回被拒绝，单据在发票云中"
    if verdict == "config":
        return QueryAnswer("config", message), ""
    return QueryAnswer("retry", f"{probe} → still unknown"), ""


def _last_push(session: Session, document_id: int, attempt: int) -> Any:
    return session.execute(
        select(CloudCall.outcome, CloudCall.message)
        .where(
            CloudCall.document_id == document_id,
            CloudCall.interface == InterfaceCode.BILL_PUSH.value,
            CloudCall.attempt == attempt,
        )
        .order_by(CloudCall.id.desc())
        .limit(1)
    ).first()


@dataclass(frozen=True, slots=True)
class _Snapshot:
    bill_no: str
    seller_tax_id: str
    attempt: int
    poll_count: int
    since: Any


def _stop_reason(
    rt: Runtime, session: Session, document_id: int, snapshot: _Snapshot, answer: str
) -> str | None:
    """Why "absent" must NOT lead to another push (None: push again).

    - This attempt's BILL.PUSH was answered "duplicate" (已存在/重复) and the query says the
      bill does not exist: the cloud contradicts itself (or an unknown error text merely
      contains those words). Pushing again would get the same answer, forever.
    - ``push.max_attempts`` push attempts were made (absent → draft → push cycles count).
    """
    last_push = _last_push(session, document_id, snapshot.attempt)
    if last_push is not None and last_push.outcome == OutcomeClass.DUPLICATE.value:
        push_message = last_push.message
        return (
            f"BILL.PUSH of {snapshot.bill_no} was refused as a duplicate"
            f" ({push_message or 'no message'}) but BILL.INVOICE.QUERY says the cloud does"
            f" not have it ({answer}). Pushing again would loop. Check the bill in the cloud"
            " console (开票管理 → 开票申请单) and the cloud's error text; once the cause is"
            " fixed, replay / 发票云称单据重复但查询不到该单据，请核对后重新推送"
        )
    if rt.policy.backoff.exhausted(snapshot.attempt):
        return (
            f"gave up after {snapshot.attempt} push attempts of {snapshot.bill_no}"
            f" (push.max_attempts = {rt.policy.backoff.max_attempts}): the last outcome was"
            f" unknown and the cloud does not have the bill ({answer}). Check connectivity to"
            " the cloud, then replay"
            " / 多次推送均未到达发票云，请检查网络后重新推送"
        )
    return None


def _give_up_if_too_long(
    rt: Runtime, session: Any, document: Document, snapshot: _Snapshot, last: str
) -> TransitionResult | None:
    now = rt.clock()
    age = now - snapshot.since
    too_many = snapshot.poll_count >= rt.policy.in_doubt_max_queries
    too_old = age >= rt.policy.in_doubt_max_age
    if not (too_many or too_old):
        return None
    reason = (
        f"could not learn whether BILL.PUSH of {snapshot.bill_no} reached the cloud"
        f" ({snapshot.poll_count} queries over {age}); last answer: {last}. Check the bill in"
        " the cloud console (开票管理 → 开票申请单). A replay is safe either way: it queries"
        " before pushing again (and never creates a second live bill)"
        " / 无法确认单据是否已推送，请在发票云核对后重新推送"
    )
    result: TransitionResult = transition(
        session,
        document.id,
        Event.give_up,
        actor=rt.actor,
        expected_status=DocumentStatus.in_doubt,
        expected_version=document.version,
        attempt=snapshot.attempt,
        reason=reason,
        changes={"last_error_message": reason},
        now=now,
    )
    return result
