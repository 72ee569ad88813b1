"""Three-way reconciliation: the ERP's list, the bridge's documents and the cloud's answer.

(Not ``worker.services.reconcile``, which applies one callback to its document.)

``reconcile(sessions, tenants, ask, window, ...)`` compares three sides and returns a
``Report`` of findings (``schemas.reconciliation``); ``run_and_store`` also stores it
(``reconciliation_reports``). Used by ``fapiao reconcile``, ``/v1/reconciliation`` and the
nightly beat task ``fapiao.reconcile_daily`` (the previous Asia/Shanghai day, per tenant).

| side   | what is read                                                               |
|--------|----------------------------------------------------------------------------|
| ERP    | its list (billNo, totals, optional seller and tenant), when given          |
| bridge | current documents of bills first submitted in the window (revision 1's     |
|        | ``created_at``, Asia/Shanghai days), ERP-listed bills at any time, and     |
|        | ``callback_inbox`` rows left ``orphan`` received in the window             |
| cloud  | BILL.INVOICE.QUERY per bill (``ask``)                                      |

**Batching and rate.** BILL.INVOICE.QUERY takes ONE ``serialNo`` per call
(docs/CLOUD-CONTRACT.md §8 [D S6]: ``data`` is an object; its answer is an array "one element
per bill"), so a batch on the wire is one bill. The bills are asked ``CONCURRENCY`` at a time,
and every call goes through the tenant's Kingdee client: the per-tenant Redis rate gate shared
with the workers (``worker.ratelimit``) and the call ledger. A reconciliation therefore never
makes the tenant exceed its ``rate_limit_per_second``; it takes its calls from the same budget
as the workers. A bill the cloud would not answer (transient, rate gate still full after its
wait, configuration) is listed in ``unanswered``, never reported as a finding.

**In flight** (never a finding, counted in ``in_flight``, not queried): documents in a state
the conversation with the cloud is still under way (``IN_FLIGHT_STATES``: pushing, in_doubt,
withdrawing), and documents whose state changed less than ``grace`` ago (default 30 min:
a push just accepted whose invoices are being issued, a callback on its way).

**What the bridge claims the cloud holds** is read through ``BRIDGE_VIEW`` (state →
``Expect``), one small table to extend when a state is added (``reversed``: present,
issued, invoices voided/红冲); a state missing from it is compared with the ERP only.
``INVOICE_LEVEL_STATES``: states in which the bridge's own per-invoice standing
(``invoices.standing``) is trusted (a partial reversal keeps ``invoiced``): an invoice the
cloud shows voided or 红冲 is no finding when the bridge already records it so
(``STANDING_STATUSES``); when the bridge still thinks it normal, it is ("cloud shows voided,
bridge shows invoiced": e.g. a void whose callback was lost).

**Totals compared** (exact, to the cent): ERP ``totalAmount`` / ``includeTaxAmount`` with the
document's ``totalAmount`` / 价税合计; the cloud's issued invoices' ``includeTaxAmount`` sum with
the bridge's recorded invoices of the document (an invoice the bridge missed, or a different
amount); the ERP's ``includeTaxAmount`` with the cloud's when the bridge lacks the bill.

The ``unknown_bill`` dialect: an empty ``invoiceList`` is "present" only when the tenant
declares a reading under which it cannot mean "unknown" (``worker.services.query``); an
ambiguous answer is never taken as evidence either way (no ``cloud_unknown``, no
``cloud_only`` from it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

from sqlalchemy.orm import Session, sessionmaker

from schemas.cloud_contract import (
    INVOICE_STATUS_NORMAL,
    INVOICE_STATUS_PARTIAL_RED,
    INVOICE_STATUS_RED,
    INVOICE_STATUS_VOID,
)
from schemas.kingdee import CallbackParseError, InvoiceItem, parse_callback_with
from schemas.reconciliation import ErpBill, Finding, FindingKind, Window, reason
from schemas.tenants import TenantConfig, TenantsFile
from store.columns import utcnow
from store.db import unit_of_work
from store.reconciliation import (
    BridgeDocument,
    documents_for_bills,
    documents_in_window,
    orphan_callbacks,
    save_report,
)
from store.states import DocumentStatus, InvoiceStanding
from worker.services.query import QueryAnswer

__all__ = [
    "BRIDGE_VIEW",
    "DEFAULT_GRACE",
    "INVOICE_LEVEL_STATES",
    "IN_FLIGHT_STATES",
    "Ask",
    "Expect",
    "Report",
    "reconcile",
    "run_and_store",
]

log = logging.getLogger(__name__)

Ask = Callable[[TenantConfig, str, str], QueryAnswer]  # (tenant, billNo, seller) → answer

CONCURRENCY: Final = 4
DEFAULT_GRACE: Final = timedelta(minutes=30)
IN_FLIGHT_STATES: Final = frozenset(
    {DocumentStatus.pushing.value, DocumentStatus.in_doubt.value, DocumentStatus.withdrawing.value}
)

NORMAL: Final = frozenset({INVOICE_STATUS_NORMAL})


@dataclass(frozen=True, slots=True)
class Expect:
    """What a document state says about the cloud: is the bill there, are invoices issued
    (``None``: either), which ``invoiceStatus`` its issued invoices may have."""

    present: bool | None
    issued: bool | None = None
    statuses: frozenset[str] = NORMAL


BRIDGE_VIEW: Final[dict[str, Expect]] = {
    DocumentStatus.draft.value: Expect(present=False),
    DocumentStatus.pushed.value: Expect(present=True, issued=False),
    DocumentStatus.partially_invoiced.value: Expect(present=True, issued=True),
    DocumentStatus.invoiced.value: Expect(present=True, issued=True),
    DocumentStatus.invoice_failed.value: Expect(present=True, issued=False),
    DocumentStatus.rejected.value: Expect(present=False),
    DocumentStatus.failed.value: Expect(present=False),
    DocumentStatus.withdrawn.value: Expect(present=False),
    # 回退: whether the cloud still lists a returned bill is not documented (§9.3).
    DocumentStatus.returned.value: Expect(present=None),
    # every invoice voided or fully red-flushed (their standing says which)
    DocumentStatus.reversed.value: Expect(
        present=True, issued=True, statuses=frozenset({INVOICE_STATUS_RED, INVOICE_STATUS_VOID})
    ),
}
INVOICE_LEVEL_STATES: Final[frozenset[str]] = frozenset(
    {
        DocumentStatus.invoiced.value,
        DocumentStatus.partially_invoiced.value,
        DocumentStatus.reversed.value,
    }
)
# The cloud's invoiceStatus values each standing of the bridge accounts for: a partial 红冲
# keeps 0 or shows 2 depending on the reading (dialect partial_red).
STANDING_STATUSES: Final[Mapping[str, frozenset[str]]] = {
    InvoiceStanding.normal.value: NORMAL,
    InvoiceStanding.partially_reversed.value: frozenset(
        {INVOICE_STATUS_NORMAL, INVOICE_STATUS_PARTIAL_RED}
    ),
    InvoiceStanding.reversed.value: frozenset({INVOICE_STATUS_RED}),
    InvoiceStanding.voided.value: frozenset({INVOICE_STATUS_VOID}),
}


@dataclass(slots=True)
class Report:
    window: Window
    tenant: str | None
    erp_bills: int | None = None
    documents: int = 0
    queried: int = 0
    in_flight: int = 0
    findings: list[Finding] = field(default_factory=list)
    unanswered: list[dict[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = {kind.value: 0 for kind in FindingKind}
        for finding in self.findings:
            counts[finding.kind.value] += 1
        return counts


# ------------------------------------------------------------------------------- helpers


def _issued(items: Iterable[InvoiceItem]) -> list[InvoiceItem]:
    """Invoices actually issued (failed issuance attempts carry no number)."""
    return [
        item for item in items if (item.invoiceNum or item.orderNo) and not item.issueErrorMessage
    ]


def _status(item: InvoiceItem) -> str:
    return (item.invoiceStatus or INVOICE_STATUS_NORMAL).strip()


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _cloud_sum(items: Sequence[InvoiceItem]) -> Decimal | None:
    amounts = [item.includeTaxAmount for item in items if item.invoiceProperty != 1]
    if any(a is None for a in amounts):
        return None
    return sum((a for a in amounts if a is not None), Decimal("0.00"))


def _bridge_side(doc: BridgeDocument) -> dict[str, Any]:
    issued = [inv for inv in doc.invoices if inv.invoice_num or inv.order_no]
    return {
        "documentId": doc.id,
        "status": doc.status,
        "totalAmount": _money(doc.total_amount),
        "includeTaxAmount": _money(doc.total_incl_tax),
        "invoices": [
            {
                "invoiceCode": inv.invoice_code,
                "invoiceNum": inv.invoice_num,
                "invoiceStatus": inv.invoice_status,
                "includeTaxAmount": _money(inv.include_tax_amount),
            }
            for inv in issued
        ],
    }


def _cloud_side(answer: QueryAnswer | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    if answer.kind == "absent":
        return {"known": False, "answer": answer.reason}
    issued = _issued(answer.items)
    return {
        "known": True,
        "ambiguous": answer.ambiguous,
        "includeTaxAmount": _money(_cloud_sum(issued)) if issued else None,
        "invoices": [
            {
                "invoiceCode": item.invoiceCode,
                "invoiceNum": item.invoiceNum,
                "invoiceStatus": _status(item),
                "invoiceProperty": item.invoiceProperty,
                "includeTaxAmount": _money(item.includeTaxAmount),
            }
            for item in issued
        ],
    }


def _erp_side(bill: ErpBill | None) -> dict[str, Any] | None:
    if bill is None:
        return None
    return {
        "line": bill.line,
        "totalAmount": _money(bill.totalAmount),
        "includeTaxAmount": _money(bill.includeTaxAmount),
    }


# ------------------------------------------------------------------------------- compare


def _compare_document(
    doc: BridgeDocument, erp: ErpBill | None, answer: QueryAnswer
) -> list[Finding]:
    """Findings about one bridge document given the cloud's answer (module docstring)."""
    found: list[Finding] = []

    def finding(kind: FindingKind, why: tuple[str, str], **extra: Any) -> None:
        found.append(
            Finding(
                kind,
                doc.bill_no,
                doc.tenant,
                doc.seller_tax_id,
                *why,
                erp=_erp_side(erp),
                bridge=_bridge_side(doc),
                cloud=_cloud_side(answer),
                extra=extra,
            )
        )

    expect = BRIDGE_VIEW.get(doc.status)
    issued = _issued(answer.items) if answer.kind == "present" else []
    known = answer.kind == "present" and (not answer.ambiguous or bool(answer.items))
    if expect is None:
        # A state this table does not know yet (added elsewhere): say nothing rather than guess.
        log.warning("reconciliation: no BRIDGE_VIEW entry for state %r", doc.status)
    elif answer.kind == "absent" and expect.present:
        finding(FindingKind.cloud_unknown, reason("cloud_unknown", status=doc.status))
    elif known and expect.present is False:
        finding(FindingKind.state_mismatch, reason("cloud_has_it", status=doc.status))
    elif known:
        trusted = {
            (inv.invoice_code, inv.invoice_num): STANDING_STATUSES.get(inv.standing, NORMAL)
            for inv in doc.invoices
            if doc.status in INVOICE_LEVEL_STATES
        }
        blue = [item for item in issued if item.invoiceProperty != 1]
        if expect.issued is False and blue:
            finding(
                FindingKind.state_mismatch,
                reason("cloud_issued", count=len(blue), status=doc.status),
            )
        elif expect.issued is True and not blue:
            finding(FindingKind.state_mismatch, reason("cloud_lists_none", status=doc.status))
        for item in blue if expect.issued is not False else []:
            status = _status(item)
            if status in expect.statuses:
                continue
            if status in trusted.get((item.invoiceCode or "", item.invoiceNum), frozenset()):
                continue
            invoice = f"{item.invoiceCode or ''}{item.invoiceNum or ''}"
            finding(
                FindingKind.state_mismatch,
                reason("cloud_status", word=status, invoice=invoice, status=doc.status),
                invoiceNum=item.invoiceNum,
                invoiceStatus=status,
            )
        if blue and expect.issued is not False:
            cloud_sum = _cloud_sum(blue)
            bridge_amounts = [
                inv.include_tax_amount for inv in doc.invoices if inv.invoice_num or inv.order_no
            ]
            bridge_sum = (
                None
                if any(a is None for a in bridge_amounts)
                else sum((a for a in bridge_amounts if a is not None), Decimal("0.00"))
            )
            if cloud_sum is not None and bridge_sum is not None and cloud_sum != bridge_sum:
                finding(
                    FindingKind.total_mismatch,
                    reason("issued_total", cloud=cloud_sum, bridge=bridge_sum),
                    sides="bridge/cloud",
                )
    if erp is not None:
        for column, erp_value, bridge_value in (
            ("totalAmount", erp.totalAmount, doc.total_amount),
            ("includeTaxAmount", erp.includeTaxAmount, doc.total_incl_tax),
        ):
            if erp_value is not None and bridge_value is not None and erp_value != bridge_value:
                finding(
                    FindingKind.total_mismatch,
                    reason("erp_bridge_total", column=column, erp=erp_value, bridge=bridge_value),
                    sides="erp/bridge",
                    column=column,
                )
    return found


