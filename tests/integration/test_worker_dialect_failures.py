"""Two failures the contract dialects exposed, reproduced against the simulator over HTTP.

(a) ``unknown_bill=empty_list``: a query of a bill the cloud never received answers
    ``success:true, data:[{"billNo":X,"invoiceList":[]}]``; an in-doubt push whose request never
    arrived must not be taken for "accepted, not issued yet" (it would wait forever).
(b) ``withdraw_refusal=envelope``: a withdraw refused at the envelope level (单据已开票，不允许撤回)
    must be handled like the per-item refusal: a query decides the document's true state.
"""

from __future__ import annotations

from simulator.testing import make_bill
from tests.integration.test_worker_world import DEMO_SELLER, World
from worker import queues
from worker.testing import drain, store_bill

pytest_plugins = ["tests.integration.test_worker_world"]

NO_DOUBLE_ISSUE: dict[str, list[object]] = {"live_twice": [], "over_issued": []}


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


def test_withdraw_refused_at_the_envelope_level_goes_to_the_true_state(world: World) -> None:
    world.sim.set_dialect(withdraw_refusal="envelope")
    doc_id = store_bill(world.sessions, "demo", make_bill("ENV-1", DEMO_SELLER))
    assert world.push(doc_id) == "pushed"
    world.sim.wait_for(lambda: world.sim.bill("ENV-1")["invoices"])
    world.apply(doc_id, "withdraw")
    assert world.run(queues.WITHDRAW, document_id=doc_id) == "invoiced"
    assert "不允许撤回" in (world.doc(doc_id).last_error_message or "")
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE
