"""Push one document to the cloud (BILL.PUSH, one bill per call) and apply the answer.

Steps of ``push_document(rt, document_id)``

| step | what                                                   | if not                       |
|------|--------------------------------------------------------|------------------------------|
| 1    | the document exists and is a ``draft``                 | ``skipped`` (duplicate msg)  |
| 2    | its tenant is configured and not paused                | ``paused``: stays draft      |
|      |                                                        | (unknown tenant: ``failed``) |
| 3    | its stored payload is a bill (``schemas.erp.Bill``)    | ``failed`` with the reason   |
| 4    | claim draft→pushing (compare-and-set, attempt+1,       | ``skipped`` (lost the race)  |
|      | lease); steps 1–4 are one transaction; commit          |                              |
| 5    | token (cache, single-flight) and BILL.PUSH; the ledger |                              |
|      | row is committed before the request leaves             |                              |
| 6    | the retry policy maps the outcome to one transition    |                              |

Outcome → transition (``worker.retry_policy`` decides; this module only writes)

| action          | event     | document      | extra                                         |
|-----------------|-----------|---------------|-----------------------------------------------|
| ``apply``       | accepted  | pushed        | first poll due after ``poll_schedule[0]``     |
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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from pydantic import ValidationError

from schemas.cloud_contract import OutcomeClass
from schemas.erp import Bill
from store.db import unit_of_work
from store.lifecycle import LostRace, TransitionResult, claim_for_push, transition
from store.models import Document
from store.states import DocumentStatus, Event
from worker import queues
from worker.kingdee import (
    CallContext,
    CloudConfigError,
    CloudResult,
    CloudTransientError,
    config_reason,
)
from worker.retry_policy import Action, Decision, decide_push
from worker.runtime import Followup, Runtime
from worker.services.common import (
    call_with_token,
    is_tenant_paused,
    owe_notification,
    pause_tenant,
)

__all__ = ["PushOutcome", "push_document"]

log = logging.getLogger(__name__)

# The cloud may need a moment to make a just-pushed bill queryable.
FIRST_IN_DOUBT_QUERY: Final = timedelta(seconds=2)


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """What happened, for the task's return value and the tests."""

    status: str  # skipped / paused / the document's new state
    detail: str = ""
    followups: list[Followup] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Answer:
    outcome: OutcomeClass
    error_code: str | None
    message: str
    auth_refreshed: bool
    config_reason: str | None = None


def push_document(rt: Runtime, document_id: int) -> PushOutcome:
    """Push ``document_id`` once (module docstring)."""
    # One transaction reads, checks and claims: the claim's UPDATE is the compare-and-set
    # (a concurrent claimer still loses), and the read costs no commit of its own.
    with unit_of_work(rt.sessions) as session:
        document = session.get(Document, document_id)
        if document is None:
            return PushOutcome("skipped", "no such document")
        if document.status != DocumentStatus.draft:
            return PushOutcome("skipped", f"document is {document.status}, not draft")
        tenant = rt.tenant(document.tenant)
        if tenant is not None and is_tenant_paused(rt, session, tenant):
            return PushOutcome("paused", f"tenant {tenant.name} is paused")
        bill_no, tenant_name = document.bill_no, document.tenant
        payload = dict(document.payload or {})

        bill: dict[str, Any] | None = None
        problem: str | None = None
        if tenant is None:
            problem = (
                f"tenant {tenant_name!r} is not in the tenants file (FAPIAO_TENANTS_FILE);"
                " add it and replay / 租户未配置"
            )
        else:
            try:
                bill = Bill.model_validate(payload).to_wire()
            except ValidationError as exc:
                problem = (
                    f"stored payload is not a valid bill: {exc.errors()[0]['msg']} / 单据数据无效"
                )

        claim = claim_for_push(
            session,
            document_id,
            rt.policy.push_lease.total_seconds(),
            now=rt.clock(),
            actor=rt.actor,
        )
        if claim is None:
            return PushOutcome("skipped", "another worker claimed it")
        attempt = claim.push_attempt
        if problem is not None:
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
            followups = owe_notification(
                rt, session, document_id, [result], reason=problem, tenant=tenant_name
            )
            return PushOutcome(result.to_status.value, problem, followups)

    assert tenant is not None and bill is not None
    answer = _call(rt, tenant_name=tenant.name, document_id=document_id, attempt=attempt, bill=bill)
    decision = decide_push(
        answer.outcome,
        attempt=attempt,
        backoff=rt.policy.backoff,
        auth_refreshed=answer.auth_refreshed,
        rng=rt.rng,
    )
    if answer.config_reason is not None:
        decision = Decision(Action.PAUSE_TENANT)
    return _apply(rt, document_id, bill_no, tenant.name, attempt, answer, decision)


def _call(
    rt: Runtime, *, tenant_name: str, document_id: int, attempt: int, bill: dict[str, Any]
) -> _Answer:
    tenant = rt.tenant(tenant_name)
    assert tenant is not None
    client = rt.client(tenant)
    context = CallContext(document_id=document_id, attempt=attempt)
    try:
        result: CloudResult = call_with_token(
            rt, client, lambda token: client.push(bill, access_token=token, context=context)
        )
    except CloudConfigError as exc:
        return _Answer(OutcomeClass.CONFIG_ERROR, None, exc.reason, True, exc.reason)
    except CloudTransientError as exc:
        return _Answer(OutcomeClass.TRANSIENT, None, exc.reason, False)
    return _Answer(result.outcome, result.error_code, result.message, result.auth_refreshed)


def _describe(answer: _Answer) -> str:
    code = f"[{answer.error_code}] " if answer.error_code else ""
    return f"{answer.outcome.value}: {code}{answer.message}".strip()


def _apply(
    rt: Runtime,
    document_id: int,
    bill_no: str,
    tenant: str,
    attempt: int,
    answer: _Answer,
    decision: Decision,
) -> PushOutcome:
    now = rt.clock()
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

    with unit_of_work(rt.sessions) as session:
        try:
            result = transition(
                session,
                document_id,
                event,
                actor=rt.actor,
                expected_status=DocumentStatus.pushing,
                attempt=attempt,
                reason=reason,
                changes=changes,
                now=now,
            )
        except LostRace:
            late = _after_lost_race(rt, session, document_id, attempt, event, reason, changes)
            if late is None:
                return PushOutcome("skipped", f"document moved on before {event} was applied")
            result = late
        if action is Action.PAUSE_TENANT:
            pause_tenant(rt, session, tenant, reason)
        followups += owe_notification(
            rt, session, document_id, [result], reason=reason, now=now, tenant=tenant
        )
    log.info(
        "push applied",
        extra={
            "document_id": document_id,
            "bill_no": bill_no,
            "attempt": attempt,
            "outcome": answer.outcome.value,
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
