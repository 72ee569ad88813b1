"""The demo's story, told to a running stack: submit, disturb, watch, judge.

``run_scenario(stack, samples, observer)`` does, in order:

| step | through |
|---|---|
| the cloud will refuse one bill (-10007) and drop one bill's callbacks | ``PUT /_sim/bill-rules`` |
| submit wave 1 (one batch) | ``POST /v1/documents`` |
| wait until wave 1 has its first answer; withdraw ``withdraw`` bills once pushed | DB, |
| | ``POST /v1/documents/{bill_no}/withdraw`` |
| expire every token in the cloud: the next call meets an expired one | ``/_sim/tokens/expire`` |
| submit wave 2 | ``POST /v1/documents`` |
| wait until every document settled (``SETTLED_STATES``) or the manifest's timeout | DB |
| read every document back, and the cloud's statistics | ``GET /v1/documents/{bill_no}``, |
| | ``GET /_sim/stats`` |

The verdict (``DemoReport.ok``): every document matches its manifest entry and the cloud's
double-issue lists (``doubleIssue.live_twice`` / ``over_issued``) are empty.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine, func, select

from demo.samples import SETTLED_STATES, Outcome, SampleDocument, SampleSet
from demo.stack import DemoStack
from schemas.money import dumps_exact
from store.db import make_engine
from store.models import Document, Invoice

__all__ = ["DemoReport", "DocumentRow", "Observer", "run_scenario"]

# Out of these a document still has work owed before its first cloud answer.
_BEFORE_ANSWER = frozenset({"draft", "pushing", "in_doubt"})
_POLL_INTERVAL = 0.25


@dataclass(frozen=True, slots=True)
class DocumentRow:
    """One document as the database shows it right now (the live table)."""

    bill_no: str
    tenant: str
    status: str
    invoices: int


class Observer(Protocol):
    def note(self, text: str) -> None: ...

    def progress(self, rows: list[DocumentRow], elapsed: float) -> None: ...


@dataclass
class DemoReport:
    outcomes: dict[str, Outcome]
    mismatches: dict[str, list[str]]
    double_issue: dict[str, Any]
    cloud_stats: dict[str, Any]
    settled: bool
    elapsed: float
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(o.status for o in self.outcomes.values()))

    @property
    def double_issues(self) -> int:
        return sum(len(v) for v in self.double_issue.values() if isinstance(v, list))

    @property
    def ok(self) -> bool:
        return self.settled and not self.mismatches and self.double_issues == 0


class _Run:
    """State of one scenario run (the clients, the rows last seen, actions taken)."""

    def __init__(self, stack: DemoStack, samples: SampleSet, observer: Observer) -> None:
        self.stack = stack
        self.samples = samples
        self.observer = observer
        self.api = httpx.Client(
            base_url=stack.api_url,
            headers={"Authorization": f"Bearer {stack.api_key}"},
            timeout=30.0,
        )
        self.sim = httpx.Client(base_url=stack.simulator_url, timeout=30.0)
        self.engine: Engine = make_engine(stack.database_url)
        self.started = time.monotonic()
        self.rows: dict[str, DocumentRow] = {}
        self.withdrawn: set[str] = set()
        self.notes: list[str] = []

    def close(self) -> None:
        self.api.close()
        self.sim.close()
        self.engine.dispose()

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.observer.note(text)

    # ------------------------------------------------------------------ reading

    def refresh(self) -> dict[str, DocumentRow]:
        issued = (
            select(Invoice.document_id, func.count(Invoice.id).label("n"))
            .where(Invoice.invoice_num.is_not(None), Invoice.invoice_num != "")
            .group_by(Invoice.document_id)
            .subquery()
        )
        query = (
            select(Document.bill_no, Document.tenant, Document.status, issued.c.n)
            .outerjoin(issued, issued.c.document_id == Document.id)
            .where(Document.is_current.is_(True))
            .order_by(Document.id)
        )
        with self.engine.connect() as conn:
            self.rows = {
                bill_no: DocumentRow(bill_no, tenant, status, int(n or 0))
                for bill_no, tenant, status, n in conn.execute(query)
            }
        self.observer.progress(list(self.rows.values()), time.monotonic() - self.started)
        return self.rows

    def status_of(self, bill_no: str) -> str | None:
        row = self.rows.get(bill_no)
        return row.status if row else None

    # ------------------------------------------------------------------ acting

    def set_bill_rules(self) -> None:
        refuse = {d.bill_no: d.cloud_refuses for d in self.samples.documents if d.cloud_refuses}
        drops = [d.bill_no for d in self.samples.documents if d.drop_callbacks]
        response = self.sim.put("/_sim/bill-rules", json={"refuse": refuse, "dropCallbacks": drops})
        response.raise_for_status()
        for bill_no, code in refuse.items():
            self.note(f"cloud will refuse {bill_no} with errorCode {code}")
        for bill_no in drops:
            self.note(f"cloud will never call back for {bill_no} (the bridge must poll)")

    def submit(self, wave: int, documents: list[SampleDocument]) -> None:
        body = dumps_exact([d.document for d in documents]).encode("utf-8")
        response = self.api.post(
            "/v1/documents", content=body, headers={"Content-Type": "application/json"}
        )
        if response.status_code not in (202, 207):
            raise RuntimeError(
                f"POST /v1/documents answered {response.status_code}: {response.text[:500]}"
            )
        results = response.json().get("results", [])
        accepted = sum(1 for r in results if r.get("status_code") in (200, 202))
        self.note(
            f"wave {wave}: submitted {len(documents)} documents → HTTP {response.status_code},"
            f" {accepted} accepted"
        )
        for result in results:
            if result.get("status_code") not in (200, 202):
                self.note(f"  refused at intake: {result}")

    def withdraw_when_pushed(self) -> None:
        for sample in self.samples.documents:
            if not sample.withdraw or sample.bill_no in self.withdrawn:
                continue
            if self.status_of(sample.bill_no) != "pushed":
                continue
            response = self.api.post(
                f"/v1/documents/{sample.bill_no}/withdraw",
                params={"seller_tax_id": sample.seller_tax_id},
            )
            self.withdrawn.add(sample.bill_no)
            self.note(f"ERP withdraws {sample.bill_no} → HTTP {response.status_code}")

    def expire_tokens(self) -> None:
        response = self.sim.post("/_sim/tokens/expire", json={})
        response.raise_for_status()
        self.note(
            f"cloud expired {response.json().get('expired')} token(s): the next call refreshes"
        )

    def wait(self, bill_nos: Iterable[str], done: frozenset[str], deadline: float) -> bool:
        wanted = list(bill_nos)
        while True:
            self.stack.check_alive()
            self.refresh()
            self.withdraw_when_pushed()
            states = [self.status_of(b) for b in wanted]
            if all(s is not None and s in done for s in states):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_INTERVAL)

    # ------------------------------------------------------------------ verdict

    def outcome(self, sample: SampleDocument) -> Outcome:
        response = self.api.get(
            f"/v1/documents/{sample.bill_no}", params={"seller_tax_id": sample.seller_tax_id}
        )
        if response.status_code != 200:
            return Outcome(sample.bill_no, f"missing (HTTP {response.status_code})", 0, "")
        view = response.json()
        issued = [i for i in view.get("invoices", []) if i.get("invoice_num")]
        texts = [str(view.get(k) or "") for k in ("reason", "last_error_message")]
        reason = " / ".join(dict.fromkeys(t for t in texts if t))
        return Outcome(sample.bill_no, str(view["status"]), len(issued), reason)


def run_scenario(stack: DemoStack, samples: SampleSet, observer: Observer) -> DemoReport:
    """Tell the story (module table) and judge the result; the stack stays running."""
    run = _Run(stack, samples, observer)
    try:
        deadline = run.started + samples.settle_timeout_seconds
        run.set_bill_rules()
        waves = samples.waves
        for index, wave in enumerate(waves):
            documents = samples.wave(wave)
            run.submit(wave, documents)
            if index + 1 < len(waves):
                answered = SETTLED_STATES | {"pushed", "partially_invoiced", "withdrawing"}
                run.wait([d.bill_no for d in documents], frozenset(answered - _BEFORE_ANSWER),
                         deadline)  # fmt: skip
                run.expire_tokens()
        settled = run.wait([d.bill_no for d in samples.documents], SETTLED_STATES, deadline)
        run.note("every document settled" if settled else "timed out before every document settled")
        outcomes = {d.bill_no: run.outcome(d) for d in samples.documents}
        mismatches = {
            d.bill_no: problems
            for d in samples.documents
            if (problems := d.mismatches(outcomes[d.bill_no]))
        }
        stats = run.sim.get("/_sim/stats").json()
        return DemoReport(
            outcomes=outcomes,
            mismatches=mismatches,
            double_issue=dict(stats.get("doubleIssue", {})),
            cloud_stats=stats,
            settled=settled,
            elapsed=time.monotonic() - run.started,
            notes=run.notes,
        )
    finally:
        run.close()
