"""The sweeper (``fapiao.sweep``): lost messages, expired leases, paused tenants, batches.
Fixtures: tests/integration/conftest.py; World and helpers: tests/integration/worlds.py.

Simulator over real HTTP, real database, real Redis; messages run inline (``drain``). Stuck
document alerts: test_worker_stuck_alerts.py.
"""

from __future__ import annotations

from simulator.testing import CloudSession, make_bill
from store.claims import claim_for_push
from store.db import unit_of_work
from store.models import Document
from store.tenants import pause_tenant
from tests.integration.worlds import (
    DEMO_SELLER,
    NO_DOUBLE_ISSUE,
    World,
    demo_bill,
    push_calls,
    travel,
)
from worker import queues
from worker.testing import drain, store_bill


def test_a_worker_dying_mid_push_is_recovered_by_lease_expiry(declared_world: World) -> None:
    world = declared_world
    doc_id = store_bill(
        world.sessions, "demo", make_bill("LEASE-1", DEMO_SELLER, auto_invoice=False)
    )
    # A worker claims and pushes, then dies before recording the answer.
    with unit_of_work(world.sessions) as session:
        claim = claim_for_push(session, doc_id, 10)
        assert claim is not None
    with CloudSession(world.sim, "demo") as cloud, world.sessions() as session:
        document = session.get(Document, doc_id)
        assert document is not None
        assert cloud.push(document.payload)["success"] is True
    assert world.run(queues.SWEEP).startswith("drafts=0 leases=0")
    travel(world, 3600)
    assert "leases=1" in world.run(queues.SWEEP)
    steps = drain(world.rt, world.enqueuer)
    assert [(s.task, s.status) for s in steps] == [(queues.RESOLVE_IN_DOUBT, "pushed")]
    assert world.path(doc_id) == ["draft", "pushing", "in_doubt", "pushed"]
    assert world.sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_the_sweeper_re_enqueues_drafts_whose_message_was_lost(world: World) -> None:
    docs = [
        store_bill(world.sessions, "demo", make_bill(f"LOST-{i}", DEMO_SELLER)) for i in range(3)
    ]
    # Nothing was ever enqueued (broker down at submit time).
    assert world.run(queues.SWEEP).startswith("drafts=3")
    assert world.enqueuer.of(queues.PUSH_BATCH) == [  # one batch message (push.batch_size)
        {
            "document_ids": docs,
            "bill_nos": ["LOST-0", "LOST-1", "LOST-2"],
            "tenants": ["demo"] * 3,
        }
    ]
    assert world.run(queues.SWEEP).startswith("drafts=0")  # claimed: not sent twice
    drain(world.rt, world.enqueuer)
    assert {world.doc(d).status for d in docs} == {"pushed"}


def test_paused_tenant_documents_wait_in_draft(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("PAUSE-1", DEMO_SELLER))
    with unit_of_work(world.sessions) as session:
        pause_tenant(session, "demo", "operator")
    assert world.push(doc_id) == "paused"
    assert world.run(queues.SWEEP).startswith("drafts=0")
    assert world.doc(doc_id).status == "draft"
    assert push_calls(world) == {}


def test_the_sweeper_sends_due_drafts_in_batches(batch_world: World) -> None:
    world = batch_world
    bill_nos = [f"BSWEEP-{i}" for i in range(9)]
    ids = [store_bill(world.sessions, "demo", demo_bill(no)) for no in bill_nos]
    assert world.run(queues.SWEEP).startswith("drafts=9")
    sent = world.enqueuer.sent
    assert [(f.task, len(f.kwargs.get("document_ids", [0]))) for f in sent] == [
        (queues.PUSH_BATCH, 4),
        (queues.PUSH_BATCH, 4),
        (queues.PUSH, 1),
    ]
    assert sent[0].kwargs == {
        "document_ids": ids[:4],
        "bill_nos": bill_nos[:4],
        "tenants": ["demo"] * 4,
    }
    assert sent[2].kwargs == {"document_id": ids[8], "bill_no": "BSWEEP-8", "tenant": "demo"}
    steps = drain(world.rt, world.enqueuer)
    assert [s.status for s in steps] == ["pushed=4", "pushed=4", "pushed"]
    assert {world.doc(d).status for d in ids} == {"pushed"}
