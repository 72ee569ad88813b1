"""One document's happy path end to end: pushed, called back, confirmed, invoiced.
Fixtures: tests/integration/conftest.py; World: tests/integration/worlds.py.

Simulator over real HTTP, real database, real Redis. Messages are run inline
(``worker.testing.drain`` goes through the same dispatcher as the Celery tasks); the tests
with real worker processes are in ``test_worker_celery.py``; callbacks in all their forms in
``test_worker_reconcile.py``.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from simulator.testing import make_bill
from store.models import CallbackInbox, CloudCall
from tests.integration.worlds import DEMO_SELLER, World
from worker.testing import store_bill


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
        # The push's row is written with the claim, before the token is fetched and the
        # request leaves (worker.ledger.prewrite_pushes); it is completed after the answer.
        assert interfaces[:3] == ["BILL.PUSH", "getAppToken", "login"]
        assert "BILL.INVOICE.QUERY" in interfaces  # the callback was confirmed by a query
        push_call = calls[0]
        assert (push_call.document_id, push_call.attempt, push_call.outcome) == (
            doc_id,
            1,
            "accepted",
        )
        assert all(c.outcome != "pending" for c in calls)
        inbox = session.scalars(select(CallbackInbox)).one()
        assert (inbox.state, inbox.document_id) == ("processed", doc_id)
