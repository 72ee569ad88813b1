"""Operator actions, one implementation for the CLI (``fapiao replay|withdraw|tenants|
notifications``) and the HTTP API (``producers.http_operations``, the single-document routes of
``producers.http``).

Every action follows the same steps: select (by a ``DocumentFilter``), guard, act on each
document in its own SAVEPOINT, write ONE ``operator_actions`` row naming the actor and the
reason, COMMIT, and only then enqueue what is owed. A dry run stops after the selection and
predicts each document's outcome from its state with the same table the real run reports
with, so on unchanged data the dry run's answer equals the real run's (``audit_id`` aside).

| action | status filter may name (default when none) | per-document outcome |
|---|---|---|
| ``replay`` | failed, rejected (both) | ``replayed`` (→ draft, push owed), |
| | | ``not_replayable`` |
| ``withdraw`` | draft, pushed, invoice_failed, failed, | ``withdrawn`` (never reached the cloud), |
| | withdrawing, withdrawn (the first four) | ``withdrawal_owed`` (→ withdrawing, |
| | | BILL.WITHDRAW owed), ``unchanged`` |
| | | (already withdrawing/withdrawn), |
| | | ``not_allowed`` |
| both | | ``changed_meanwhile``: changed between |
| | | selection and action |

A bulk withdraw needs at least one criterion (a filter of nothing would withdraw every live
bill); a bulk replay without one replays every failed and rejected document, as
``fapiao replay`` always did.

Other actions: ``act_on_document`` (one bill: replay or withdraw), ``reverse_document`` (the
red-letter 红冲 document(s) of one bill, ``producers.reversal``), ``pause_tenant`` /
``resume_tenant`` (resume also releases a credit-quota hold: ``store.quota.release``),
``resend_notifications`` (parked ERP notifications back to pending, due
now: the sweeper hands them to ``fapiao.notify_erp`` within its interval — the producers'
``Enqueuer`` has no notify message). Reads: ``list_documents`` (keyset pages, opaque
cursor), ``list_notifications``, ``tenant_rows``.

Errors

    ValueError
     └── FilterError       a criterion is malformed or not allowed for the action (HTTP 400);
                           ``field`` names it, ``allowed`` lists what is accepted
    LookupError
     └── UnknownTenant     no tenant of that name in the tenants file (HTTP 404)
    (act_on_document also raises producers.documents' and store.lifecycle's errors)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from producers.documents import (
    REPLAYABLE,
    NotReplayable,
    OperatorAction,
    find_document,
    jsonable,
    replay_document,
    withdraw_document,
)
from producers.reversal import (
    CloudUnavailable,
    NotReversible,
    Pending,
    PlannedRedBill,
    ReversalRefused,
    ReversalRequest,
    ask_cloud,
    check_header,
    check_limits,
    pending_by_invoice,
    plan_reversal,
    red_documents_of,
    runtime_query,
)
from schemas.cloud_contract import RED_INVOICE_PROPERTY
from schemas.errors import Issue
from schemas.tenants import normalise_tax_id
from store.columns import utcnow
from store.db import unit_of_work
from store.lifecycle import NO_OPS, LostRace, TransitionNotAllowed, target_of
from store.models import Document, ErpOutbox, OperatorAudit, TenantQuota, TenantState
from store.outbox import list_notifications as outbox_rows
from store.outbox import requeue
from store.queries import latest_reasons
from store.queries import list_documents as list_rows
from store.quota import quota_rows, shanghai_day
from store.quota import release as release_quota
from store.states import DocumentStatus, Event, OutboxState
from store.tenants import pause_tenant as store_pause
from store.tenants import resume_tenant as store_resume

if TYPE_CHECKING:
    from producers.bootstrap import Components

__all__ = [
    "ACTIONS",
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "BulkResult",
    "DocumentFilter",
    "FilterError",
    "ReversalResult",
    "UnknownTenant",
    "act_on_document",
    "bulk_action",
    "decode_cursor",
    "document_filter",
    "encode_cursor",
    "list_documents",
    "list_notifications",
    "parse_duration",
    "pause_tenant",
    "plan",
    "resend_notifications",
    "resume_tenant",
    "reverse_document",
    "run_planned",
    "tenant_rows",
]

DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 500
MAX_RESEND: Final = 500

Action = Literal["replay", "withdraw"]

_WITHDRAW_CHANGES: Final = tuple(
    s for s in DocumentStatus if (target := target_of(s, Event.withdraw)) and target is not s
)
_WITHDRAW_ANY: Final = tuple(s for s in DocumentStatus if target_of(s, Event.withdraw))

# action -> (states a filter may name, states selected when it names none)
ACTIONS: Final[dict[str, tuple[tuple[DocumentStatus, ...], tuple[DocumentStatus, ...]]]] = {
    "replay": (REPLAYABLE, REPLAYABLE),
    "withdraw": (_WITHDRAW_ANY, _WITHDRAW_CHANGES),
}


# ---------------------------------------------------------------------------- filters


class FilterError(ValueError):
    """A criterion is malformed or not allowed: ``field`` names it, ``allowed`` says what is."""

    def __init__(
        self, field: str, message: str, allowed: Sequence[str] | str | None = None
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.allowed = allowed


class UnknownTenant(LookupError):
    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = list(known)
        super().__init__(f"unknown tenant {name!r}; known: {', '.join(known) or 'none'}")


@dataclass(frozen=True, slots=True)
class DocumentFilter:
    """Current documents matching EVERY given criterion (an empty filter matches all)."""

    statuses: tuple[str, ...] = ()
    tenant: str | None = None
    seller_tax_id: str | None = None
    older_than_seconds: int | None = None  # in the current state at least this long
    updated_since: datetime | None = None
    changed_since: datetime | None = None  # entered the current state since (CLI --since)
    error_code: str | None = None
    q: str | None = None
    bill_nos: tuple[str, ...] = ()

    def criteria(self) -> dict[str, Any]:
        """The given criteria, JSON-ready (for the audit record)."""
        given: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None or value == ():
                continue
            given[item.name] = list(value) if isinstance(value, tuple) else value
        criteria: dict[str, Any] = jsonable(given)
        return criteria

    def narrows(self) -> bool:
        return bool(self.criteria())

    def rows(
        self,
        session: Session,
        *,
        statuses: Sequence[str] | None = None,
        after: tuple[datetime, int] | None = None,
        limit: int | None = None,
        now: datetime | None = None,
    ) -> list[Document]:
        changed_before = None
        if self.older_than_seconds is not None:
            changed_before = (now or utcnow()) - timedelta(seconds=self.older_than_seconds)
        return list_rows(
            session,
            statuses=self.statuses if statuses is None else statuses,
            tenant=self.tenant,
            seller_tax_id=self.seller_tax_id,
            bill_nos=self.bill_nos,
            changed_before=changed_before,
            changed_since=self.changed_since,
            updated_since=self.updated_since,
            error_code=self.error_code,
            text=self.q,
            after=after,
            limit=limit,
        )


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_FORMS: Final = "a number of seconds or a duration like 90s, 30m, 2h, 7d, 1w"


def parse_duration(text: str, field: str = "older_than") -> int:
    """``2h`` → 7200; plain digits are seconds."""
    match = _DURATION.match(text)
    if not match:
        raise FilterError(field, f"{text!r} is not a duration", _DURATION_FORMS)
    return int(match.group(1)) * _UNITS[match.group(2)]


def _parse_datetime(text: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FilterError(
            field,
            f"{text!r} is not an ISO 8601 date/datetime",
            "e.g. 2026-12-01 or 2026-12-01T08:00:00+08:00 (no offset = UTC)",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FilterError(field, "must be text")
    stripped = value.strip()
    return stripped or None


def document_filter(
    *,
    status: Iterable[str] | None = None,
    tenant: str | None = None,
    seller: str | None = None,
    older_than: str | None = None,
    updated_since: str | None = None,
    q: str | None = None,
    error_code: str | None = None,
    bill_nos: Iterable[str] | None = None,
    prefix: str = "",
) -> DocumentFilter:
    """A ``DocumentFilter`` from operator input (query parameters or a JSON body); raises
    FilterError naming the field (``prefix`` + name) and what it accepts."""
    statuses: list[str] = []
    known = [s.value for s in DocumentStatus]
    for item in status or ():
        for value in str(item).split(","):
            value = value.strip()
            if not value:
                continue
            if value not in known:
                raise FilterError(f"{prefix}status", f"{value!r} is not a state", known)
            if value not in statuses:
                statuses.append(value)
    names: list[str] = []
    for item in bill_nos or ():
        text = _text(item, f"{prefix}bill_nos")
        if text and text not in names:
            names.append(text)
    seller_text = _text(seller, f"{prefix}seller")
    older = _text(older_than, f"{prefix}older_than")
    since = _text(updated_since, f"{prefix}updated_since")
    return DocumentFilter(
        statuses=tuple(statuses),
        tenant=_text(tenant, f"{prefix}tenant"),
        seller_tax_id=normalise_tax_id(seller_text) if seller_text else None,
        older_than_seconds=parse_duration(older, f"{prefix}older_than") if older else None,
        updated_since=_parse_datetime(since, f"{prefix}updated_since") if since else None,
        error_code=_text(error_code, f"{prefix}error_code"),
        q=_text(q, f"{prefix}q"),
        bill_nos=tuple(names),
    )


# ---------------------------------------------------------------------------- list


def encode_cursor(document: Document) -> str:
    """Opaque to clients: the last sort key seen, ``(status_changed_at, id)``."""
    key = json.dumps([document.status_changed_at.isoformat(), document.id])
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, field: str = "cursor") -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, document_id = json.loads(raw)
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None or not isinstance(document_id, int):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise FilterError(
            field, "not a cursor this API gave out", "the next_cursor of a previous page"
        ) from None
    return parsed, document_id


def _age(since: datetime | None, now: datetime) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


def _item(document: Document, reason: str | None, now: datetime) -> dict[str, Any]:
    payload = document.payload if isinstance(document.payload, Mapping) else {}
    buyer = payload.get("buyerName")
    return {
        "id": document.id,
        "bill_no": document.bill_no,
        "tenant": document.tenant,
        "seller_tax_id": document.seller_tax_id,
        "buyer_name": buyer if isinstance(buyer, str) else None,
        "status": document.status,
        "age_seconds": _age(document.status_changed_at, now),
        "reason": document.last_error_message or reason,
        "last_error_code": document.last_error_code,
        "total_incl_tax": document.total_incl_tax,
        "status_changed_at": document.status_changed_at,
        "updated_at": document.updated_at,
        "revision": document.revision,
    }


def list_documents(
    session: Session,
    criteria: DocumentFilter,
    *,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One page ``{"items", "next_cursor"}`` (JSON-ready); ``next_cursor`` is None on the
    last page."""
    if not 1 <= limit <= MAX_PAGE:
        raise FilterError("limit", f"{limit} is out of range", f"1 to {MAX_PAGE}")
    now = now or utcnow()
    after = decode_cursor(cursor) if cursor else None
    rows = criteria.rows(session, after=after, limit=limit + 1, now=now)
    more = len(rows) > limit
    rows = rows[:limit]
    reasons = latest_reasons(session, [doc.id for doc in rows if not doc.last_error_message])
    return {
        "items": [jsonable(_item(doc, reasons.get(doc.id), now)) for doc in rows],
        "next_cursor": encode_cursor(rows[-1]) if more and rows else None,
    }


