"""Withdraw a document from the cloud (BILL.WITHDRAW) and map the per-bill result.

The producer applies ``withdraw`` (draft → withdrawn at once; pushed / invoice_failed /
failed → withdrawing) and enqueues ``fapiao.withdraw``; this service does the call.

| per-bill result (§7 [G])                   | transition          | document                 |
|--------------------------------------------|---------------------|--------------------------|
| success (撤回成功)                          | withdrawn_ok        | withdrawn                |
| 单据已撤回 (already withdrawn)               | withdrawn_ok        | withdrawn                |
| 单据不存在 (the cloud never had it)          | withdrawn_ok        | withdrawn                |
| refused (单据已开票 / 开票中 / 不允许撤回 …)  | query decides:      | its true state, the      |
|                                            | issued_* / issue_   | refusal kept as reason   |
|                                            | failed / withdraw_  |                          |
|                                            | refused (→ pushed)  |                          |
| envelope: transient / unknown              | none                | retried at next_attempt  |
| envelope: config/auth after refresh        | none; tenant paused | stays withdrawing        |

The same texts refused at the ENVELOPE level (dialect ``withdraw_refusal=envelope``:
``success:false`` with 单据已开票，不允许撤回, 单据不存在, 单据已撤回; the withdraw is always of ONE
bill, so the envelope speaks for it) lead to the same rows as the per-bill result.

Withdrawing twice is harmless (the second answer is 单据已撤回), so an unknown outcome is
simply tried again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy.orm import Session

from schemas.cloud_contract import (
    WITHDRAW_ALREADY_ISSUED,
    WITHDRAW_ALREADY_WITHDRAWN,
    WITHDRAW_BILL_UNKNOWN,
    WITHDRAW_ISSUING,
    WITHDRAW_REFUSAL_MARKER,
    ErrorCode,
    is_unknown_bill,
)
from schemas.kingdee import DataDecodeError, GatewayResponse, withdraw_results
from schemas.tenants import TenantConfig
from store.db import unit_of_work
from store.lifecycle import LostRace, TransitionResult, transition, update_fields
from store.models import Document
from store.states import DocumentStatus, Event
from worker.kingdee import CallContext, CloudConfigError, CloudTransientError, config_reason
from worker.retry_policy import Action, decide_query
from worker.runtime import Followup, Runtime
from worker.services.cloud_call import call_with_token
from worker.services.erp_outbox import owe_after_issuance, owe_notification
from worker.services.invoices import AfterIssuance, apply_invoices
from worker.services.query import query_bill
from worker.services.tenancy import is_tenant_paused, pause_tenant

__all__ = [
    "WithdrawOutcome",
    "WithdrawVerdict",
    "call_withdraw",
    "withdraw_document",
    "withdraw_text_verdict",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WithdrawOutcome:
    status: str
    detail: str = ""
    followups: list[Followup] = field(default_factory=list)


def withdraw_document(rt: Runtime, document_id: int) -> WithdrawOutcome:
    """Call BILL.WITHDRAW for a ``withdrawing`` document and apply the result."""
    with unit_of_work(rt.sessions) as session:
        document = session.get(Document, document_id)
        if document is None:
            return WithdrawOutcome("skipped", "no such document")
        if document.status != DocumentStatus.withdrawing:
            return WithdrawOutcome("skipped", f"document is {document.status}, not withdrawing")
        tenant = rt.tenant(document.tenant)
        if tenant is None:
            return WithdrawOutcome("skipped", f"tenant {document.tenant!r} is not configured")
        if is_tenant_paused(rt, session, tenant):
            return WithdrawOutcome("paused", f"tenant {tenant.name} is paused")
        bill_no, seller, attempt = document.bill_no, document.seller_tax_id, document.push_attempt

    verdict, message = call_withdraw(
        rt, tenant, bill_no=bill_no, seller_tax_id=seller, document_id=document_id,
        attempt=attempt,
    )  # fmt: skip

    if verdict == "refused":
        return _refused(rt, document_id, tenant.name, bill_no, seller, attempt, message)
    now = rt.clock()
    with unit_of_work(rt.sessions) as session:
        document = session.get(Document, document_id, populate_existing=True)
        if document is None or document.status != DocumentStatus.withdrawing:
            return WithdrawOutcome("skipped", "document moved on while withdrawing")
        if verdict == "config":
            pause_tenant(rt, session, tenant.name, message)
            return WithdrawOutcome("paused", message)
        if verdict == "retry":
            _retry_later(session, document_id, message, now, rt)
            return WithdrawOutcome("withdrawing", message)
        try:
            done = transition(
                session,
                document_id,
                Event.withdrawn_ok,
                actor=rt.actor,
                expected_status=DocumentStatus.withdrawing,
                expected_version=document.version,
                reason=f"BILL.WITHDRAW: {message or 'ok'}",
                now=now,
            )
        except LostRace as exc:
            return WithdrawOutcome("skipped", str(exc))
        followups = owe_notification(rt, session, document_id, [done], reason=message, now=now)
    return WithdrawOutcome(done.to_status.value, message, followups)


def _retry_later(session: Session, document_id: int, why: str, now: datetime, rt: Runtime) -> None:
    """Stay ``withdrawing``; the sweeper sends ``fapiao.withdraw`` again after the retry
    table's ``withdraw`` wait."""
    update_fields(
        session,
        document_id,
        {
            "next_attempt_at": now + rt.policy.retries.withdraw.delay(1, rt.rng),
            "last_error_message": why,
        },
        now=now,
    )


