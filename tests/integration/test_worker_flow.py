"""Worker services end to end against the simulator over real HTTP, real database, real Redis.

Messages are run inline (``worker.testing.drain`` goes through the same dispatcher as the
Celery tasks); the tests with real worker processes are in ``test_worker_celery.py``.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from simulator.testing import CloudSession, make_bill
from store.models import CallbackInbox, CloudCall
from tests.integration.test_worker_world import DEMO_SELLER, SHOP_SELLER, World
from worker.testing import store_bill

pytest_plugins = ["tests.integration.test_worker_world"]

# Issued callbacks may be confirmed by a query that already sees every invoice: then the
# document goes straight to invoiced. Either way it never goes backwards.
FORWARD_PATHS = (
    ["draft", "pushing", "pushed", "partially_invoiced", "invoiced"],
    ["draft", "pushing", "pushed", "invoiced"],
)


@pytest.fixture(params=["confirming", "trusting"])
def either_world(request: pytest.FixtureRequest) -> World:
    """The default world (callbacks confirmed by BILL.INVOICE.QUERY) and the trusting one."""
    name = "world" if request.param == "confirming" else "trusting_world"
    world: World = request.getfixturevalue(name)
    return world


def test_happy_path_per_bill_callback_to_invoiced(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("FLOW-1", DEMO_SELLER, lines=1))
    assert world.push(doc_id) == "pushed"
    received = world.callbacks.wait_for(1)
    assert world.reconcile(received[0].body) == "processed"

    document = world.doc(doc_id)
    assert document.status == "invoiced"
    assert document.issued_amount == Decimal("113.00")
    invoices = world.invoices(doc_id)
    assert len(invoices) == 1 and invoices[0].invoice_num
    assert [e.to_status for e in world.events(doc_id)] == ["draft", "pushing", "pushed", "invoiced"]
    with world.sessions() as session:
        calls = session.scalars(select(CloudCall).order_by(CloudCall.id)).all()
        interfaces = [c.interface for c in calls]
        assert interfaces[:3] == ["getAppToken", "login", "BILL.PUSH"]
        assert "BILL.INVOICE.QUERY" in interfaces  # the callback was confirmed by a query
        push_call = calls[2]
        assert (push_call.document_id, push_call.attempt, push_call.outcome) == (
            doc_id,
            1,
            "accepted",
        )
        assert all(c.outcome != "pending" for c in calls)
        inbox = session.scalars(select(CallbackInbox)).one()
        assert (inbox.state, inbox.document_id) == ("processed", doc_id)


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
