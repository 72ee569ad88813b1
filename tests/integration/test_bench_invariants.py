"""bench.invariants: a healthy world passes; each kind of broken world is caught (exit 1)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from bench.invariants import CloudView, check_invariants, main
from simulator.testing import make_bill
from store.claims import claim_for_push
from store.db import unit_of_work
from store.lifecycle import transition, update_fields
from store.models import CloudCall, Document, Invoice, InvoiceDocument, TenantState
from store.states import ISSUE_OVERDUE
from worker.testing import store_bill

SELLER = "91310000SIM0000001"


def _invoiced(sessions: sessionmaker[Session], bill_no: str, *, invoice_num: str) -> int:
    """A document walked draft → pushing → pushed → invoiced with one issued invoice."""
    doc_id = store_bill(sessions, "demo", make_bill(bill_no, SELLER))
    with unit_of_work(sessions) as session:
        claimed = claim_for_push(session, doc_id, 30)
        assert claimed is not None
        transition(session, doc_id, "accepted", actor="test", attempt=1)
    with unit_of_work(sessions) as session:
        doc = session.get(Document, doc_id)
        assert doc is not None
        session.add(
            Invoice(
                document_id=doc_id,
                push_attempt=1,
                order_no=f"O-{bill_no}",
                invoice_num=invoice_num,
                total_amount=doc.total_amount,
                include_tax_amount=doc.total_incl_tax,
            )
        )
        transition(session, doc_id, "issued_all", actor="test", attempt=1)
    return doc_id


def _cloud(bill_nos: list[str], **stats: Any) -> CloudView:
    bills = [
        {"tenant": "demo", "sellerTaxpayerId": SELLER, "billNo": b, "live": True, "issued": 1}
        for b in bill_nos
    ]
    base: dict[str, Any] = {"doubleIssue": {"live_twice": [], "over_issued": []}, "calls": {}}
    base.update(stats)
    return CloudView(stats=base, bills=bills)


@pytest.fixture
def healthy(session_factory: sessionmaker[Session]) -> list[int]:
    return [_invoiced(session_factory, f"INV-{i}", invoice_num=f"2531000000000000000{i}")
            for i in range(3)]  # fmt: skip


def test_a_healthy_world_passes(engine: Engine, healthy: list[int]) -> None:
    report = check_invariants(
        engine, expected=["INV-0", "INV-1", "INV-2"], cloud=_cloud(["INV-0", "INV-1", "INV-2"])
    )
    assert report.ok, report.violations
    assert report.by_status == {"invoiced": 3}


def test_a_document_issued_twice_fails_and_the_command_exits_non_zero(
    engine: Engine, database_url: str, healthy: list[int], session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as session:
        doc = session.get(Document, healthy[0])
        assert doc is not None
        # A second bill for the same document was issued by a later push attempt.
        session.add(
            Invoice(
                document_id=doc.id,
                push_attempt=2,
                order_no="O-second",
                invoice_num="25310000000000000099",
                total_amount=doc.total_amount,
                include_tax_amount=doc.total_incl_tax,
            )
        )
    report = check_invariants(engine)
    assert not report.ok
    assert len(report.violations["issued_twice"]) == 2  # two attempts, and over the total
    assert main(["--database-url", database_url]) == 1


def test_a_clean_database_exits_zero(database_url: str, healthy: list[int]) -> None:
    assert main(["--database-url", database_url]) == 0


def test_the_cloud_reporting_a_double_issue_fails(engine: Engine, healthy: list[int]) -> None:
    cloud = _cloud(["INV-0", "INV-1", "INV-2"], doubleIssue={"live_twice": [{"billNo": "INV-0"}]})
    report = check_invariants(engine, cloud=cloud)
    assert [v for v in report.violations["issued_twice"] if "live_twice" in v]
    two_live = _cloud(["INV-0", "INV-0", "INV-1", "INV-2"])
    report = check_invariants(engine, cloud=two_live)
    assert any("2 live bills" in v for v in report.violations["issued_twice"])


def test_a_lost_document_fails(engine: Engine, healthy: list[int]) -> None:
    report = check_invariants(engine, expected=["INV-0", "INV-1", "INV-2", "INV-LOST"])
    assert report.violations["lost"] == ["INV-LOST: submitted, no document in the database"]
    report = check_invariants(engine, cloud=_cloud(["INV-0", "INV-1", "INV-2", "GHOST"]))
    assert any("GHOST" in v for v in report.violations["lost"])


def test_an_unfinished_document_fails(
    engine: Engine, healthy: list[int], session_factory: sessionmaker[Session]
) -> None:
    store_bill(session_factory, "demo", make_bill("STILL-DRAFT", SELLER))
    report = check_invariants(engine)
    assert report.violations["unfinished"] == [
        f"STILL-DRAFT (#{healthy[-1] + 1}): draft, not finished"
    ]


def test_documents_held_by_a_paused_tenant_are_parked_not_stuck(
    engine: Engine, healthy: list[int], session_factory: sessionmaker[Session]
) -> None:
    store_bill(session_factory, "demo", make_bill("HELD", SELLER))
    with unit_of_work(session_factory) as session:
        session.add(TenantState(tenant="other", paused=True, paused_reason="auth"))
    assert check_invariants(engine).violations["unfinished"]  # another tenant's pause: stuck
    with unit_of_work(session_factory) as session:
        session.add(TenantState(tenant="demo", paused=True, paused_reason="login refused twice"))
    report = check_invariants(engine)
    assert report.ok, report.violations
    assert report.held_by_pause == 1
    assert report.paused_tenants == {"other": "auth", "demo": "login refused twice"}


def test_a_status_written_behind_the_lifecycle_breaks_the_audit_chain(
    engine: Engine, healthy: list[int], session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as session:
        session.execute(
            update(Document).where(Document.id == healthy[1]).values(status="withdrawn")
        )
    report = check_invariants(engine)
    assert report.violations["audit"] == [
        f"INV-1 (#{healthy[1]}): events end in invoiced but the document is withdrawn"
    ]


def test_the_ledger_must_match_the_clouds_call_counts(
    engine: Engine, healthy: list[int], session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as session:
        for outcome in ("accepted", "accepted", "transient", "pending"):
            session.add(CloudCall(tenant="demo", interface="BILL.PUSH", outcome=outcome))
    names = ["INV-0", "INV-1", "INV-2"]
    # 2 certainly sent, 1 maybe (pending), 1 never sent: the cloud may count 2 or 3.
    for counted, ok in ((1, False), (2, True), (3, True), (4, False)):
        cloud = _cloud(names, calls={"BILL.PUSH": {"success": counted}})
        report = check_invariants(engine, cloud=cloud)
        assert report.ok is ok, (counted, report.violations)
    cloud = _cloud(names, calls={"BILL.PUSH": {"success": 4}})
    assert check_invariants(engine, cloud=cloud, ledger_slack=1).ok
    # A transient outcome that came with an HTTP answer (errorCode 9999) did reach the cloud.
    with unit_of_work(session_factory) as session:
        session.add(
            CloudCall(
                tenant="demo", interface="BILL.PUSH", outcome="transient", http_status=200,
                error_code="9999",
            )
        )  # fmt: skip
    cloud = _cloud(names, calls={"BILL.PUSH": {"success": 2}})
    assert not check_invariants(engine, cloud=cloud).ok
    cloud = _cloud(names, calls={"BILL.PUSH": {"success": 3}})
    assert check_invariants(engine, cloud=cloud).ok


def test_a_pushed_document_flagged_overdue_is_parked_unless_the_cloud_issued_it(
    engine: Engine, healthy: list[int], session_factory: sessionmaker[Session]
) -> None:
    doc_id = store_bill(session_factory, "demo", make_bill("LATE", SELLER))
    with unit_of_work(session_factory) as session:
        assert claim_for_push(session, doc_id, 30) is not None
        transition(session, doc_id, "accepted", actor="test", attempt=1)
    assert check_invariants(engine).violations["unfinished"]  # pushed, no reason: stuck
    with unit_of_work(session_factory) as session:
        update_fields(
            session, doc_id, {"last_error_code": ISSUE_OVERDUE, "last_error_message": "late"}
        )
    healthy_cloud = _cloud(["INV-0", "INV-1", "INV-2"])

    def cloud(issued: int) -> CloudView:
        late = {**healthy_cloud.bills[0], "billNo": "LATE", "issued": issued}
        return CloudView(stats=healthy_cloud.stats, bills=[*healthy_cloud.bills, late])

    report = check_invariants(engine, cloud=cloud(issued=0))
    assert report.ok, report.violations
    report = check_invariants(engine, cloud=cloud(issued=1))  # the flag was wrong
    assert report.violations["cloud_state"] == [
        f"LATE (#{doc_id}) is flagged overdue, but the cloud issued 1 invoice(s) for it"
    ]


def test_an_invoiced_document_without_its_cloud_bill_fails(
    engine: Engine, healthy: list[int]
) -> None:
    report = check_invariants(engine, cloud=_cloud(["INV-0", "INV-1"]))
    assert report.violations["cloud_state"] == [f"INV-2 (#{healthy[2]}) is invoiced, no cloud bill"]


def _merged(sessions: sessionmaker[Session], bill_nos: list[str]) -> tuple[list[int], int]:
    """Documents invoiced by ONE invoice (merge=when_asked): owned by the first, linked to all."""
    doc_ids = [store_bill(sessions, "demo", make_bill(b, SELLER)) for b in bill_nos]
    with unit_of_work(sessions) as session:
        for doc_id in doc_ids:
            assert claim_for_push(session, doc_id, 30) is not None
            transition(session, doc_id, "accepted", actor="test", attempt=1)
    with unit_of_work(sessions) as session:
        docs = [session.get(Document, d) for d in doc_ids]
        invoice = Invoice(
            document_id=doc_ids[0],
            push_attempt=1,
            order_no="O-MERGED",
            invoice_num="25310000000000000099",
            total_amount=sum(d.total_amount for d in docs if d is not None),
            include_tax_amount=sum(d.total_incl_tax for d in docs if d is not None),
        )
        session.add(invoice)
        session.flush()
        session.add_all(InvoiceDocument(invoice_id=invoice.id, document_id=d) for d in doc_ids)
        for doc_id in doc_ids:
            transition(session, doc_id, "issued_all", actor="test", attempt=1)
        invoice_id = invoice.id
    return doc_ids, invoice_id


def test_a_merged_invoice_counts_once_for_each_document_it_covers(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    bills = ["MRG-0", "MRG-1", "MRG-2"]
    _merged(session_factory, bills)
    report = check_invariants(engine, expected=bills, cloud=_cloud(bills))
    assert report.ok, report.violations
    assert report.by_status == {"invoiced": 3}


def test_a_document_of_a_merged_invoice_issued_again_fails(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    bills = ["MRG-0", "MRG-1", "MRG-2"]
    doc_ids, invoice_id = _merged(session_factory, bills)
    with unit_of_work(session_factory) as session:
        doc = session.get(Document, doc_ids[1])
        assert doc is not None
        session.add(
            Invoice(
                document_id=doc.id, push_attempt=1, order_no="O-AGAIN",
                invoice_num="25310000000000000098", total_amount=doc.total_amount,
                include_tax_amount=doc.total_incl_tax,
            )
        )  # fmt: skip
    report = check_invariants(engine, expected=bills, cloud=_cloud(bills))
    assert report.violations["issued_twice"] == [
        f"MRG-1 (#{doc_ids[1]}): covered by merged invoice #{invoice_id} and 1 other(s)"
    ]


def test_a_merged_invoice_larger_than_its_documents_fails(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    bills = ["MRG-0", "MRG-1"]
    _, invoice_id = _merged(session_factory, bills)
    with unit_of_work(session_factory) as session:
        session.execute(
            update(Invoice)
            .where(Invoice.id == invoice_id)
            .values(include_tax_amount=Invoice.include_tax_amount + 1)
        )
    report = check_invariants(engine, expected=bills, cloud=_cloud(bills))
    assert report.violations["issued_twice"] == [
        f"merged invoice #{invoice_id}: 227.00 > 226.00, the totals of the 2 documents it covers"
    ]