WithdrawVerdict = Literal["done", "gone", "refused", "retry", "config"]


def call_withdraw(
    rt: Runtime,
    tenant: TenantConfig,
    *,
    bill_no: str,
    seller_tax_id: str,
    document_id: int | None,
    attempt: int | None,
) -> tuple[WithdrawVerdict, str]:
    """BILL.WITHDRAW of ONE bill, reduced to a verdict (table in the module docstring).

    Also the in-doubt resolver's probe (``worker.services.in_doubt``).
    """
    client = rt.client(tenant)
    context = CallContext(document_id=document_id, attempt=attempt)
    try:
        result = call_with_token(
            rt,
            client,
            lambda token: client.withdraw(
                [bill_no], seller_tax_id, access_token=token, context=context
            ),
        )
    except CloudConfigError as exc:
        return "config", exc.reason
    except CloudTransientError as exc:
        return "retry", exc.reason
    decision = decide_query(result.outcome, auth_refreshed=result.auth_refreshed)
    if decision.action is Action.APPLY and result.response is not None:
        return _per_bill(result.response, bill_no)
    # dialect withdraw_refusal=envelope: a one-bill withdraw refused at the envelope level
    # carries the per-bill text; it means exactly what the per-item result would.
    by_text = withdraw_text_verdict(result.error_code, result.message)
    if by_text is not None and decision.action is not Action.PAUSE_TENANT:
        return by_text, result.message
    if is_unknown_bill(result.error_code, result.message):
        return "gone", result.message
    if decision.action is Action.PAUSE_TENANT:
        return "config", config_reason(
            tenant.name,
            result.interface,
            http_status=result.http_status,
            error_code=result.error_code,
            message=result.message,
        )
    return "retry", result.message


def withdraw_text_verdict(error_code: str | None, message: str) -> WithdrawVerdict | None:
    """What a withdraw refusal text says about one bill (per item or at the envelope level);
    None when the text is none of the §7 texts."""
    text = message or ""
    if WITHDRAW_ALREADY_WITHDRAWN in text:
        return "done"
    if WITHDRAW_BILL_UNKNOWN in text:
        return "gone"
    if (
        WITHDRAW_ALREADY_ISSUED in text
        or WITHDRAW_ISSUING in text
        or WITHDRAW_REFUSAL_MARKER in text
        or error_code == ErrorCode.WITHDRAW_REFUSED
    ):
        return "refused"
    return None


def _per_bill(response: GatewayResponse, bill_no: str) -> tuple[WithdrawVerdict, str]:
    """The verdict for ``bill_no`` from the per-bill results of a successful envelope."""
    try:
        items = withdraw_results(response)
    except DataDecodeError as exc:
        return "retry", f"unreadable withdraw answer: {exc}"
    mine = [i for i in items if i.serialNo == bill_no]
    if not mine:
        # No per-bill detail at all: the envelope said success.
        return ("done", response.message) if not items else ("retry", "bill missing in answer")
    item = mine[0]
    if item.success:
        return "done", item.message
    by_text = withdraw_text_verdict(None, item.message)
    # An unrecognised per-bill refusal: a query decides, as for a known one.
    return (by_text or "refused"), item.message


def _refused(
    rt: Runtime,
    document_id: int,
    tenant_name: str,
    bill_no: str,
    seller: str,
    attempt: int,
    refusal: str,
) -> WithdrawOutcome:
    """The cloud will not withdraw: learn the bill's true state with a query and go there."""
    tenant = rt.tenant(tenant_name)
    assert tenant is not None
    answer = query_bill(
        rt, tenant, bill_no=bill_no, seller_tax_id=seller, document_id=document_id,
        attempt=attempt,
    )  # fmt: skip
    now = rt.clock()
    reason = f"withdrawal refused by the cloud / 撤回被拒绝: {refusal}"
    with unit_of_work(rt.sessions) as session:
        document = session.get(Document, document_id, populate_existing=True)
        if document is None or document.status != DocumentStatus.withdrawing:
            return WithdrawOutcome("skipped", "document moved on while withdrawing")
        if answer.kind not in ("present", "absent"):
            _retry_later(session, document_id, reason, now, rt)
            return WithdrawOutcome("withdrawing", f"{reason}; query failed: {answer.reason}")
        results: list[TransitionResult] = []
        after = AfterIssuance()
        try:
            if answer.kind == "present":
                results, verdict = apply_invoices(
                    rt, session, document, answer.items, reason=reason
                )
                after = verdict.after
                moved = [r for r in results if r.applied]
            else:
                moved = []
            if not moved:
                session.refresh(document)
                results.append(
                    transition(
                        session,
                        document_id,
                        Event.withdraw_refused,
                        actor=rt.actor,
                        expected_status=DocumentStatus.withdrawing,
                        expected_version=document.version,
                        reason=reason,
                        changes={"last_error_message": reason, "next_poll_at": now},
                        now=now,
                    )
                )
            else:
                update_fields(session, document_id, {"last_error_message": reason}, now=now)
        except LostRace as exc:
            return WithdrawOutcome("skipped", str(exc))
        followups = owe_notification(rt, session, document_id, results, reason=reason, now=now)
        followups += owe_after_issuance(rt, session, after, now=now)
        final = [r for r in results if r.applied]
    status = final[-1].to_status.value if final else DocumentStatus.withdrawing.value
    return WithdrawOutcome(status, reason, followups)