# ---------------------------------------------------------------------------- audit


def _audit(
    session: Session,
    *,
    actor: str,
    action: str,
    reason: str | None,
    criteria: Mapping[str, Any],
    count: int,
    now: datetime | None = None,
) -> OperatorAudit:
    row = OperatorAudit(
        actor=actor[:64],
        action=action,
        reason=reason,
        filter=jsonable(dict(criteria)),
        dry_run=False,
        count=count,
        created_at=now or utcnow(),
    )
    session.add(row)
    session.flush()
    return row


# One place sends what operator actions owe (after the commit). Notifications are not sent
# here: the producers' Enqueuer has no notify message, and a resent row is due now, so the
# sweeper hands it to fapiao.notify_erp within its interval.
def _send_owed(components: Components, owed: Iterable[OperatorAction]) -> None:
    """The follow-ups of committed actions, as one batch (a lost one: the sweeper's)."""
    from worker.enqueue import push_message, withdraw_message

    builders = {"push": push_message, "withdraw": withdraw_message}
    components.enqueuer.send(
        builders[action.enqueue](action.document_id, action.bill_no, action.tenant)
        for action in owed
        if action.enqueue in builders
    )


# ---------------------------------------------------------------------------- bulk


@dataclass(slots=True)
class BulkResult:
    """The answer of a bulk action (dry or real); ``as_dict`` is the HTTP/CLI JSON."""

    action: str
    dry_run: bool
    documents: list[dict[str, Any]] = field(default_factory=list)
    audit_id: int | None = None
    owed: list[OperatorAction] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(1 for item in self.documents if item["outcome"] in _CHANGES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "action": self.action,
            "count": len(self.documents),
            "changed": self.changed,
            "documents": self.documents,
            "audit_id": self.audit_id,
        }


