"""Merged invoices end to end: bills pushed with ``autoMerge=1`` of one buyer and seller, the
simulator playing ``merge=when_asked`` (one invoice for the bills pending together), real
HTTP, real database, real Redis. Every bill reaches ``invoiced`` linked to the same invoice;
callbacks and queries applied again change nothing (docs/CLOUD-CONTRACT.md §6.6).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from producers.testing import bridge_settings, build_test_components, run_cli
from simulator.testing import CallbackRecorder, SimulatorHandle, make_bill, running_simulator
from store.columns import utcnow
from store.db import unit_of_work
from store.inbox import receive_callback
from store.invoices import bills_covered, invoices_of
from store.models import CloudCall, Document, DocumentEvent, Invoice, InvoiceDocument
from tests.integration.worlds import (
    DEMO_SELLER,
    SHOP_SELLER,
    WEBHOOK_SECRET,
    Webhook,
    World,
    WorldFactory,
    make_world,
)
from worker import queues
from worker.services.invoices import apply_invoices
from worker.services.query import query_bill
from worker.testing import drain, store_bill

SELLERS = {"demo": DEMO_SELLER, "shop": SHOP_SELLER}  # per-bill / per-invoice callbacks
NO_DOUBLE_ISSUE: dict[str, list[object]] = {"live_twice": [], "over_issued": []}


@pytest.fixture
def merging_sim(callbacks: CallbackRecorder) -> Iterator[SimulatorHandle]:
    with running_simulator(
        issue_delay=0.2, callback_url=callbacks.url, seed=11, dialect={"merge": "when_asked"}
    ) as handle:
        yield handle


@pytest.fixture(params=["confirming", "trusting"])
def merge_world(
    request: pytest.FixtureRequest, merging_sim: SimulatorHandle, new_world: WorldFactory
) -> World:
    """Callbacks confirmed by BILL.INVOICE.QUERY (default) or applied as they come."""
    overrides = (
        None if request.param == "confirming" else {"callbacks": {"confirm_with_query": False}}
    )
    return new_world(overrides, simulator=merging_sim)


def merged_bill(bill_no: str, seller: str, amount: str, **header: Any) -> dict[str, Any]:
    return make_bill(bill_no, seller, amount=amount, auto_invoice=True, autoMerge="1", **header)


def push_all(world: World, tenant: str, bills: list[dict[str, Any]]) -> list[int]:
    """One BILL.PUSH of every bill (``fapiao.push_batch``): the bills are pending together
    however slowly the machine runs, so the simulator merges them."""
    ids = [store_bill(world.sessions, tenant, bill) for bill in bills]
    status = world.run(
        queues.PUSH_BATCH,
        document_ids=ids,
        bill_nos=[bill["billNo"] for bill in bills],
        tenants=[tenant] * len(ids),
    )
    assert status == f"pushed={len(ids)}"
    return ids


def wait_issued(world: World, bill_nos: list[str]) -> None:
    world.sim.wait_for(
        lambda: all(world.sim.bill(no)["state"] == "invoiced" for no in bill_nos), timeout=20
    )


def reapply(world: World, body: bytes) -> str:
    """A callback body stored again as a new inbox row (as a redelivery the receiver's
    dedupe did not catch would be), then reconciled."""
    with unit_of_work(world.sessions) as session:
        inbox_id = receive_callback(
            session, dedupe_key=f"again-{uuid.uuid4().hex}", raw_body=body
        ).inbox_id
    return world.run(queues.RECONCILE, inbox_id=inbox_id)


def requery(world: World, doc_id: int) -> None:
    """BILL.INVOICE.QUERY for the document's bill, its answer applied (as poll/in-doubt do)."""
    document = world.doc(doc_id)
    tenant = world.rt.tenant(document.tenant)
    assert tenant is not None
    answer = query_bill(
        world.rt, tenant, bill_no=document.bill_no, seller_tax_id=document.seller_tax_id,
        document_id=doc_id, attempt=document.push_attempt,
    )  # fmt: skip
    assert answer.kind == "present"
    with unit_of_work(world.sessions) as session:
        fresh = session.get(Document, doc_id, populate_existing=True)
        assert fresh is not None
        apply_invoices(world.rt, session, fresh, answer.items, reason="test re-query")