def _compare_erp_only(
    bill: ErpBill, tenant: str, seller: str | None, answer: QueryAnswer | None
) -> list[Finding]:
    """An ERP-listed bill the bridge never received."""
    known = (
        answer is not None
        and answer.kind == "present"
        and (not answer.ambiguous or bool(answer.items))
    )

    def make(kind: FindingKind, why: tuple[str, str], **extra: Any) -> Finding:
        return Finding(
            kind,
            bill.billNo,
            tenant,
            seller,
            *why,
            erp=_erp_side(bill),
            bridge=None,
            cloud=_cloud_side(answer),
            extra=extra,
        )

    if not known:
        return [make(FindingKind.not_submitted, reason("not_submitted"))]
    assert answer is not None
    found = [make(FindingKind.cloud_only, reason("erp_and_cloud"))]
    cloud_sum = _cloud_sum(_issued(answer.items)) if _issued(answer.items) else None
    if (
        bill.includeTaxAmount is not None
        and cloud_sum is not None
        and bill.includeTaxAmount != cloud_sum
    ):
        found.append(
            make(
                FindingKind.total_mismatch,
                reason("erp_cloud_total", erp=bill.includeTaxAmount, cloud=cloud_sum),
                sides="erp/cloud",
            )
        )
    return found


# ------------------------------------------------------------------------------- run


