"""Reconcile a stored callback (``callback_inbox``) with the documents it is about.

The receiver stored the raw body, deduplicated and acknowledged it; this runs afterwards.

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
| 5    | row ``processed`` (linked to the document), ERP notifications owed; a one-bill |
|      | invoice callback settles its row in the same transaction as its transition     |

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

Deferred (row stays ``received``, ``attempts`` + 1, task sent again shortly; after the retry
table's ``reconcile`` row the row is ``failed``): the confirming query could not be made, the
tenant is paused, or the document is still ``pushing``/``draft`` (the callback overtook the push
answer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import select
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
from worker.ledger import HeldCallLedger, SqlCallLedger
from worker.runtime import Followup, Runtime
from worker.services.erp_outbox import owe_after_issuance, owe_notification
from worker.services.invoices import all_known, apply_invoices
from worker.services.query import query_bill
from worker.services.quota import observe_biz_control
from worker.services.tenancy import document_and_pause, documents_and_pauses, is_paused_from

__all__ = ["ReconcileOutcome", "reconcile_callback"]

log = logging.getLogger(__name__)

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


def reconcile_callback(rt: Runtime, inbox_id: int) -> ReconcileOutcome:
    """Apply one stored callback (module docstring)."""
    # Two statements, each on its own (autocommit on PostgreSQL: no BEGIN/COMMIT round
    # trips): the row, then the documents it is about together with their tenants' pause
    # flags (the checks before a confirming query need nothing fresher).
    with autocommit_session(rt.sessions) as session:
        row = session.execute(
            select(CallbackInbox.state, CallbackInbox.raw_body).where(CallbackInbox.id == inbox_id)
        ).one_or_none()
        if row is None:
            return ReconcileOutcome("skipped", "no such callback")
        if row.state != InboxState.received:
            return ReconcileOutcome("skipped", f"callback already {row.state}")
        raw = bytes(row.raw_body)
        try:
            parsed = parse_callback_with(raw, rt.tenants.callback_codecs())
        except CallbackParseError as exc:
            unusable: str | None = str(exc)
        else:
            unusable = None
            by_bill = _items_by_bill(parsed)
            candidates, paused_flags = _documents_and_pauses(session, list(by_bill))
            found = [
                (bill_no, items, _find_document(candidates.get(bill_no, []), bill_no, seller))
                for bill_no, (seller, items) in by_bill.items()
            ]
            paused = {
                d.tenant: _is_paused(rt, d.tenant, paused_flags)
                for _, _, d in found
                if d is not None
            }
            if _nothing_new(session, parsed, found):
                # A repeat of what is stored (a second callback style, a redelivery, a
                # callback after the poller found the invoices): settled here, no query.
                document = found[0][2]
                assert document is not None
                if parsed.bizControl is not None:
                    # The poller may have applied the invoices first; the quota is still news.
                    observe_biz_control(
                        rt, session, document.tenant, document.seller_tax_id, parsed.bizControl
                    )
                settle_callback(
                    session, inbox_id, InboxState.processed, document_id=document.id,
                    error=_NOTHING_NEW, now=rt.clock(),
                )  # fmt: skip
                return ReconcileOutcome(InboxState.processed.value, _NOTHING_NEW)
    if unusable is not None:
        return _finish(rt, inbox_id, InboxState.failed, unusable, None)

    followups: list[Followup] = []
    document_ids: list[int] = []
    notes: list[str] = []
    labels: dict[str, str] = {}  # bill_no / tenant on a deferred message (Flower search)
    # The common case, one bill: its inbox row is settled in the transition's transaction.
    settle = inbox_id if len(found) == 1 and parsed.style != "return" else None
    settled = False
    try:
        for bill_no, items, document in found:
            if document is None:
                continue
            document_ids.append(document.id)
            labels = {"bill_no": bill_no, "tenant": document.tenant}
            if parsed.style == "return":
                applied, note = _apply_return(rt, document.id, parsed)
                followups += applied
                if note:
                    notes.append(f"{bill_no}: {note}")
            else:
                applied, settled = _apply_invoice_callback(
                    rt, document, paused[document.tenant], items, parsed, settle=settle
                )
                followups += applied
    except _Defer as exc:
        return _defer(rt, inbox_id, str(exc), labels)
    if not document_ids:
        bills = ", ".join(sorted(by_bill)) or "(none)"
        return _finish(rt, inbox_id, InboxState.orphan, f"no document for billNo {bills}", None)
    if settled:
        return ReconcileOutcome(InboxState.processed.value, "", followups)
    note = "; ".join(notes) or None
    outcome = _finish(rt, inbox_id, InboxState.processed, note, document_ids[0])
    return ReconcileOutcome(outcome.state, outcome.detail, followups)


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


def _apply_return(
    rt: Runtime, document_id: int, parsed: ParsedCallback
) -> tuple[list[Followup], str | None]:
    """BILL.RETURN → ``returned``, once the cloud confirms the bill left it (or trusting).

    Returns the follow-ups and, when nothing was applied, a note for the inbox row.
    """
    reason = (parsed.returned.reason if parsed.returned else "") or "no reason given"
    with unit_of_work(rt.sessions) as session:
        document, paused_in_database = document_and_pause(session, document_id)
        assert document is not None
        status = DocumentStatus(document.status)
        if status in _WAITING_FOR_PUSH:
            raise _Defer(f"document is {status}; waiting for the push answer")
        if status not in _RETURNABLE and status is not DocumentStatus.returned:
            log.warning(
                "return callback for a document that cannot be returned",
                extra={"document_id": document_id, "status": status.value},
            )
            return [], f"document is {status.value}; 回退 not applied"
        version = document.version
        tenant = rt.tenant(document.tenant)
        bill_no, seller, attempt = document.bill_no, document.seller_tax_id, document.push_attempt
        if status in _RETURNABLE and rt.settings.callbacks.confirm_with_query:
            if tenant is None:
                raise _Defer(f"tenant {document.tenant!r} is not configured")
            if is_paused_from(tenant, paused_in_database):
                raise _Defer(f"tenant {tenant.name} is paused")

    if status in _RETURNABLE and rt.settings.callbacks.confirm_with_query:
        # Invariant 4: the callback is unsigned, so it only triggers a question to the cloud.
        assert tenant is not None
        answer = query_bill(
            rt, tenant, bill_no=bill_no, seller_tax_id=seller, document_id=document_id,
            attempt=attempt,
        )  # fmt: skip
        if answer.kind == "present" and answer.ambiguous:
            # unknown_bill=empty_list (or undeclared): the empty answer may be the cloud's
            # way of saying "no such bill" — or the bill is live. The callback is unsigned
            # (invariant 4), so nothing that changes the cloud (a withdraw probe) may follow
            # from it: the document stays as it is, and the operator is alerted.
            metrics.stuck_documents().labels(status=status.value).inc()
            log.warning(
                "return callback cannot be confirmed: ambiguous empty query answer",
                extra={"document_id": document_id, "bill_no": bill_no},
            )
            return [], (
                "回退 not confirmed: BILL.INVOICE.QUERY answers an empty invoiceList, which"
                " under this tenant's unknown_bill reading may mean the bill is gone or still"
                " there; check the cloud console and withdraw the document if it is gone"
            )
        elif answer.kind == "present":
            log.warning(
                "return callback not confirmed: the cloud still has the bill",
                extra={"document_id": document_id, "bill_no": bill_no},
            )
            return [], "回退 not confirmed: BILL.INVOICE.QUERY still finds the bill; unchanged"
        elif answer.kind != "absent":
            raise _Defer(f"confirming query failed: {answer.reason}")

    with unit_of_work(rt.sessions) as session:
        try:
            result = transition(
                session,
                document_id,
                Event.returned,
                actor=rt.actor,
                expected_status=status,
                expected_version=version,
                reason=f"the cloud handed the bill back (回退): {reason}",
                changes={"last_error_message": reason},
            )
        except LostRace as exc:
            raise _Defer(str(exc)) from exc
        return owe_notification(rt, session, document_id, [result], reason=reason), None


def _is_paused(rt: Runtime, tenant_name: str, paused_in_database: dict[str, bool]) -> bool:
    """``is_tenant_paused`` from a ``tenant_state`` flag already read."""
    tenant = rt.tenant(tenant_name)
    return tenant is not None and is_paused_from(tenant, paused_in_database.get(tenant_name, False))


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


def _apply_invoice_callback(
    rt: Runtime,
    found: Document,
    tenant_paused: bool,
    items: list[InvoiceItem],
    parsed: ParsedCallback,
    *,
    settle: int | None = None,
) -> tuple[list[Followup], bool]:
    """Apply the invoices; returns the follow-ups and whether inbox row ``settle`` (if given)
    was marked ``processed`` in the same transaction as the transition.

    ``found`` is the document as read by the caller's transaction (not re-read before the
    confirming query: the transaction below reads it once, ``populate_existing``, and its
    transition uses that read and is compare-and-set).
    """
    status = DocumentStatus(found.status)
    tenant = rt.tenant(found.tenant)
    if status in (DocumentStatus.draft, DocumentStatus.pushing):
        raise _Defer(f"document is {status}; waiting for the push answer")
    if tenant is None:
        raise _Defer(f"tenant {found.tenant!r} is not configured")
    if tenant_paused:
        raise _Defer(f"tenant {tenant.name} is paused")
    # The confirming query's ledger row is written in the transaction below (one commit
    # less); if that rolls back or none comes, on its own (worker.ledger.HeldCallLedger).
    held = HeldCallLedger(SqlCallLedger(rt.sessions))
    try:
        return _confirm_and_apply(rt, found, tenant, items, parsed, held, settle)
    finally:
        held.flush()


def _confirm_and_apply(
    rt: Runtime,
    found: Document,
    tenant: TenantConfig,
    items: list[InvoiceItem],
    parsed: ParsedCallback,
    held: HeldCallLedger,
    settle: int | None,
) -> tuple[list[Followup], bool]:
    document_id = found.id
    bill_no, seller, attempt = found.bill_no, found.seller_tax_id, found.push_attempt
    source = f"callback {parsed.interfaceCode} ({parsed.style})"
    if rt.settings.callbacks.confirm_with_query:
        answer = query_bill(
            rt, tenant, bill_no=bill_no, seller_tax_id=seller, document_id=document_id,
            attempt=attempt, ledger=held,
        )  # fmt: skip
        if answer.kind == "absent":
            log.warning(
                "callback not confirmed: the cloud does not know the bill",
                extra={"document_id": document_id, "bill_no": bill_no},
            )
            return [], False
        if answer.kind != "present":
            raise _Defer(f"confirming query failed: {answer.reason}")
        items = answer.items + _failures_the_query_omits(tenant, items, answer.items)
        source += " confirmed by BILL.INVOICE.QUERY"

    with unit_of_work(rt.sessions) as session:
        held.write(session)
        document = session.get(Document, document_id, populate_existing=True)
        assert document is not None
        results: list[TransitionResult] = []
        try:
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
            if parsed.bizControl is not None:
                # Recorded with the transition it came with (lower only: store.quota); before
                # the invoices, so an issuance refused for quota has the last word.
                observe_biz_control(rt, session, tenant.name, seller, parsed.bizControl)
            more, verdict = apply_invoices(
                rt, session, document, items, reason=source, just_read=True
            )
        except LostRace as exc:
            raise _Defer(str(exc)) from exc
        results += more
        followups = owe_notification(rt, session, document_id, results, tenant=tenant.name)
        followups += owe_after_issuance(rt, session, verdict.after)
        settled = False
        if settle is not None:
            try:
                settle_callback(
                    session, settle, InboxState.processed, document_id=document_id,
                    now=rt.clock(),
                )  # fmt: skip
                settled = True
            except LookupError:
                pass  # the row vanished: the caller's _finish reports it
        return followups, settled


def _finish(
    rt: Runtime,
    inbox_id: int,
    state: InboxState,
    error: str | None,
    document_id: int | None,
) -> ReconcileOutcome:
    with unit_of_work(rt.sessions) as session:
        try:
            settle_callback(
                session, inbox_id, state, document_id=document_id, error=error, now=rt.clock()
            )
        except LookupError:
            return ReconcileOutcome("skipped", "callback row vanished")
    if state is not InboxState.processed:
        log.warning(
            "callback not applied",
            extra={"inbox_id": inbox_id, "state": state.value, "error": error},
        )
    return ReconcileOutcome(state.value, error or "")


def _defer(rt: Runtime, inbox_id: int, why: str, labels: dict[str, str]) -> ReconcileOutcome:
    with unit_of_work(rt.sessions) as session:
        row = _locked_row(session, inbox_id)
        if row is None:
            return ReconcileOutcome("skipped", "callback row vanished")
        row.attempts = (row.attempts or 0) + 1
        row.error = why
        attempts = row.attempts
    retry = rt.policy.retries.reconcile
    if retry.exhausted(attempts):
        return _finish(rt, inbox_id, InboxState.failed, f"gave up after {attempts} tries: {why}",
                       None)  # fmt: skip
    wait = retry.delay(attempts, rt.rng).total_seconds()
    followup = Followup(queues.RECONCILE, {"inbox_id": inbox_id, **labels}, wait)
    return ReconcileOutcome(InboxState.received.value, why, [followup])


def _locked_row(session: Session, inbox_id: int) -> CallbackInbox | None:
    return session.get(CallbackInbox, inbox_id, with_for_update=True)
