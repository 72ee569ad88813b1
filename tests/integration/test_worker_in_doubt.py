"""Unknown outcomes (``in_doubt``) and how queries settle them, never pushing twice.
Fixtures: tests/integration/conftest.py; World and helpers: tests/integration/worlds.py.

Simulator over real HTTP, real database, real Redis; messages run inline (``drain``).
"""

from __future__ import annotations

import pytest

from simulator.testing import make_bill
from store.lifecycle import RevisionConflict
from tests.integration.worlds import (
    DEMO_SELLER,
    NO_DOUBLE_ISSUE,
    World,
    demo_bill,
    ledger,
    push_calls,
    travel,
)
from worker import queues
from worker.services.push import push_documents
from worker.testing import drain, store_bill


def test_push_committed_then_connection_dropped_is_settled_by_a_query(
    declared_world: World,
) -> None:
    """With ``unknown_bill`` declared, an empty invoiceList proves the bill is there (the
    undeclared case probes first: tests/integration/test_worker_dialects.py)."""
    world = declared_world
    world.sim.set_faults(drop_after_commit=1.0)
    doc_id = store_bill(
        world.sessions, "demo", make_bill("DROP-1", DEMO_SELLER, auto_invoice=False)
    )
    assert world.push(doc_id) == "in_doubt"
    assert world.enqueuer.of(queues.RESOLVE_IN_DOUBT) == [
        {"document_id": doc_id, "bill_no": "DROP-1", "tenant": "demo"}
    ]
    world.sim.set_faults()
    steps = drain(world.rt, world.enqueuer)
    assert [(s.task, s.status) for s in steps] == [(queues.RESOLVE_IN_DOUBT, "pushed")]
    assert world.path(doc_id) == ["draft", "pushing", "in_doubt", "pushed"]
    stats = world.sim.stats()
    assert sum(stats["calls"]["BILL.PUSH"].values()) == 1  # never pushed again
    assert stats["doubleIssue"] == NO_DOUBLE_ISSUE
    assert [c.outcome for c in ledger(world, "BILL.PUSH")] == ["unknown_outcome"]


def test_in_doubt_goes_straight_to_invoiced_when_the_query_shows_invoices(world: World) -> None:
    world.sim.set_faults(push_5xx_after_commit=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("DROP-2", DEMO_SELLER))
    assert world.push(doc_id) == "in_doubt"
    world.sim.set_faults()
    world.sim.wait_for(lambda: world.sim.bill("DROP-2")["invoices"])
    steps = drain(world.rt, world.enqueuer)
    assert steps[0].status == "invoiced"
    assert world.path(doc_id) == ["draft", "pushing", "in_doubt", "pushed", "invoiced"]
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_absent_after_an_unknown_outcome_pushes_again_with_the_same_bill_no(world: World) -> None:
    world.sim.set_faults(drop_before=1.0)  # closed before the cloud stored anything
    doc_id = store_bill(
        world.sessions, "demo", make_bill("DROP-3", DEMO_SELLER, auto_invoice=False)
    )
    assert world.push(doc_id) == "in_doubt"
    world.sim.set_faults()
    steps = drain(world.rt, world.enqueuer)
    assert [(s.task, s.status) for s in steps] == [
        (queues.RESOLVE_IN_DOUBT, "draft"),
        (queues.PUSH, "pushed"),
    ]
    assert world.path(doc_id) == ["draft", "pushing", "in_doubt", "draft", "pushing", "pushed"]
    assert world.doc(doc_id).push_attempt == 2
    assert [b["billNo"] for b in world.sim.bills()] == ["DROP-3"]
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_in_doubt_gives_up_with_an_actionable_reason(world: World) -> None:
    world.sim.set_faults(drop_after_commit=1.0)
    doc_id = store_bill(
        world.sessions, "demo", make_bill("DROP-4", DEMO_SELLER, auto_invoice=False)
    )
    world.push(doc_id)
    world.enqueuer.take()
    world.sim.set_faults(api_5xx_before=1.0)  # every query: 503, nothing learnt
    assert world.run(queues.RESOLVE_IN_DOUBT, document_id=doc_id) == "in_doubt"
    assert world.doc(doc_id).status == "in_doubt"
    travel(world, 2 * 3600)  # beyond FAPIAO_IN_DOUBT__MAX_AGE_SECONDS
    assert world.run(queues.RESOLVE_IN_DOUBT, document_id=doc_id) == "failed"
    document = world.doc(doc_id)
    assert "DROP-4" in (document.last_error_message or "")
    assert "replay" in (document.last_error_message or "")
    assert push_calls(world) == {"dropped_after_commit": 1}