_CHANGES: Final = frozenset({"replayed", "withdrawn", "withdrawal_owed"})


def _predict(action: str, status: str) -> tuple[str, str]:
    """(outcome, status after) of ``action`` on a document in ``status`` (module table)."""
    state = DocumentStatus(status)
    if action == "replay":
        if state in REPLAYABLE:
            return "replayed", DocumentStatus.draft.value
        return "not_replayable", status
    target = target_of(state, Event.withdraw)
    if target is None:
        return "not_allowed", status
    if (state, Event.withdraw) in NO_OPS or target is state:
        return "unchanged", status
    if target is DocumentStatus.withdrawn:
        return "withdrawn", target.value
    return "withdrawal_owed", target.value


def _entry(document: Document, outcome: str, to_status: str) -> dict[str, Any]:
    return {
        "document_id": document.id,
        "bill_no": document.bill_no,
        "tenant": document.tenant,
        "seller_tax_id": document.seller_tax_id,
        "status": document.status,
        "outcome": outcome,
        "to_status": to_status,
    }


def _selectable(action: str, criteria: DocumentFilter, prefix: str) -> tuple[str, ...]:
    if action not in ACTIONS:
        raise FilterError("action", f"{action!r} is not an action", sorted(ACTIONS))
    allowed, default = ACTIONS[action]
    names = [s.value for s in allowed]
    wrong = [s for s in criteria.statuses if s not in names]
    if wrong:
        verb = "replayed" if action == "replay" else "withdrawn"
        raise FilterError(
            f"{prefix}status",
            f"{', '.join(wrong)}: only {' or '.join(names)} documents are {verb}",
            names,
        )
    if action == "withdraw" and not criteria.narrows():
        raise FilterError(
            prefix.rstrip(".") or "filter",
            "a bulk withdraw needs at least one criterion (it would withdraw every live bill)",
            "status, tenant, seller, older_than, updated_since, q, error_code, bill_nos",
        )
    return criteria.statuses or tuple(s.value for s in default)