def _erp_candidates(
    bill: ErpBill, tenants: TenantsFile, tenant: str | None
) -> list[tuple[TenantConfig, str]]:
    """(tenant, seller) pairs an ERP line may belong to: as named by the line (or
    ``tenant``), else every seller of every tenant; empty when a named one is unknown."""
    if bill.tenant or tenant:
        found = tenants.by_name(bill.tenant or tenant or "")
        configs = [found] if found is not None else []
    elif bill.sellerTaxpayerId:
        found = tenants.tenant_for_seller(bill.sellerTaxpayerId)
        configs = [found] if found is not None else []
    else:
        configs = list(tenants.tenants)
    return [
        (config, seller)
        for config in configs
        for seller in (
            [bill.sellerTaxpayerId] if bill.sellerTaxpayerId else sorted(config.seller_tax_ids)
        )
    ]


def _orphan_findings(
    session: Session,
    tenants: TenantsFile,
    window: Window,
    tenant: str | None,
    known: set[tuple[str, str]],
) -> list[Finding]:
    found: list[Finding] = []
    codecs = tenants.callback_codecs()
    for row in orphan_callbacks(session, window.start, window.end):
        try:
            parsed = parse_callback_with(row.raw_body, codecs)
        except CallbackParseError:
            continue  # a body nobody can read is the inbox's business (state failed), not ours
        for item in parsed.items:
            seller = item.sellerTaxpayerId or ""
            config = tenants.tenant_for_seller(seller) if seller else None
            name = config.name if config is not None else "?"
            if (tenant is not None and name != tenant) or (seller, item.billNo) in known:
                continue
            known.add((seller, item.billNo))
            found.append(
                Finding(
                    FindingKind.cloud_only,
                    item.billNo,
                    name,
                    seller or None,
                    *reason("orphan_callback"),
                    cloud={
                        "known": True,
                        "callbackInboxId": row.id,
                        "invoiceNum": item.invoiceNum,
                        "invoiceStatus": item.invoiceStatus,
                        "includeTaxAmount": _money(item.includeTaxAmount),
                    },
                )
            )
    return found


