"""Withdrawals (``fapiao.withdraw``): before issuance, refused after it, of a bill the cloud
never had. Fixtures: tests/integration/conftest.py; World: tests/integration/worlds.py.
"""

from __future__ import annotations

import pytest

from simulator.testing import make_bill
from store.db import unit_of_work
from tests.integration.worlds import DEMO_SELLER, NO_DOUBLE_ISSUE, World
from worker import queues
from worker.testing import store_bill


def test_withdraw_before_issuance_withdraws(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("WD-1", DEMO_SELLER, auto_invoice=False))
    assert world.push(doc_id) == "pushed"
    world.apply(doc_id, "withdraw")
    assert world.run(queues.WITHDRAW, document_id=doc_id) == "withdrawn"
    assert world.path(doc_id)[-2:] == ["withdrawing", "withdrawn"]
    assert world.sim.bill("WD-1")["state"] == "withdrawn"


@pytest.mark.parametrize(
    ("withdraw_refusal", "bill_no"), [("per_item", "WD-2"), ("envelope", "ENV-1")]
)
def test_withdraw_after_issuance_is_refused_and_keeps_the_true_state(
    world: World, withdraw_refusal: str, bill_no: str
) -> None:
    """Refused per item or at the envelope level (单据已开票，不允许撤回): either way a query
    decides the document's true state."""
    world.sim.set_dialect(withdraw_refusal=withdraw_refusal)
    doc_id = store_bill(world.sessions, "demo", make_bill(bill_no, DEMO_SELLER))
    assert world.push(doc_id) == "pushed"
    world.sim.wait_for(lambda: world.sim.bill(bill_no)["invoices"])
    world.apply(doc_id, "withdraw")
    assert world.run(queues.WITHDRAW, document_id=doc_id) == "invoiced"
    document = world.doc(doc_id)
    assert "不允许撤回" in (document.last_error_message or "")
    assert world.path(doc_id)[-2:] == ["withdrawing", "invoiced"]
    assert world.sim.stats()["bills"].get("withdrawn", 0) == 0
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_withdraw_of_a_bill_the_cloud_never_had_is_withdrawn(world: World) -> None:
    world.sim.set_faults(drop_before=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("WD-3", DEMO_SELLER))
    world.push(doc_id)  # in_doubt, the cloud has nothing
    world.sim.set_faults()
    with unit_of_work(world.sessions) as session:  # an operator gave up on it
        from store.lifecycle import transition

        transition(session, doc_id, "give_up", actor="test")
        transition(session, doc_id, "withdraw", actor="test")
    assert world.run(queues.WITHDRAW, document_id=doc_id) == "withdrawn"