def plan(
    session: Session,
    action: str,
    criteria: DocumentFilter,
    *,
    limit: int | None = None,
    now: datetime | None = None,
    prefix: str = "filter.",
) -> list[Document]:
    """The documents ``action`` would take, oldest in its state first (guards applied)."""
    if limit is not None and limit < 1:
        raise FilterError("limit", f"{limit} is not a positive number", "null or 1 or more")
    statuses = _selectable(action, criteria, prefix)
    return criteria.rows(session, statuses=statuses, limit=limit, now=now)


def _act(session: Session, action: str, document: Document, *, actor: str, reason: str) -> Any:
    if action == "replay":
        return replay_document(session, document, actor=actor, reason=reason)
    return withdraw_document(session, document, actor=actor, reason=reason)


def _actual(action: str, result: OperatorAction) -> str:
    if not result.applied:
        return "unchanged"
    if action == "replay":
        return "replayed"
    return "withdrawal_owed" if result.enqueue == "withdraw" else "withdrawn"


def run_planned(
    components: Components,
    action: str,
    planned: Sequence[Document],
    *,
    actor: str,
    reason: str,
    criteria: Mapping[str, Any],
    progress: Callable[[int], None] | None = None,
) -> BulkResult:
    """Act on ``planned`` (from ``plan``): each document in a SAVEPOINT, one audit row, one
    COMMIT, then the owed tasks are enqueued. A document that changed since it was planned
    is re-decided from its state now (``changed_meanwhile`` when it lost a race)."""
    result = BulkResult(action, dry_run=False)
    with unit_of_work(components.sessions) as session:
        for planned_doc in planned:
            document = session.get(Document, planned_doc.id, populate_existing=True)
            outcome, to_status = "changed_meanwhile", planned_doc.status
            if document is not None and document.is_current:
                snapshot = _entry(document, "", "")
                try:
                    with session.begin_nested():
                        done = _act(session, action, document, actor=actor, reason=reason)
                except NotReplayable:
                    outcome = "not_replayable"
                except TransitionNotAllowed:
                    outcome = "not_allowed"
                except LostRace:
                    outcome = "changed_meanwhile"
                else:
                    outcome, to_status = _actual(action, done), done.to_status
                    if done.enqueue:
                        result.owed.append(done)
                if outcome in ("not_replayable", "not_allowed"):
                    to_status = snapshot["status"]
                result.documents.append({**snapshot, "outcome": outcome, "to_status": to_status})
            else:
                result.documents.append(_entry(planned_doc, outcome, to_status))
            if progress is not None:
                progress(1)
        audit = _audit(
            session,
            actor=actor,
            action=action,
            reason=reason,
            criteria=criteria,
            count=result.changed,
        )
        result.audit_id = audit.id
    _send_owed(components, result.owed)
    return result