def reconcile(
    sessions: sessionmaker[Session],
    tenants: TenantsFile,
    ask: Ask,
    window: Window,
    *,
    tenant: str | None = None,
    erp: Sequence[ErpBill] | None = None,
    grace: timedelta = DEFAULT_GRACE,
    now: datetime | None = None,
    concurrency: int = CONCURRENCY,
) -> Report:
    """Compare the three sides (module docstring); nothing is written."""
    now = now or utcnow()
    report = Report(window, tenant, erp_bills=None if erp is None else len(erp))
    with sessions() as session:
        docs = documents_in_window(session, window.start, window.end, tenant)
        erp_list = list(erp or [])
        listed = documents_for_bills(session, [b.billNo for b in erp_list], tenant)
    by_key = {(d.tenant, d.seller_tax_id, d.bill_no): d for d in [*docs, *listed]}
    by_bill: dict[str, list[BridgeDocument]] = {}
    for doc in by_key.values():
        by_bill.setdefault(doc.bill_no, []).append(doc)

    erp_of: dict[int, ErpBill] = {}
    erp_missing: list[tuple[ErpBill, list[tuple[TenantConfig, str]]]] = []
    for bill in erp_list:
        matches = [
            d
            for d in by_bill.get(bill.billNo, [])
            if (bill.sellerTaxpayerId in (None, d.seller_tax_id))
            and ((bill.tenant or tenant) in (None, d.tenant))
        ]
        if matches:
            erp_of[matches[0].id] = bill
        else:
            erp_missing.append((bill, _erp_candidates(bill, tenants, tenant)))

    compared = [d for d in by_key.values() if tenant is None or d.tenant == tenant]
    report.documents = len(compared)
    jobs: list[tuple[str, Any]] = []
    for doc in compared:
        if doc.status in IN_FLIGHT_STATES or doc.status_changed_at > now - grace:
            report.in_flight += 1
            continue
        jobs.append(("doc", doc))
    for bill, candidates in erp_missing:
        if not candidates:
            report.findings.append(
                Finding(
                    FindingKind.not_submitted,
                    bill.billNo,
                    bill.tenant or tenant or "?",
                    bill.sellerTaxpayerId,
                    *reason("not_submitted_nowhere"),
                    erp=_erp_side(bill),
                )
            )
            continue
        jobs.append(("erp", (bill, candidates)))

    lock = threading.Lock()

    def asked(config: TenantConfig, bill_no: str, seller: str) -> QueryAnswer:
        answer = ask(config, bill_no, seller)
        with lock:
            report.queried += 1
            if answer.kind in ("retry", "config"):
                report.unanswered.append(
                    {"billNo": bill_no, "tenant": config.name, "reason": answer.reason}
                )
        return answer

    def run_job(job: tuple[str, Any]) -> list[Finding]:
        kind, what = job
        if kind == "doc":
            doc: BridgeDocument = what
            config = tenants.by_name(doc.tenant)
            if config is None:
                with lock:
                    report.unanswered.append(
                        {"billNo": doc.bill_no, "tenant": doc.tenant, "reason": "no such tenant"}
                    )
                return []
            answer = asked(config, doc.bill_no, doc.seller_tax_id)
            if answer.kind in ("retry", "config"):
                return []
            return _compare_document(doc, erp_of.get(doc.id), answer)
        bill, candidates = what
        names = {config.name for config, _ in candidates}
        sellers = {seller for _, seller in candidates}
        # Not found anywhere: name the tenant and seller only when the line pins them down.
        where = (
            next(iter(names)) if len(names) == 1 else "?",
            next(iter(sellers)) if len(sellers) == 1 else None,
        )
        last: QueryAnswer | None = None
        for config, seller in candidates:
            answer = asked(config, bill.billNo, seller)
            if answer.kind in ("retry", "config"):
                return []
            if answer.kind == "present" and (not answer.ambiguous or answer.items):
                return _compare_erp_only(bill, config.name, seller, answer)
            last = answer
        return _compare_erp_only(bill, where[0], where[1], last)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for findings in pool.map(run_job, jobs):
            report.findings.extend(findings)

    known = {(d.seller_tax_id, d.bill_no) for d in by_key.values()}
    known |= {(f.seller_tax_id or "", f.bill_no) for f in report.findings}
    with sessions() as session:
        report.findings.extend(_orphan_findings(session, tenants, window, tenant, known))
    report.findings.sort(key=lambda f: (f.tenant, f.bill_no, f.kind.value))
    report.unanswered.sort(key=lambda u: (u["tenant"], u["billNo"]))
    return report