def snapshot(world: World) -> dict[str, Any]:
    """Everything applying an invoice could change."""
    with world.sessions() as session:
        documents = session.execute(
            select(Document.id, Document.status, Document.version, Document.issued_amount)
        ).all()
        return {
            "documents": sorted(tuple(row) for row in documents),
            "events": session.scalar(select(func.count()).select_from(DocumentEvent)),
            "invoices": sorted(
                tuple(row) for row in session.execute(select(Invoice.id, Invoice.updated_at))
            ),
            "links": sorted(
                tuple(row)
                for row in session.execute(
                    select(InvoiceDocument.invoice_id, InvoiceDocument.document_id)
                )
            ),
        }


def assert_repeats_change_nothing(world: World, bodies: list[bytes], ids: list[int]) -> None:
    """Callbacks applied again change nothing; queries neither, except that the first query
    after callbacks-only may refresh the invoice's wire copy (``raw``, the query's form)."""
    before = snapshot(world)
    for body in bodies:
        reapply(world, body)
    assert snapshot(world) == before
    for doc_id in ids:
        requery(world, doc_id)
    queried = snapshot(world)
    assert {k: v for k, v in queried.items() if k != "invoices"} == {
        k: v for k, v in before.items() if k != "invoices"
    }
    for doc_id in ids:
        requery(world, doc_id)
    assert snapshot(world) == queried


def covering(world: World, doc_id: int) -> list[int]:
    with world.sessions() as session:
        return [invoice.id for invoice in invoices_of(session, doc_id)]


@pytest.mark.parametrize("tenant", ["demo", "shop"])
def test_three_merged_bills_reach_invoiced_on_one_invoice(merge_world: World, tenant: str) -> None:
    world = merge_world
    seller = SELLERS[tenant]
    bills = [
        merged_bill(f"MRG-{tenant}-1", seller, "100.00"),
        merged_bill(f"MRG-{tenant}-2", seller, "200.00"),
        merged_bill(f"MRG-{tenant}-3", seller, "33.33", lines=2),
    ]
    ids = push_all(world, tenant, bills)
    wait_issued(world, [b["billNo"] for b in bills])
    received = world.callbacks.wait_for(3)  # one callback per bill, each with the invoice
    assert [world.reconcile(r.body) for r in received] == ["processed"] * 3

    assert [world.doc(i).status for i in ids] == ["invoiced"] * 3
    # Each bill counts its own lines of the invoice: 113.00, 226.00 and 2 × 37.66.
    assert [world.doc(i).issued_amount for i in ids] == [
        Decimal("113.00"),
        Decimal("226.00"),
        Decimal("75.32"),
    ]
    [invoice_id] = covering(world, ids[0])
    assert covering(world, ids[1]) == covering(world, ids[2]) == [invoice_id]
    with world.sessions() as session:
        invoice = session.get(Invoice, invoice_id)
        assert invoice is not None and invoice.document_id in ids
        assert invoice.include_tax_amount == Decimal("414.32")
        assert bills_covered(session, [invoice_id]) == {
            invoice_id: sorted(b["billNo"] for b in bills)
        }
        assert session.scalar(select(func.count()).select_from(Invoice)) == 1
    stats = world.sim.stats()
    assert stats["invoices"]["issued"] == 1
    assert stats["doubleIssue"] == NO_DOUBLE_ISSUE
    for doc_id in ids:
        path = [e.to_status for e in world.events(doc_id) if e.outcome == "applied"]
        assert path == ["draft", "pushing", "pushed", "invoiced"]

    assert_repeats_change_nothing(world, [r.body for r in received], ids)
    assert world.sim.stats()["invoices"]["issued"] == 1