def bulk_action(
    components: Components,
    action: str,
    criteria: DocumentFilter,
    *,
    actor: str,
    reason: str,
    dry_run: bool,
    limit: int | None = None,
    now: datetime | None = None,
) -> BulkResult:
    """``POST /v1/operations/{replay,withdraw}``: plan, then predict (dry run) or act."""
    if not reason or not reason.strip():
        raise FilterError("reason", "is required: say why (kept in the audit trail)")
    reason = reason.strip()[:500]
    with components.sessions() as session:
        planned = plan(session, action, criteria, limit=limit, now=now)
        if dry_run:
            result = BulkResult(action, dry_run=True)
            for document in planned:
                outcome, to_status = _predict(action, document.status)
                result.documents.append(_entry(document, outcome, to_status))
            return result
    recorded = {**criteria.criteria(), "limit": limit}
    return run_planned(components, action, planned, actor=actor, reason=reason, criteria=recorded)


def act_on_document(
    components: Components,
    action: str,
    bill_no: str,
    *,
    seller_tax_id: str | None = None,
    tenant: str | None = None,
    actor: str,
    reason: str | None = None,
) -> OperatorAction:
    """Replay or withdraw one bill (``producers.documents`` rules), audit row in the same
    transaction, then enqueue. Raises LookupError (not found / ambiguous), NotReplayable,
    store.lifecycle.LifecycleError."""
    with unit_of_work(components.sessions) as session:
        document = find_document(session, bill_no, seller_tax_id=seller_tax_id, tenant=tenant)
        if action == "replay":
            done = replay_document(session, document, actor=actor, reason=reason)
        else:
            done = withdraw_document(session, document, actor=actor, reason=reason)
        _audit(
            session,
            actor=actor,
            action=action,
            reason=reason or f"{action} requested",
            criteria={
                "bill_nos": [document.bill_no],
                "tenant": document.tenant,
                "seller_tax_id": document.seller_tax_id,
            },
            count=1 if done.applied else 0,
        )
    _send_owed(components, [done])
    return done


# ---------------------------------------------------------------------------- reversal


@dataclass(frozen=True, slots=True)
class ReversalResult:
    """What ``reverse_document`` did: the red documents of the request, new or found again."""

    original_bill_no: str
    original_document_id: int
    tenant: str
    red_documents: list[dict[str, Any]]
    audit_id: int | None

    @property
    def created(self) -> bool:
        return any(item["outcome"] != "unchanged" for item in self.red_documents)

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = jsonable(
            {
                "original_bill_no": self.original_bill_no,
                "original_document_id": self.original_document_id,
                "tenant": self.tenant,
                "outcome": "created" if self.created else "unchanged",
                "red_documents": self.red_documents,
                "audit_id": self.audit_id,
            }
        )
        return answer


def _red_item(document: Document, outcome: str) -> dict[str, Any]:
    return {
        "bill_no": document.bill_no,
        "document_id": document.id,
        "status": document.status,
        "outcome": outcome,
        "total_amount": document.total_amount,
        "original_invoice_number": (document.payload or {}).get("originalInvoiceNumber"),
        "red_reason": (document.payload or {}).get("redReason"),
    }


def _requested_before(
    request: ReversalRequest, original: Document, reds: Sequence[Document]
) -> list[Document]:
    """The red documents a repeat of ``request`` maps to (module docstring of
    ``producers.reversal``: bill numbers are derived from the request, not the cloud)."""
    if request.red_bill_no:
        return [red for red in reds if red.bill_no == request.red_bill_no]
    stem = re.escape(original.bill_no)
    tail = f"-{request.fingerprint()}" if request.lines else ""
    pattern = re.compile(f"{stem}-R[0-9]+{re.escape(tail)}")
    return [red for red in reds if pattern.fullmatch(red.bill_no)]


