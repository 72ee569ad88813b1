"""Callbacks (``fapiao.reconcile``): per-bill and per-invoice styles, duplicates and order,
orphans, 回退 (BILL.RETURN), forged and overtaking callbacks; what one callback (and a poll)
costs the database; tenant pauses read with documents. Fixtures: tests/integration/
conftest.py; World: tests/integration/worlds.py.

Runs against the simulator over real HTTP, real database, real Redis.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, event, select

from schemas.kingdee import BillReturn, build_callback, decode_data, encode_data
from schemas.money import dumps_exact
from simulator.testing import CloudSession, make_bill
from store.db import unit_of_work
from store.models import CallbackInbox, CloudCall
from store.tenants import pause_tenant, resume_tenant
from tests.integration.worlds import DEMO_SELLER, SHOP_SELLER, World, ledger
from worker import queues
from worker.runtime import Followup
from worker.tasks import run
from worker.testing import drain, store_bill


@dataclass
class Counts:
    statements: list[str] = field(default_factory=list)
    commits: int = 0
    # Statements sent on an autocommit connection (each its own transaction).
    alone: list[str] = field(default_factory=list)


@contextmanager
def counted(engine: Engine) -> Iterator[Counts]:
    """Every statement sent and every commit made through ``engine`` meanwhile."""
    counts = Counts()

    def on_execute(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        counts.statements.append(statement.split(None, 1)[0].upper())
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            counts.alone.append(counts.statements[-1])

    def on_commit(conn: Connection) -> None:
        # Transactions that cost BEGIN/COMMIT round trips; not autocommit statements.
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            counts.commits += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_commit)


def _engine(world: World) -> Engine:
    bind = world.sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def _pushed_with_callback(world: World, bill_no: str) -> int:
    """A pushed document and its stored (not yet reconciled) invoice callback's inbox id."""
    doc_id = store_bill(world.sessions, "demo", make_bill(bill_no, DEMO_SELLER, lines=1))
    assert world.push(doc_id) == "pushed"
    return world.receive(world.callbacks.wait_for(1)[0].body)


def test_a_one_bill_callback_is_nine_statements_and_one_transaction(
    world: World, db_backend: str
) -> None:
    inbox_id = _pushed_with_callback(world, "COST-1")
    with counted(_engine(world)) as counts:
        status, _ = _run_reconcile(world, inbox_id)
    assert status == "processed"
    # The claim (one WITH … UPDATE … RETURNING: the row and its lease) and the read of the
    # documents + tenant pause, each on its own (autocommit on PostgreSQL), then the
    # transition's transaction after the query's ledger row (document, invoice upsert, invoices,
    # transition: UPDATE, event — the document read at the start of the transaction is not
    # read again; inbox row settled). SQLite runs every group in a transaction of its own,
    # with its BEGIN IMMEDIATE. The new invoice and
    # its invoice_documents row: one WITH … INSERT on PostgreSQL, two INSERTs on SQLite.
    # The callback's bizControl: one upsert of the tenant's quota row (store.quota.observe),
    # committed on its own just before the transition's transaction.
    # The document's first invoice: on PostgreSQL that WITH statement also says no invoice
    # covered it before, so the invoices are not read back for the verdict.
    statements = [s for s in counts.statements if s != "BEGIN"]
    upsert = ["WITH"] if db_backend == "postgresql" else ["INSERT", "INSERT", "SELECT"]
    assert statements == [
        "WITH", "SELECT",
        "INSERT",
        "INSERT", "SELECT", *upsert, "UPDATE", "INSERT", "UPDATE",
    ]  # fmt: skip
    assert counts.commits == (1 if db_backend == "postgresql" else 4)
    if db_backend == "postgresql":
        # The claim, the read, the query's ledger row (the first INSERT, written when the
        # answer comes) and the quota upsert (before the batch's transaction, so that no
        # quota row stays locked while documents are written: worker.services.reconcile)
        # stand alone.
        assert counts.alone == ["WITH", "SELECT", "INSERT", "INSERT"]
    assert world.doc(_document_of(world, inbox_id)).status == "invoiced"