def test_two_merged_and_one_separate(merge_world: World, database_url: str) -> None:
    world = merge_world
    bills = [
        merged_bill("MIX-1", DEMO_SELLER, "100.00"),
        merged_bill("MIX-2", DEMO_SELLER, "50.00"),
        # Same buyer, but not asking for a merge: an invoice of its own.
        make_bill("MIX-3", DEMO_SELLER, amount="70.00", auto_invoice=True, autoMerge="0"),
    ]
    ids = push_all(world, "demo", bills)
    wait_issued(world, [b["billNo"] for b in bills])
    received = world.callbacks.wait_for(3)
    for r in received:
        world.reconcile(r.body)

    assert [world.doc(i).status for i in ids] == ["invoiced"] * 3
    assert [world.doc(i).issued_amount for i in ids] == [
        Decimal("113.00"),
        Decimal("56.50"),
        Decimal("79.10"),
    ]
    [shared] = covering(world, ids[0])
    [alone] = covering(world, ids[2])
    assert covering(world, ids[1]) == [shared] and alone != shared
    with world.sessions() as session:
        assert bills_covered(session, [shared, alone]) == {
            shared: ["MIX-1", "MIX-2"],
            alone: ["MIX-3"],
        }
    assert world.sim.stats()["invoices"]["issued"] == 2
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE

    # What operators see (`/v1/documents/{bill_no}` and `fapiao show` share the view).
    components = build_test_components(bridge_settings(database_url), world.sessions)
    shown = {no: run_cli(components, "show", no) for no in ("MIX-1", "MIX-2", "MIX-3")}
    views = {no: json.loads(run_cli(components, "show", no, "--json").output) for no in shown}
    assert [(i["merged"], i["bill_nos"]) for i in views["MIX-2"]["invoices"]] == [
        (True, ["MIX-1", "MIX-2"])
    ]
    assert [(i["merged"], i["bill_nos"]) for i in views["MIX-3"]["invoices"]] == [
        (False, ["MIX-3"])
    ]
    assert (
        views["MIX-1"]["invoices"][0]["invoice_num"] == views["MIX-2"]["invoices"][0]["invoice_num"]
    )
    assert "merged with" in shown["MIX-1"].output and "MIX-2" in shown["MIX-1"].output
    assert "merged with" in shown["MIX-2"].output
    assert "merged with" not in shown["MIX-3"].output

    assert_repeats_change_nothing(world, [r.body for r in received], ids)


def test_merged_bills_with_callbacks_dropped_are_polled_to_invoiced(world_polling: World) -> None:
    world = world_polling
    world.sim.set_faults(callback_drop=1.0)
    bills = [merged_bill(f"MPOLL-{n}", SHOP_SELLER, "100.00") for n in (1, 2, 3)]
    ids = push_all(world, "shop", bills)
    wait_issued(world, [b["billNo"] for b in bills])
    world.rt.clock = lambda: utcnow() + timedelta(hours=1)  # every poll due (no sleeping)
    assert world.run(queues.POLL_DUE) == "due=3"
    steps = drain(world.rt, world.enqueuer)
    assert sorted((s.task, s.status) for s in steps) == [(queues.POLL, "invoiced")] * 3
    assert [world.doc(i).status for i in ids] == ["invoiced"] * 3
    assert [world.doc(i).issued_amount for i in ids] == [Decimal("113.00")] * 3
    [invoice_id] = covering(world, ids[0])
    assert covering(world, ids[1]) == covering(world, ids[2]) == [invoice_id]
    assert world.callbacks.received == []
    assert world.sim.stats()["invoices"]["issued"] == 1

    before = snapshot(world)
    for doc_id in ids:
        requery(world, doc_id)
    assert snapshot(world) == before


def test_merged_bills_from_callbacks_only_ask_the_cloud_nothing(trusting_merge: World) -> None:
    world = trusting_merge
    bills = [merged_bill(f"MCB-{n}", SHOP_SELLER, "10.00") for n in (1, 2, 3)]
    ids = push_all(world, "shop", bills)
    wait_issued(world, [b["billNo"] for b in bills])
    received = world.callbacks.wait_for(3)
    for body in [r.body for r in received] * 2:  # each twice
        reapply(world, body)
    assert [world.doc(i).status for i in ids] == ["invoiced"] * 3
    [invoice_id] = covering(world, ids[0])
    assert covering(world, ids[1]) == covering(world, ids[2]) == [invoice_id]
    with world.sessions() as session:
        queries = session.scalar(
            select(func.count())
            .select_from(CloudCall)
            .where(CloudCall.interface == "BILL.INVOICE.QUERY")
        )
        assert queries == 0
        assert session.scalar(select(func.count()).select_from(InvoiceDocument)) == 3