def run_and_store(
    sessions: sessionmaker[Session],
    tenants: TenantsFile,
    ask: Ask,
    window: Window,
    *,
    trigger: Literal["cli", "api", "beat"],
    actor: str,
    tenant: str | None = None,
    erp: Sequence[ErpBill] | None = None,
    grace: timedelta = DEFAULT_GRACE,
    now: Callable[[], datetime] = utcnow,
) -> dict[str, Any]:
    """``reconcile``, stored as one ``reconciliation_reports`` row; the report as JSON."""
    started = now()
    report = reconcile(
        sessions, tenants, ask, window, tenant=tenant, erp=erp, grace=grace, now=started
    )
    with unit_of_work(sessions) as session:
        row = save_report(
            session,
            tenant=tenant,
            since=window.since,
            until=window.until,
            trigger=trigger,
            actor=actor[:64],
            started_at=started,
            finished_at=now(),
            erp_bills=report.erp_bills,
            documents=report.documents,
            queried=report.queried,
            total=len(report.findings),
            counts=report.counts(),
            findings=[f.as_json() for f in report.findings],
            unanswered=report.unanswered,
        )
        stored = report_json(row, in_flight=report.in_flight)
    log.info(
        "reconciliation %s..%s tenant=%s: %d finding(s), %d unanswered",
        window.since,
        window.until,
        tenant or "*",
        len(report.findings),
        len(report.unanswered),
    )
    return stored