def test_duplicate_refusal_the_query_contradicts_fails_instead_of_looping(world: World) -> None:
    """ "已存在" yet 单据不存在: an operator has to look; never push → query → push forever."""
    world.sim.admin.put("/_sim/bill-rules", json={"refuse": {"DUP-9": "-10009"}}).raise_for_status()
    doc_id = store_bill(world.sessions, "demo", make_bill("DUP-9", DEMO_SELLER))
    assert world.push(doc_id) == "in_doubt"  # a duplicate answer is settled by a query
    steps = drain(world.rt, world.enqueuer, max_steps=50)
    assert steps[-1].status == "failed"
    document = world.doc(doc_id)
    assert document.status == "failed"
    reason = document.last_error_message or ""
    assert "duplicate" in reason and "does not" in reason and "DUP-9" in reason
    assert [c.outcome for c in ledger(world, "BILL.PUSH")] == ["duplicate"]  # pushed once
    assert world.path(doc_id) == ["draft", "pushing", "in_doubt", "failed"]
    # It left in_doubt unsettled: different content must wait for a withdrawal.
    changed = make_bill("DUP-9", DEMO_SELLER, amount="200.00")
    with pytest.raises(RevisionConflict, match="never settled"):
        store_bill(world.sessions, "demo", changed)


def test_pushes_that_never_reach_the_cloud_stop_after_max_attempts(world: World) -> None:
    world.sim.set_faults(drop_before=1.0)  # every push lost before the cloud stored it
    doc_id = store_bill(world.sessions, "demo", make_bill("DROP-9", DEMO_SELLER))
    assert world.push(doc_id) == "in_doubt"
    drain(world.rt, world.enqueuer, max_steps=100)
    document = world.doc(doc_id)
    assert document.status == "failed"
    assert document.push_attempt == 4  # push.max_attempts in fast_settings
    assert "4" in (document.last_error_message or "")
    assert len(ledger(world, "BILL.PUSH")) == 4


def test_unknown_outcomes_in_a_batch_are_settled_by_queries_never_pushed_again(
    declared_world: World,
) -> None:
    world = declared_world  # unknown_bill declared: an empty invoiceList proves presence
    world.sim.set_faults(drop_after_commit=1.0)
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BDROP-{i}")) for i in range(3)]
    assert [o.status for o in push_documents(world.rt, ids)] == ["in_doubt"] * 3
    world.sim.set_faults()
    outcomes = push_documents(world.rt, ids)  # a redelivered batch message: a no-op
    assert {o.status for o in outcomes} == {"skipped"}
    for doc_id in ids:
        world.run(queues.RESOLVE_IN_DOUBT, document_id=doc_id)
    assert [world.path(d) for d in ids] == [["draft", "pushing", "in_doubt", "pushed"]] * 3
    assert world.sim.stats()["calls"]["BILL.PUSH"] == {"dropped_after_commit": 3}
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_in_doubt_push_that_never_arrived_is_pushed_again_under_empty_list(world: World) -> None:
    world.sim.set_dialect(unknown_bill="empty_list")
    world.sim.set_faults(drop_before=1.0)  # the request never reaches the cloud
    doc_id = store_bill(world.sessions, "demo", make_bill("EL-1", DEMO_SELLER))
    assert world.push(doc_id) == "in_doubt"
    world.sim.set_faults()
    drain(world.rt, world.enqueuer, max_steps=20)
    assert [b["billNo"] for b in world.sim.bills()] == ["EL-1"]  # it reached the cloud, once
    assert world.doc(doc_id).status in ("pushed", "invoiced")
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE
    # The operator sees why it was pushed again: the probe and its answer.
    reasons = [e.reason or "" for e in world.events(doc_id) if e.to_status == "draft"]
    assert any("probe BILL.WITHDRAW" in r and "单据不存在" in r for r in reasons), reasons