def test_the_querys_ledger_row_is_kept_when_the_transition_rolls_back(
    world: World, monkeypatch: Any
) -> None:
    from store.lifecycle import LostRace
    from worker.services import reconcile as reconcile_service

    inbox_id = _pushed_with_callback(world, "COST-ROLLBACK")
    before = _queries(world)

    def lost(*_args: Any, **_kw: Any) -> Any:
        raise LostRace(
            0, None, expected_status="pushed", expected_version=1, actual_status="invoiced",
            actual_version=2,
        )  # fmt: skip

    monkeypatch.setattr(reconcile_service, "apply_invoices", lost)
    status, followups = _run_reconcile(world, inbox_id)
    assert status == "received" and [f.task for f in followups] == [queues.RECONCILE]
    # The query was made: its row is written on its own after the rollback.
    assert _queries(world) == before + 1


def test_a_callback_for_a_paused_tenant_waits_without_asking_the_cloud(world: World) -> None:
    inbox_id = _pushed_with_callback(world, "COST-2")
    with unit_of_work(world.sessions) as session:
        pause_tenant(session, "demo", "test: operator pause")
    queries = _queries(world)

    status, followups = _run_reconcile(world, inbox_id)
    assert status == "received"  # deferred, sent again later
    assert [f.task for f in followups] == [queues.RECONCILE]
    assert _queries(world) == queries  # no confirming query while paused
    with world.sessions() as session:
        row = session.get(CallbackInbox, inbox_id)
        assert row is not None and row.attempts == 1 and "paused" in (row.error or "")

    with unit_of_work(world.sessions) as session:
        resume_tenant(session, "demo")
    assert _run_reconcile(world, inbox_id)[0] == "processed"
    assert _queries(world) == queries + 1


def test_a_repeat_of_stored_invoices_is_settled_without_a_query(
    world: World, db_backend: str
) -> None:
    inbox_id = _pushed_with_callback(world, "COST-3")
    body = world.callbacks.wait_for(1)[0].body
    assert _run_reconcile(world, inbox_id)[0] == "processed"
    doc_id = _document_of(world, inbox_id)
    assert world.doc(doc_id).status == "invoiced"
    queries, events = _queries(world), len(world.events(doc_id))

    # The same invoices again under another dedupe key (as a second callback style or a
    # redelivery with other bytes would be): one transaction, no query, nothing changed but
    # the quota row (its bizControl is still news when the poller applied the invoices first).
    repeat = world.receive(_rewritten(body, lambda item: None))
    with counted(_engine(world)) as counts:
        assert _run_reconcile(world, repeat)[0] == "processed"
    assert _queries(world) == queries
    assert counts.commits == (0 if db_backend == "postgresql" else 1)
    assert [s for s in counts.statements if s != "BEGIN"] == [
        "WITH",  # the claim: WITH chosen AS MATERIALIZED (…) UPDATE … RETURNING
        "SELECT",
        "SELECT",
        "INSERT",
        "UPDATE",
    ]
    with world.sessions() as session:
        row = session.get(CallbackInbox, repeat)
        assert (
            row is not None
            and row.document_id == doc_id
            and "nothing to confirm" in (row.error or "")
        )
    assert len(world.events(doc_id)) == events and world.doc(doc_id).status == "invoiced"

    # Anything not stored yet (here a new file URL, as a forged callback could claim) is
    # confirmed by a query: the cloud's answer is applied, not the callback's.
    def new_url(item: dict[str, Any]) -> None:
        item["invoicePdfFileUrl"] = "https://forged.example/1.pdf"

    news = world.receive(_rewritten(body, new_url))
    assert _run_reconcile(world, news)[0] == "processed"
    assert _queries(world) == queries + 1
    assert all(
        i.invoice_pdf_file_url != "https://forged.example/1.pdf" for i in world.invoices(doc_id)
    )