def report_json(row: Any, *, in_flight: int | None = None) -> dict[str, Any]:
    """A stored ``reconciliation_reports`` row as the CLI and HTTP API show it."""
    window = Window(row.since, row.until)
    value: dict[str, Any] = {
        "id": row.id,
        "tenant": row.tenant,
        "window": window.as_json(),
        "trigger": row.trigger,
        "actor": row.actor,
        "started_at": row.started_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "erp_bills": row.erp_bills,
        "documents": row.documents,
        "queried": row.queried,
        "total": row.total,
        "counts": row.counts,
        "unanswered": row.unanswered or [],
        "findings": row.findings,
    }
    if in_flight is not None:
        value["in_flight"] = in_flight
    return value


def cloud_ask(rt: Any) -> Ask:
    """``Ask`` over a worker ``Runtime``: BILL.INVOICE.QUERY through the tenant's client."""
    from worker.services.query import query_bill

    def ask(tenant: TenantConfig, bill_no: str, seller: str) -> QueryAnswer:
        return query_bill(
            rt, tenant, bill_no=bill_no, seller_tax_id=seller, document_id=None, attempt=None
        )

    return ask


def reconcile_daily(rt: Any) -> list[dict[str, Any]]:
    """The nightly job: the previous Asia/Shanghai day, one stored report per tenant."""
    from schemas.reconciliation import previous_day

    window = previous_day(rt.clock())
    ask = cloud_ask(rt)
    return [
        run_and_store(
            rt.sessions,
            rt.tenants,
            ask,
            window,
            trigger="beat",
            actor="beat",
            tenant=name,
            now=rt.clock,
        )
        for name in rt.tenants.names
    ]
