"""A push task fills its batch with the other due drafts of its tenant (push.batch_size).

A stream of one-document requests sends one ``fapiao.push`` per document; the first task to
run claims whatever else is due, and the gathered drafts' own messages are then skipped.
"""

from __future__ import annotations

from datetime import timedelta

from simulator.testing import make_bill
from store.columns import utcnow
from store.db import unit_of_work
from store.lifecycle import update_fields
from tests.integration.worlds import SHOP_SELLER, WorldFactory, demo_bill, push_ledger, refuse
from worker import queues
from worker.tasks import summarize
from worker.testing import store_bill


def test_a_push_task_gathers_due_drafts_of_its_tenant_up_to_the_batch_size(
    new_world: WorldFactory,
) -> None:
    world = new_world({"push": {"batch_size": 4}})
    waiting = store_bill(world.sessions, "demo", demo_bill("GATHER-RETRY"))
    refuse(world, {"GATHER-RETRY": "9999", "GATHER-2": "9999"})  # transient: retried
    assert world.push(waiting) == "draft"
    later = utcnow() + timedelta(hours=1)
    with unit_of_work(world.sessions) as session:  # a retry waiting for its backoff
        update_fields(session, waiting, {"next_attempt_at": later})
    own, second, third, resent, beyond = (
        store_bill(world.sessions, "demo", demo_bill(f"GATHER-{i}")) for i in range(5)
    )
    with unit_of_work(world.sessions) as session:  # never pushed; the sweeper re-sent it
        update_fields(session, resent, {"next_attempt_at": later})
    other_tenant = store_bill(world.sessions, "shop", make_bill("GATHER-SHOP", SHOP_SELLER))
    before = len(push_ledger(world))

    handled = summarize(world.rt, queues.PUSH, {"document_id": own, "bill_no": "GATHER-0"})

    assert handled.status == "pushed"  # the task's own document
    assert handled.summary["pushed"] == ["GATHER-0", "GATHER-1", "GATHER-3"]
    assert "GATHER-2" in handled.summary["draft"]
    statuses = [world.doc(d).status for d in (own, second, third, resent)]
    assert statuses == ["pushed", "pushed", "draft", "pushed"]
    retries = [f.kwargs["document_id"] for f in handled.followups if f.task == queues.PUSH]
    assert retries == [third]  # the gathered document's follow-ups are the task's
    # Not gathered: beyond the batch size, waiting for its backoff, another tenant.
    assert world.path(beyond) == world.path(other_tenant) == ["draft"]
    assert world.path(waiting) == ["draft", "pushing", "draft"]
    pushed = sorted(c.document_id for c in push_ledger(world)[before:])
    assert pushed == [own, second, third, resent]

    # The gathered drafts' own messages find them claimed: nothing is pushed twice.
    assert world.push(second) == "skipped"
    assert len(push_ledger(world)) == before + 4


def test_a_batch_of_one_sent_with_gather_off_pushes_only_its_document(
    new_world: WorldFactory,
) -> None:
    from worker.services.push import push_documents

    world = new_world()
    own, other = (store_bill(world.sessions, "demo", demo_bill(f"ALONE-{i}")) for i in range(2))
    assert [o.status for o in push_documents(world.rt, [own])] == ["pushed"]
    assert world.path(other) == ["draft"]