def test_the_erp_hears_each_merged_bill_invoiced_with_the_bills_its_invoice_covers(
    merging_sim: SimulatorHandle,
    callbacks: CallbackRecorder,
    session_factory: sessionmaker[Session],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    specs: list[dict[str, Any]] = [dict(spec) for spec in merging_sim.specs]
    demo = next(spec for spec in specs if spec["name"] == "demo")
    hook = Webhook()
    demo["erp_webhook_url"], demo["erp_webhook_secret"] = hook.url, WEBHOOK_SECRET
    try:
        for world in make_world(
            merging_sim, callbacks, session_factory, database_url, redis_url, tmp_path, None,
            specs,
        ):  # fmt: skip
            bills = [merged_bill(f"MERP-{n}", DEMO_SELLER, "100.00") for n in (1, 2)]
            push_all(world, "demo", bills)
            wait_issued(world, [b["billNo"] for b in bills])
            for r in world.callbacks.wait_for(2):
                world.reconcile(r.body)
            drain(world.rt, world.enqueuer)
    finally:
        hook.close()
    invoiced = {
        payload["billNo"]: payload
        for payload in (json.loads(body) for _, body in hook.received)
        if payload["event"] == "document.invoiced"
    }
    assert sorted(invoiced) == ["MERP-1", "MERP-2"]
    for bill_no, payload in invoiced.items():
        assert payload["issuedAmount"] == "113.00"  # this bill's share of the 226.00 invoice
        [invoice] = payload["invoices"]
        assert bill_no in invoice["billNos"]
        assert invoice["includeTaxAmount"] == "226.00"
    # A notification says what is known when it is written: the bill reconciled second
    # hears that the invoice covers both (the first may have been alone so far).
    last = max(invoiced.values(), key=lambda payload: str(payload["occurredAt"]))
    assert last["invoices"][0]["billNos"] == ["MERP-1", "MERP-2"]
    assert len({p["invoices"][0]["invoiceNum"] for p in invoiced.values()}) == 1


def test_a_failed_merged_issuance_fails_every_bill_it_covered(merge_world: World) -> None:
    world = merge_world
    world.sim.set_faults(issue_fail=1.0)
    bills = [merged_bill(f"MFAIL-{n}", DEMO_SELLER, "100.00") for n in (1, 2)]
    ids = push_all(world, "demo", bills)
    world.sim.wait_for(
        lambda: all(world.sim.bill(b["billNo"])["state"] == "failed" for b in bills), timeout=20
    )
    for r in world.callbacks.wait_for(2):
        world.reconcile(r.body)
    assert [world.doc(i).status for i in ids] == ["invoice_failed"] * 2
    assert all(world.doc(i).last_error_message for i in ids)
    [failed] = covering(world, ids[0])
    assert covering(world, ids[1]) == [failed]
    assert [world.doc(i).issued_amount for i in ids] == [Decimal("0.00")] * 2


def test_merged_bills_whose_line_ids_collide_still_count_each_bill_once(
    merge_world: World,
) -> None:
    # Every bill numbers its lines "1", "2": the invoice's lines cannot be told apart, so
    # the invoice counts fully for each bill, up to the bill's own amount.
    world = merge_world
    bills = []
    for n, amount in ((1, "100.00"), (2, "40.00")):
        bill = merged_bill(f"MCOL-{n}", DEMO_SELLER, amount, lines=2)
        for index, line in enumerate(bill["billDetail"], start=1):
            line["detailId"] = str(index)
        bills.append(bill)
    ids = push_all(world, "demo", bills)
    wait_issued(world, [b["billNo"] for b in bills])
    for r in world.callbacks.wait_for(2):
        world.reconcile(r.body)
    assert [world.doc(i).status for i in ids] == ["invoiced"] * 2
    assert [world.doc(i).issued_amount for i in ids] == [Decimal("226.00"), Decimal("90.40")]
    assert covering(world, ids[0]) == covering(world, ids[1])
    assert world.sim.stats()["invoices"]["issued"] == 1


@pytest.fixture
def world_polling(merging_sim: SimulatorHandle, new_world: WorldFactory) -> World:
    return new_world(simulator=merging_sim)


@pytest.fixture
def trusting_merge(merging_sim: SimulatorHandle, new_world: WorldFactory) -> World:
    return new_world({"callbacks": {"confirm_with_query": False}}, simulator=merging_sim)