def reverse_document(
    components: Components,
    request: ReversalRequest,
    *,
    actor: str,
    reason: str | None = None,
) -> ReversalResult:
    """Build, check, store and link the red document(s) of ``request`` (``producers.reversal``),
    with one audit row, then owe their pushes. A repeat answers the same red documents.

    Raises DocumentNotFound / AmbiguousBillNo, NotReversible, ReversalRefused, CloudUnavailable.
    """
    from producers.intake import Intake, SubmitOutcome, SubmitResult

    with components.sessions() as session:
        original = find_document(
            session, request.bill_no, seller_tax_id=request.seller_tax_id, tenant=request.tenant
        )
        session.expunge(original)
        reds = red_documents_of(session, [original.id])
        for red in reds:
            session.expunge(red)
    if str((original.payload or {}).get("invoiceProperty") or "") == RED_INVOICE_PROPERTY:
        raise NotReversible(
            original.bill_no,
            "it is a red document itself; reverse its original instead",
            "该单据本身是红字单据，请对原蓝字单据红冲",
        )
    again = _requested_before(request, original, reds)
    if again:
        mismatch = [
            red.bill_no
            for red in again
            if (red.payload or {}).get("redReason") != request.red_reason
            or ((red.payload or {}).get("redInfoBillNo") or None) != request.red_info_bill_no
        ]
        if mismatch:
            raise NotReversible(
                original.bill_no,
                f"red document(s) {', '.join(mismatch)} already answer this request with another"
                " redReason/redInfoBillNo; name a new red bill number to reverse again",
                f"红字单据 {'、'.join(mismatch)} 已按其他冲红原因/红字确认单编号创建",
            )
        return ReversalResult(
            original.bill_no,
            original.id,
            original.tenant,
            [_red_item(red, "unchanged") for red in again],
            None,
        )
    tenant = components.tenants.by_name(original.tenant)
    if tenant is None:
        raise CloudUnavailable(original.bill_no, f"tenant {original.tenant} is not configured")
    query = runtime_query(components.worker_runtime)
    blues = ask_cloud(query, tenant, original, original.invoice_type or "")
    if not blues:
        raise ReversalRefused(
            original.bill_no,
            [
                Issue(
                    "bill_no",
                    "original_not_invoiced",
                    f"the cloud lists no issued, unvoided blue invoice for {original.bill_no}",
                    f"发票云中 {original.bill_no} 没有可红冲的蓝字发票",
                    "Only issued invoices can be reversed; a voided (作废) one cannot.",
                    "只有已开具的发票可以红冲；已作废的发票不能红冲。",
                )
            ],
        )
    pending = pending_by_invoice(reds)
    planned = plan_reversal(request, original.payload or {}, blues, pending)
    if planned and isinstance(planned[0], Issue):
        raise ReversalRefused(original.bill_no, [p for p in planned if isinstance(p, Issue)])
    intake = Intake(
        components.sessions,
        components.tenants,
        components.enqueuer,
        actor,
        components.settings.push.batch_size,
    )
    prepared: list[Any] = []
    issues: list[Issue] = []
    for plan_item in planned:
        assert isinstance(plan_item, PlannedRedBill)
        issues.extend(
            check_header(request.red_reason, request.red_info_bill_no, plan_item.blue.invoice_type)
        )
        item = intake.prepare(plan_item.wire, original.tenant)
        if isinstance(item, SubmitResult):
            issues.extend(item.issues)
            continue
        issues.extend(
            check_limits(
                item.bill,
                plan_item.blue,
                pending.get(plan_item.blue.number, Pending()),
                original.bill_no,
            )
        )
        prepared.append(replace(item, original_document_id=original.id))
    if issues:
        raise ReversalRefused(original.bill_no, issues)
    with unit_of_work(components.sessions) as session:
        # One reversal of an original at a time (a row lock on PostgreSQL; SQLite has one
        # writer): red documents made meanwhile were not counted above, so ask again.
        session.execute(
            select(Document.id).where(Document.id == original.id).with_for_update()
        ).all()
        meanwhile = {red.id for red in red_documents_of(session, [original.id])} - {
            red.id for red in reds
        }
        if meanwhile:
            raise NotReversible(
                original.bill_no,
                "another red document of it was made while this request ran; look at it "
                f"(fapiao show {original.bill_no}) and ask again",
                "处理期间该单据又生成了其他红字单据，请查看后重试",
            )
        results = intake.store_many(session, prepared, actor)
        conflicts = [r for r in results if r.outcome is SubmitOutcome.conflict]
        if conflicts:
            raise NotReversible(
                original.bill_no,
                f"red bill number(s) {', '.join(str(r.bill_no) for r in conflicts)} hold other"
                " content already; name a new red_bill_no",
                "红字单据编号已被其他内容占用，请换一个编号",
            )
        audit = _audit(
            session,
            actor=actor,
            action="reverse",
            reason=reason or "reverse requested",
            criteria={
                "bill_nos": [original.bill_no],
                "tenant": original.tenant,
                "seller_tax_id": original.seller_tax_id,
                "red_bill_nos": [r.bill_no for r in results],
                "red_reason": request.red_reason,
                "lines": [
                    {"detailId": line.detail_id, "amount": line.amount} for line in request.lines
                ],
            },
            count=sum(1 for r in results if r.push_owed),
        )
        rows = {
            row.id: row
            for row in session.scalars(
                select(Document).where(Document.id.in_([r.document_id for r in results]))
            )
        }
        items = [
            _red_item(rows[r.document_id], r.outcome.value)
            for r in results
            if r.document_id is not None
        ]
        audit_id = audit.id
    intake.enqueue_pushes(results)
    return ReversalResult(original.bill_no, original.id, original.tenant, items, audit_id)