def _rewritten(body: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """``body`` with ``change`` applied to each invoice item, re-encoded (other bytes)."""
    envelope = json.loads(body)
    payload = decode_data(envelope["data"])
    for item in payload if isinstance(payload, list) else [payload]:
        change(item)
    envelope["data"] = encode_data(payload)
    return json.dumps(envelope, indent=1).encode()


def test_a_poll_for_a_paused_tenant_waits_without_asking_the_cloud(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("COST-4", DEMO_SELLER, lines=1))
    assert world.push(doc_id) == "pushed"
    world.callbacks.wait_for(1)  # issued in the cloud (the callback itself is not used)
    with unit_of_work(world.sessions) as session:
        pause_tenant(session, "demo", "test: operator pause")
    queries = _queries(world)
    with counted(_engine(world)) as counts:
        assert world.run(queues.POLL, document_id=doc_id) == "paused"
    assert _queries(world) == queries
    assert [s for s in counts.statements if s != "BEGIN"] == ["SELECT"]  # document + pause
    with unit_of_work(world.sessions) as session:
        resume_tenant(session, "demo")
    assert world.run(queues.POLL, document_id=doc_id) == "invoiced"
    assert _queries(world) == queries + 1


def _run_reconcile(world: World, inbox_id: int) -> tuple[str, list[Followup]]:
    return run(world.rt, queues.RECONCILE, {"inbox_id": inbox_id})


def _queries(world: World) -> int:
    return len(ledger(world, "BILL.INVOICE.QUERY"))


def _document_of(world: World, inbox_id: int) -> int:
    with world.sessions() as session:
        row = session.get(CallbackInbox, inbox_id)
        assert row is not None and row.document_id is not None
        return row.document_id


# --------------------------------------------------------------------------- callback styles

FORWARD_PATHS = (
    ["draft", "pushing", "pushed", "partially_invoiced", "invoiced"],
    ["draft", "pushing", "pushed", "invoiced"],
)


def test_split_bill_per_invoice_callbacks_reconcile_to_the_full_amount(
    either_world: World,
) -> None:
    world = either_world
    bill = make_bill("FLOW-SPLIT", SHOP_SELLER, lines=5, amount="100.00")
    doc_id = store_bill(world.sessions, "shop", bill)
    assert world.push(doc_id) == "pushed"
    received = world.callbacks.wait_for(3)  # 5 lines, 2 per invoice → 3 invoices, 3 calls
    statuses = [world.reconcile(r.body) for r in received]
    assert statuses == ["processed"] * 3

    document = world.doc(doc_id)
    assert document.status == "invoiced"
    assert document.issued_amount == Decimal("565.00")
    invoices = world.invoices(doc_id)
    assert len(invoices) == 3
    assert sum((i.include_tax_amount or Decimal(0)) for i in invoices) == Decimal("565.00")
    path = [e.to_status for e in world.events(doc_id) if e.outcome == "applied"]
    if world.rt.settings.callbacks.confirm_with_query:
        assert path in FORWARD_PATHS
    else:
        assert path == FORWARD_PATHS[0]


def test_duplicate_and_out_of_order_callbacks_never_go_backwards(either_world: World) -> None:
    world = either_world
    doc_id = store_bill(world.sessions, "shop", make_bill("FLOW-DUP", SHOP_SELLER, lines=4))
    world.push(doc_id)
    received = world.callbacks.wait_for(2)
    bodies = [r.body for r in received]
    # Last first, then everything again (the receiver's dedupe is by body here).
    for body in [bodies[1], bodies[0], bodies[1], bodies[0]]:
        world.reconcile(body)
    assert world.doc(doc_id).status == "invoiced"
    path = [e.to_status for e in world.events(doc_id) if e.outcome == "applied"]
    if world.rt.settings.callbacks.confirm_with_query:
        assert path in FORWARD_PATHS
    else:
        assert path == FORWARD_PATHS[0]
    assert len(world.invoices(doc_id)) == 2


def test_callback_for_an_unknown_bill_is_an_orphan(world: World) -> None:
    other = make_bill("NOT-OURS", DEMO_SELLER)
    with CloudSession(world.sim, "demo") as cloud:
        assert cloud.push(other)["success"] is True
    body = world.callbacks.wait_for(1)[0].body
    assert world.reconcile(body) == "orphan"
    with world.sessions() as session:
        assert session.scalars(select(CallbackInbox.state)).one() == "orphan"


# ------------------------------------------------------------ 回退, forged and early callbacks


def test_return_upstream_callback_marks_the_document_returned(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("RET-1", DEMO_SELLER, auto_invoice=False))
    world.push(doc_id)
    world.sim.admin.post(
        "/_sim/bills/RET-1/return", json={"reason": "购方名称有误"}
    ).raise_for_status()
    body = world.callbacks.wait_for(1)[0].body
    assert world.reconcile(body) == "processed"
    document = world.doc(doc_id)
    assert document.status == "returned"
    assert document.last_error_message == "购方名称有误"


def forged_return(bill_no: str, reason: str = "伪造") -> bytes:
    returned = BillReturn(billNo=bill_no, sellerTaxpayerId=DEMO_SELLER, reason=reason)
    return dumps_exact(build_callback("BILL.RETURN", [], "return", returned=returned)).encode()


def test_a_forged_return_for_a_live_bill_changes_nothing(world: World) -> None:
    """Invariant 4: the confirming query finds the bill still in the cloud."""
    doc_id = store_bill(world.sessions, "demo", make_bill("RET-2", DEMO_SELLER, auto_invoice=False))
    assert world.push(doc_id) == "pushed"
    before = world.doc(doc_id)
    assert world.reconcile(forged_return("RET-2")) == "processed"
    after = world.doc(doc_id)
    assert (after.status, after.version) == ("pushed", before.version)
    assert after.last_error_message == before.last_error_message
    with world.sessions() as session:
        row = session.scalars(select(CallbackInbox).order_by(CallbackInbox.id.desc())).first()
        assert row is not None
        assert row.document_id == doc_id
        assert "still" in (row.error or "")
        queries = session.scalars(
            select(CloudCall).where(CloudCall.interface == "BILL.INVOICE.QUERY")
        ).all()
    assert queries  # the forged callback caused a query, nothing else
    # The real 回退 afterwards is still applied.
    world.sim.admin.post("/_sim/bills/RET-2/return", json={"reason": "退回"}).raise_for_status()
    assert world.reconcile(world.callbacks.wait_for(1)[0].body) == "processed"
    assert world.doc(doc_id).status == "returned"


def test_a_callback_overtaking_the_push_answer_is_applied_after_it(world: World) -> None:
    world.sim.set_faults(callback_before_response=1.0)  # the cloud calls back, then answers
    doc_id = store_bill(world.sessions, "demo", make_bill("RACE-1", DEMO_SELLER))
    seen: list[tuple[str, str]] = []

    def reconcile_before_acking(index: int, body: bytes) -> tuple[int, bytes]:
        # The receiver stores and enqueues at once; the reconcile runs while the push waits.
        seen.append((world.doc(doc_id).status, world.reconcile(body)))
        return 200, b'{"success": true, "code": "0", "message": "success"}'

    world.callbacks.answer_with(reconcile_before_acking)
    assert world.push(doc_id) == "pushed"
    assert seen == [("pushing", "received")]  # deferred, not lost, not misapplied
    steps = drain(world.rt, world.enqueuer)
    assert (steps[-1].task, steps[-1].status) == (queues.RECONCILE, "processed")
    assert world.doc(doc_id).status == "invoiced"
    assert world.path(doc_id) == ["draft", "pushing", "pushed", "invoiced"]


def test_a_deferred_callback_message_names_its_bill_and_tenant(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("RET-3", DEMO_SELLER))
    assert world.doc(doc_id).status == "draft"  # the callback overtook the push
    assert world.reconcile(forged_return("RET-3")) == "received"
    [again] = world.enqueuer.of(queues.RECONCILE)
    assert (again["bill_no"], again["tenant"]) == ("RET-3", "demo")
