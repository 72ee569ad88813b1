"""The invariant checker: reads the database (and the simulator) after a run, lists violations.

    .venv/bin/python -m bench.invariants --database-url postgresql+psycopg://... \\
        [--simulator-url http://127.0.0.1:PORT] [--expect-bills bills.txt] [--json]

Exits 0 when every check passes, 1 when any fails (each violation printed). Reusable from
Python: ``check_invariants(engine, expected=..., cloud=...)`` → ``InvariantReport``.

| check | violation when |
|---|---|
| ``issued_twice`` | a document's own issued invoices come from two push attempts, or its |
| | one-document invoices add up to more than its total with tax; a document covered by a |
| | merged invoice is covered by any other; a merged invoice is more than the totals of the |
| | documents it covers; the cloud's ``doubleIssue`` lists are not empty; the cloud |
| | holds two live bills for one (tenant, seller, billNo) |
| ``lost`` | an expected billNo has no document; a cloud bill has no document |
| ``unfinished`` | a current document is not ``invoiced``/``withdrawn`` and not parked with a |
| | reason (``rejected``, ``failed``, ``invoice_failed``, ``returned``, |
| | ``partially_invoiced`` with a last error or an event reason; ``pushed`` flagged |
| | ``issue_overdue``), and its tenant is not paused (a pause holds the tenant's |
| | documents with the pause's reason: counted apart) |
| ``audit`` | the applied ``document_events`` of a document do not chain: the first is not |
| | ``submit``/``resubmit`` into ``draft``, an event's ``from_status`` is not the previous |
| | ``to_status``, or the last ``to_status`` is not the document's status |
| ``ledger`` | per interface, the ledger's calls that reached the cloud are more than the cloud |
| | counted, or the cloud counted more than the ledger's calls that may have reached it |
| | plus ``ledger_slack`` (calls in flight in a SIGKILLed worker are never finished) |
| ``cloud_state`` | a document the cloud accepted (``pushed``, ``invoiced``, …) has no bill |
| | in the cloud, an ``invoiced`` document's issued invoice count differs from the cloud's, |
| | or a document flagged ``issue_overdue`` has issued invoices in the cloud |

A merged invoice (``autoMerge=1`` under the ``merge=when_asked`` dialect) is one row in
``invoices`` linked to every document it covers (``invoice_documents``); it counts once for
each of them. The cloud only merges bills that each fit one invoice alone, so a document it
covers needs no other invoice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func, select

from bench.workload import OVERDUE
from store.db import make_engine
from store.models import (
    CloudCall,
    Document,
    DocumentEvent,
    Invoice,
    InvoiceDocument,
    TenantState,
)
from store.states import ISSUE_OVERDUE

__all__ = [
    "CloudView",
    "InvariantReport",
    "check_invariants",
    "cloud_view",
    "main",
    "quiet_cloud_view",
]

FINISHED = frozenset({"invoiced", "withdrawn", "reversed"})
PARKED = frozenset({"rejected", "failed", "invoice_failed", "returned", "partially_invoiced"})
# States the cloud has (or had) a bill for.
IN_CLOUD = frozenset(
    {"pushed", "partially_invoiced", "invoiced", "invoice_failed", "withdrawing", "reversed"}
)
# Ledger outcomes of calls that certainly never reached the cloud (transient AND no HTTP
# answer: connect error, rate-limit wait) / may or may not have (a push row never finished).
# A transient outcome WITH an HTTP status (a 200 carrying errorCode 9999) was received.
NOT_SENT = frozenset({"transient"})
MAYBE_SENT = frozenset({"pending"})
FIRST_EVENTS = frozenset({"submit", "resubmit"})
TOLERANCE = Decimal("0.01")


@dataclass(frozen=True)
class CloudView:
    """What the simulator says: ``GET /_sim/stats`` and ``GET /_sim/bills``."""

    stats: Mapping[str, Any]
    bills: Sequence[Mapping[str, Any]]


@dataclass
class InvariantReport:
    documents: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    violations: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    ledger: dict[str, dict[str, int]] = field(default_factory=dict)
    paused_tenants: dict[str, str] = field(default_factory=dict)
    held_by_pause: int = 0

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def add(self, check: str, text: str) -> None:
        self.violations[check].append(text)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "documents": self.documents,
            "by_status": self.by_status,
            "violations": {k: v for k, v in self.violations.items() if v},
            "ledger": self.ledger,
            "paused_tenants": self.paused_tenants,
            "held_by_pause": self.held_by_pause,
        }

    def summary_lines(self, limit: int = 10) -> list[str]:
        lines = [f"documents {self.documents}: {self.by_status}"]
        if self.paused_tenants:
            lines.append(
                f"paused tenants {self.paused_tenants}: {self.held_by_pause} unfinished"
                " document(s) held by the pause (parked, the reason is the tenant's)"
            )
        for check in ("issued_twice", "lost", "unfinished", "audit", "ledger", "cloud_state"):
            found = self.violations.get(check, [])
            lines.append(f"  {check:<13} {'OK' if not found else f'{len(found)} VIOLATION(S)'}")
            lines.extend(f"      {text}" for text in found[:limit])
        return lines


def cloud_view(simulator_url: str) -> CloudView:
    with httpx.Client(base_url=simulator_url, timeout=60.0) as client:
        stats = client.get("/_sim/stats").json()
        bills = client.get("/_sim/bills").json()
    return CloudView(stats=stats, bills=bills)


def quiet_cloud_view(
    simulator_url: str, engine: Engine, *, settle: float = 1.0, timeout: float = 30.0
) -> CloudView:
    """``cloud_view`` once the bridge has gone quiet: the simulator's call counts and the
    ledger's row count unchanged for ``settle`` seconds (at most ``timeout``).

    A document is ``invoiced`` before its late duplicate callbacks and polls have finished
    asking the cloud; judging the ledger against the cloud while they still run compares
    two moments (the cloud counted a call whose ledger row is not read yet, or the reverse).
    """

    def snapshot() -> tuple[Any, int]:
        with httpx.Client(base_url=simulator_url, timeout=60.0) as client:
            calls = client.get("/_sim/stats").json().get("calls", {})
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(CloudCall)).scalar_one()
        return calls, int(rows)

    deadline = time.monotonic() + timeout
    before = snapshot()
    while time.monotonic() < deadline:
        time.sleep(settle)
        after = snapshot()
        if after == before:
            break
        before = after
    return cloud_view(simulator_url)


def check_invariants(
    engine: Engine,
    *,
    expected: Iterable[str] | None = None,
    cloud: CloudView | None = None,
    ledger_slack: int = 0,
) -> InvariantReport:
    """Every check of the module table; ``cloud`` None skips the cloud-side ones."""
    report = InvariantReport()
    with engine.connect() as conn:
        docs = conn.execute(
            select(
                Document.id, Document.tenant, Document.seller_tax_id, Document.bill_no,
                Document.status, Document.is_current, Document.total_incl_tax,
                Document.last_error_code, Document.last_error_message,
            ).order_by(Document.id)
        ).all()  # fmt: skip
        events = conn.execute(
            select(
                DocumentEvent.document_id, DocumentEvent.from_status, DocumentEvent.to_status,
                DocumentEvent.event, DocumentEvent.outcome, DocumentEvent.reason,
            ).order_by(DocumentEvent.document_id, DocumentEvent.id)
        ).all()  # fmt: skip
        invoices = conn.execute(
            select(
                Invoice.id, Invoice.document_id, Invoice.push_attempt, Invoice.include_tax_amount
            ).where(Invoice.invoice_num.is_not(None), Invoice.invoice_num != "")
        ).all()
        links = conn.execute(select(InvoiceDocument.invoice_id, InvoiceDocument.document_id)).all()
        ledger_rows = conn.execute(
            select(
                CloudCall.interface,
                CloudCall.outcome,
                CloudCall.http_status.is_(None).label("no_answer"),
                func.count(),
            ).group_by(CloudCall.interface, CloudCall.outcome, CloudCall.http_status.is_(None))
        ).all()

        paused = conn.execute(
            select(TenantState.tenant, TenantState.paused_reason).where(
                TenantState.paused.is_(True)
            )
        ).all()

    report.paused_tenants = {str(t): str(r or "") for t, r in paused}
    current = [d for d in docs if d.is_current]
    report.documents = len(current)
    report.by_status = dict(Counter(_status_key(d) for d in current))

    by_doc_events: dict[int, list[Any]] = defaultdict(list)
    for event in events:
        by_doc_events[event.document_id].append(event)
    # Which documents each issued invoice covers: its own, and any linked (merged invoices).
    covers: dict[int, set[int]] = {inv.id: {inv.document_id} for inv in invoices}
    for invoice_id, document_id in links:
        if invoice_id in covers:
            covers[invoice_id].add(document_id)
    issued: dict[int, list[Any]] = defaultdict(list)
    for invoice in invoices:
        for document_id in covers[invoice.id]:
            issued[document_id].append(invoice)
    totals = {d.id: d.total_incl_tax for d in docs}

    # issued_twice (database side)
    for doc in docs:
        rows = issued.get(doc.id, [])
        own = [r for r in rows if r.document_id == doc.id]
        attempts = {r.push_attempt for r in own if r.push_attempt is not None}
        if len(attempts) > 1:
            report.add(
                "issued_twice",
                f"{doc.bill_no} (#{doc.id}): invoices from push attempts {sorted(attempts)}",
            )
        merged = [r for r in rows if len(covers[r.id]) > 1]
        if merged and len(rows) > 1:
            report.add(
                "issued_twice",
                f"{doc.bill_no} (#{doc.id}): covered by merged invoice #{merged[0].id}"
                f" and {len(rows) - 1} other(s)",
            )
        amounts = [
            r.include_tax_amount
            for r in rows
            if r.include_tax_amount is not None and len(covers[r.id]) == 1
        ]
        if amounts and doc.total_incl_tax is not None:
            total = abs(sum(amounts, Decimal("0")))
            if total > abs(doc.total_incl_tax) + TOLERANCE:
                report.add(
                    "issued_twice",
                    f"{doc.bill_no} (#{doc.id}): issued {total} > total {doc.total_incl_tax}",
                )
    for invoice in invoices:
        covered = covers[invoice.id]
        if len(covered) < 2 or invoice.include_tax_amount is None:
            continue
        ceiling = sum((abs(totals.get(d) or Decimal("0")) for d in covered), Decimal("0"))
        if abs(invoice.include_tax_amount) > ceiling + TOLERANCE:
            report.add(
                "issued_twice",
                f"merged invoice #{invoice.id}: {invoice.include_tax_amount} > {ceiling},"
                f" the totals of the {len(covered)} documents it covers",
            )

    # lost
    known = {d.bill_no for d in docs}
    if expected is not None:
        missing = sorted(set(expected) - known)
        for bill_no in missing:
            report.add("lost", f"{bill_no}: submitted, no document in the database")

    # unfinished
    for doc in current:
        if doc.status in FINISHED:
            continue
        reason = doc.last_error_message or doc.last_error_code
        doc_events = by_doc_events.get(doc.id, [])
        if not reason and doc_events:
            reason = doc_events[-1].reason
        if doc.status in PARKED and reason:
            continue
        if doc.status == "pushed" and doc.last_error_code == ISSUE_OVERDUE and reason:
            # Flagged for an operator with its reason; _check_cloud verifies the cloud
            # really issued nothing for it.
            continue
        if doc.tenant in report.paused_tenants:
            # Held by a paused tenant: an operator sees the pause and its reason (invariant 3).
            report.held_by_pause += 1
            continue
        why = "parked without a reason" if doc.status in PARKED else "not finished"
        report.add("unfinished", f"{doc.bill_no} (#{doc.id}): {doc.status}, {why}")

    # audit
    for doc in docs:
        applied = [e for e in by_doc_events.get(doc.id, []) if e.outcome == "applied"]
        problem = _chain_problem(applied, doc.status)
        if problem:
            report.add("audit", f"{doc.bill_no} (#{doc.id}): {problem}")

    if cloud is not None:
        _check_cloud(report, cloud, docs, issued, ledger_rows, ledger_slack)
    return report


def _chain_problem(applied: list[Any], status: str) -> str | None:
    if not applied:
        return "no event rows"
    first = applied[0]
    if first.event not in FIRST_EVENTS or first.to_status != "draft":
        return f"first event {first.event} → {first.to_status}, not submit → draft"
    previous = first.to_status
    for event in applied[1:]:
        if event.from_status != previous:
            return f"event {event.event} from {event.from_status} but the state was {previous}"
        previous = event.to_status
    if previous != status:
        return f"events end in {previous} but the document is {status}"
    return None


def _status_key(doc: Any) -> str:
    """The document's state; ``OVERDUE`` for a pushed document flagged ``issue_overdue``."""
    if doc.status == "pushed" and doc.last_error_code == ISSUE_OVERDUE:
        return OVERDUE
    return str(doc.status)