# ---------------------------------------------------------------------------- tenants


def _token_health(components: Components, tenant: str, now: datetime) -> str:
    """From the workers' token cache: ok, expiring (inside the refresh margin), expired,
    absent (none cached: fetched on the next call), unknown (Redis not readable)."""
    if components.redis is None:
        return "unknown"
    from worker.tokens import TokenCache

    try:
        token = TokenCache(components.redis, refresh_margin=timedelta(0)).peek(tenant)
    except Exception:  # any Redis trouble: the list still answers
        return "unknown"
    if token is None:
        return "absent"
    now_ms = int(now.timestamp() * 1000)
    margin_ms = components.settings.tokens.refresh_margin_seconds * 1000
    if token.expires_ms <= now_ms:
        return "expired"
    return "expiring" if token.expires_ms - margin_ms <= now_ms else "ok"


def tenant_rows(components: Components, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every tenant of the tenants file: configuration summary, pause state, token health."""
    now = now or utcnow()
    with components.sessions() as session:
        states = {row.tenant: row for row in session.scalars(select(TenantState))}
        quotas: dict[str, list[TenantQuota]] = {}
        for quota_row in quota_rows(session):
            quotas.setdefault(quota_row.tenant, []).append(quota_row)
    rows: list[dict[str, Any]] = []
    for config in components.tenants.tenants:
        row = states.get(config.name)
        paused = bool(row and row.paused) or config.paused
        rows.append(
            {
                "name": config.name,
                "base_url": config.base,
                "business_system_code": config.business_system_code,
                "callback_style": config.callback_style,
                "seller_tax_ids": list(config.seller_tax_ids),
                "auto_invoice": config.auto_invoice,
                "rate_limit_per_second": config.rate_limit_per_second,
                "erp_webhook": config.erp_webhook_url is not None,
                "paused": paused,
                "paused_reason": (row.paused_reason if row and row.paused else None)
                or ("paused = true in the tenants file" if config.paused else None),
                "paused_at": row.paused_at if row and row.paused else None,
                "token_health": _token_health(components, config.name, now),
                "quota": _quota_view(quotas.get(config.name, []), now),
            }
        )
    return rows


def _amount(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def _quota_view(rows: list[TenantQuota], now: datetime) -> dict[str, Any] | None:
    """The credit quota the cloud last reported per seller (``store.quota``); None: nothing
    stored. ``held`` is a hold in force now; ``observed_on`` is the Asia/Shanghai day of the
    answer (a surplus of an earlier day or month no longer counts)."""
    if not rows:
        return None
    sellers = []
    for row in rows:
        held = bool(row.held and row.held_until is not None and row.held_until > now)
        sellers.append(
            {
                "seller_tax_id": row.seller_tax_id,
                "day_surplus": _amount(row.day_surplus),
                "month_surplus": _amount(row.month_surplus),
                "is_warning": row.is_warning,
                "issue_biz_type": row.issue_biz_type,
                "biz_type": row.biz_type,
                "observed_at": row.observed_at,
                "observed_on": (
                    shanghai_day(row.observed_at).isoformat() if row.observed_at else None
                ),
                "source": row.source,
                "held": held,
                "hold_reason": row.hold_reason if held else None,
                "held_until": row.held_until if held else None,
            }
        )
    return {
        "warning": any(s["is_warning"] for s in sellers),
        "held": any(s["held"] for s in sellers),
        "sellers": sellers,
    }


def _known(components: Components, name: str) -> None:
    if components.tenants.by_name(name) is None:
        raise UnknownTenant(name, components.tenants.names)


def _tenant_row(components: Components, name: str) -> dict[str, Any]:
    return next(row for row in tenant_rows(components) if row["name"] == name)


def pause_tenant(
    components: Components, name: str, *, actor: str, reason: str | None
) -> dict[str, Any]:
    """Stop pushes, polls and withdrawals of ``name``; the stored reason names the actor."""
    _known(components, name)
    why = f"{reason or 'paused by an operator'} ({actor})"
    with unit_of_work(components.sessions) as session:
        store_pause(session, name, why)
        _audit(
            session,
            actor=actor,
            action="tenant.pause",
            reason=reason,
            criteria={"tenant": name},
            count=1,
        )
    return _tenant_row(components, name)


def resume_tenant(
    components: Components, name: str, *, actor: str, reason: str | None = None
) -> dict[str, Any]:
    _known(components, name)
    with unit_of_work(components.sessions) as session:
        store_resume(session, name)
        # A credit-quota hold is released too (the stored surplus is forgotten; its drafts are
        # due now): an operator resumes when the quota was raised in the cloud.
        release_quota(session, name)
        _audit(
            session,
            actor=actor,
            action="tenant.resume",
            reason=reason,
            criteria={"tenant": name},
            count=1,
        )
    return _tenant_row(components, name)


# ---------------------------------------------------------------------------- notifications

NOTIFICATION_STATES: Final = tuple(s.value for s in OutboxState)


def list_notifications(
    components: Components,
    *,
    state: str | None = OutboxState.parked.value,
    tenant: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> dict[str, Any]:
    """ERP notifications with their bill, oldest first; ``cursor`` is the last id seen."""
    if state is not None and state not in NOTIFICATION_STATES:
        raise FilterError("state", f"{state!r} is not a notification state", NOTIFICATION_STATES)
    if not 1 <= limit <= MAX_PAGE:
        raise FilterError("limit", f"{limit} is out of range", f"1 to {MAX_PAGE}")
    after: int | None = None
    if cursor:
        if not cursor.isdigit():
            raise FilterError("cursor", "not a cursor this API gave out", "a next_cursor")
        after = int(cursor)
    with components.sessions() as session:
        rows = outbox_rows(session, state=state, tenant=tenant, after_id=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "id": row.id,
            "document_id": row.document_id,
            "bill_no": document.bill_no,
            "tenant": document.tenant,
            "event": row.event,
            "state": row.state,
            "attempts": row.attempts,
            "last_error": row.last_error,
            "created_at": row.created_at,
            "updated_at": row.updated_at or row.delivered_at or row.created_at,
            "delivered_at": row.delivered_at,
            "next_attempt_at": row.next_attempt_at,
        }
        for row, document in rows
    ]
    return {
        "items": jsonable(items),
        "next_cursor": str(rows[-1][0].id) if more and rows else None,
    }


_RESEND_OUTCOMES: Final = {
    OutboxState.parked.value: "requeued",
    OutboxState.pending.value: "already_pending",
    OutboxState.delivered.value: "delivered",
}


def resend_notifications(
    components: Components, ids: Sequence[int], *, actor: str, reason: str
) -> dict[str, Any]:
    """Parked notifications back to pending, due now (``store.outbox.requeue``), one audit row."""
    if not reason or not reason.strip():
        raise FilterError("reason", "is required: say why (kept in the audit trail)")
    unique = list(dict.fromkeys(ids))
    if not unique:
        raise FilterError("ids", "name at least one notification id", "outbox ids")
    if len(unique) > MAX_RESEND:
        raise FilterError("ids", f"{len(unique)} ids; at most {MAX_RESEND} at once")
    results: list[dict[str, Any]] = []
    with unit_of_work(components.sessions) as session:
        now = utcnow()
        for outbox_id in unique:
            was = requeue(session, outbox_id, now=now)
            owner = _owner(session, outbox_id) if was is not None else None
            results.append(
                {
                    "id": outbox_id,
                    "bill_no": owner.bill_no if owner is not None else None,
                    "tenant": owner.tenant if owner is not None else None,
                    "was": was,
                    "outcome": "not_found" if was is None else _RESEND_OUTCOMES[was],
                }
            )
        count = sum(1 for item in results if item["outcome"] == "requeued")
        audit = _audit(
            session,
            actor=actor,
            action="notifications.resend",
            reason=reason.strip()[:500],
            criteria={"ids": unique},
            count=count,
        )
        audit_id = audit.id
    from worker.enqueue import notify_message

    components.enqueuer.send(
        notify_message(item["id"], bill_no=item["bill_no"], tenant=item["tenant"])
        for item in results
        if item["outcome"] == "requeued"
    )
    return {"count": count, "notifications": results, "audit_id": audit_id}


def _owner(session: Session, outbox_id: int) -> Document | None:
    row = session.get(ErpOutbox, outbox_id)
    return None if row is None else session.get(Document, row.document_id)