def _check_cloud(
    report: InvariantReport,
    cloud: CloudView,
    docs: Sequence[Any],
    issued: Mapping[int, list[Any]],
    ledger_rows: Sequence[Any],
    ledger_slack: int,
) -> None:
    double = cloud.stats.get("doubleIssue", {})
    for kind in ("live_twice", "over_issued"):
        for item in double.get(kind, []) or []:
            report.add("issued_twice", f"cloud {kind}: {item}")
    live: Counter[tuple[str, str, str]] = Counter()
    cloud_bills: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for bill in cloud.bills:
        key = (str(bill["sellerTaxpayerId"]), str(bill["billNo"]))
        cloud_bills[key].append(bill)
        if bill.get("live"):
            live[(str(bill["tenant"]), *key)] += 1
    for ident, count in live.items():
        if count > 1:
            report.add("issued_twice", f"cloud holds {count} live bills for {ident}")

    doc_keys = {(d.seller_tax_id, d.bill_no) for d in docs}
    for key in cloud_bills:
        if key not in doc_keys:
            report.add("lost", f"cloud bill {key[1]} (seller {key[0]}) has no document")
    for doc in docs:
        if not doc.is_current or doc.status not in IN_CLOUD:
            continue
        bills = cloud_bills.get((doc.seller_tax_id, doc.bill_no), [])
        if not bills:
            report.add("cloud_state", f"{doc.bill_no} (#{doc.id}) is {doc.status}, no cloud bill")
            continue
        if doc.status == "pushed" and doc.last_error_code == ISSUE_OVERDUE:
            issued_there = sum(int(b.get("issued", 0)) for b in bills if b.get("live"))
            if issued_there:
                report.add(
                    "cloud_state",
                    f"{doc.bill_no} (#{doc.id}) is flagged overdue, but the cloud issued"
                    f" {issued_there} invoice(s) for it",
                )
        if doc.status == "invoiced":
            cloud_issued = sum(int(b.get("issued", 0)) for b in bills if b.get("live"))
            ours = len(issued.get(doc.id, []))
            if cloud_issued != ours:
                report.add(
                    "cloud_state",
                    f"{doc.bill_no} (#{doc.id}): {ours} issued invoices here,"
                    f" {cloud_issued} in the cloud",
                )

    sent: Counter[str] = Counter()
    maybe: Counter[str] = Counter()
    for interface, outcome, no_answer, count in ledger_rows:
        if outcome in NOT_SENT and no_answer:
            continue
        (maybe if outcome in MAYBE_SENT else sent)[interface] += int(count)
    cloud_calls = {
        name: sum(int(v) for v in outcomes.values())
        for name, outcomes in cloud.stats.get("calls", {}).items()
    }
    for interface in sorted(set(sent) | set(maybe) | set(cloud_calls)):
        if interface == "openApi":  # refused before the interface was known: never ours
            continue
        counted = cloud_calls.get(interface, 0)
        low, high = sent[interface], sent[interface] + maybe[interface] + ledger_slack
        report.ledger[interface] = {
            "ledger": low,
            "ledger_pending": maybe[interface],
            "cloud": counted,
        }
        if not low <= counted <= high:
            report.add(
                "ledger",
                f"{interface}: ledger {low} (+{maybe[interface]} pending, slack {ledger_slack}),"
                f" cloud counted {counted}",
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the bridge's invariants after a run.")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--simulator-url", help="also check against the simulator's view")
    parser.add_argument("--expect-bills", type=Path, help="file with one expected billNo a line")
    parser.add_argument("--ledger-slack", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    expected = None
    if args.expect_bills:
        expected = [
            line.strip()
            for line in args.expect_bills.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    engine = make_engine(args.database_url)
    try:
        cloud = cloud_view(args.simulator_url) if args.simulator_url else None
        report = check_invariants(
            engine, expected=expected, cloud=cloud, ledger_slack=args.ledger_slack
        )
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False, default=str))
    else:
        print("\n".join(report.summary_lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
