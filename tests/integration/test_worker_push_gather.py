"""A push task fills its batch with the other waiting drafts of its tenant (push.batch_size),
and the intake sends a tenant's next one-document push only after that (``worker.coalesce``).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import redis

from producers.intake import Intake
from simulator.testing import make_bill
from store.columns import utcnow
from store.db import unit_of_work
from store.lifecycle import update_fields
from tests.integration.worlds import (
    SHOP_SELLER,
    World,
    WorldFactory,
    demo_bill,
    push_ledger,
    refuse,
)
from worker import queues
from worker.coalesce import PushCoalescer
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
    held = store_bill(world.sessions, "demo", demo_bill("GATHER-HELD"))
    with unit_of_work(world.sessions) as session:  # never pushed, but told to wait (a hold)
        reason = {"next_attempt_at": later, "last_error_code": "held"}
        update_fields(session, held, reason)
    own, second, third, resent, beyond = (
        store_bill(world.sessions, "demo", demo_bill(f"GATHER-{i}")) for i in range(5)
    )
    with unit_of_work(world.sessions) as session:  # never pushed; the sweeper re-sent it
        update_fields(session, resent, {"next_attempt_at": later})
    other_tenant = store_bill(world.sessions, "shop", make_bill("GATHER-SHOP", SHOP_SELLER))
    before = len(push_ledger(world))  # the retry's first attempt

    handled = summarize(world.rt, queues.PUSH, {"document_id": own, "bill_no": "GATHER-0"})

    assert handled.status == "pushed"  # the task's own document
    assert handled.summary["pushed"] == ["GATHER-0", "GATHER-1", "GATHER-3"]
    assert "GATHER-2" in handled.summary["draft"]
    statuses = [world.doc(d).status for d in (own, second, third, resent)]
    assert statuses == ["pushed", "pushed", "draft", "pushed"]
    pushes = sorted(f.kwargs["document_id"] for f in handled.followups if f.task == queues.PUSH)
    # The gathered document's retry is the task's; the batch is full: the next draft's push.
    assert pushes == sorted([third, beyond])
    # Not gathered: beyond the batch size, held, waiting for its backoff, another tenant.
    assert world.path(beyond) == world.path(held) == world.path(other_tenant) == ["draft"]
    assert world.path(waiting) == ["draft", "pushing", "draft"]
    pushed = sorted(c.document_id or 0 for c in push_ledger(world)[before:])
    assert pushed == [own, second, third, resent]

    # A gathered draft's own message finds it claimed (and gathers what waits): nothing
    # is pushed twice.
    assert world.push(second) == "skipped"
    assert world.doc(beyond).status == "pushed"
    pushes_of = Counter(c.document_id for c in push_ledger(world))
    assert [pushes_of[d] for d in (own, second, resent, beyond)] == [1, 1, 1, 1]


def test_a_batch_of_one_sent_with_gather_off_pushes_only_its_document(
    new_world: WorldFactory,
) -> None:
    from worker.services.push import push_documents

    world = new_world()
    own, other = (store_bill(world.sessions, "demo", demo_bill(f"ALONE-{i}")) for i in range(2))
    assert [o.status for o in push_documents(world.rt, [own])] == ["pushed"]
    assert world.path(other) == ["draft"]


def test_one_document_requests_send_one_push_per_tenant_until_a_task_gathers(
    world: World,
) -> None:
    intake = Intake(
        world.sessions, world.rt.tenants, world.enqueuer, "erp", 20, PushCoalescer(world.rt.redis)
    )
    first, second = (intake.submit(demo_bill(f"ONE-{i}")) for i in range(2))
    shop = intake.submit(make_bill("ONE-SHOP", SHOP_SELLER))
    assert first.document_id and second.document_id and shop.document_id
    # One push for the tenant's first document; the second waits for it; another tenant's
    # document has its own.
    assert [m["bill_no"] for m in world.enqueuer.pushes()] == ["ONE-0", "ONE-SHOP"]

    assert world.push(first.document_id) == "pushed"  # gathers ONE-1
    assert world.doc(second.document_id).status == "pushed"
    assert world.doc(shop.document_id).status == "draft"  # not its tenant
    world.enqueuer.clear()
    third = intake.submit(demo_bill("ONE-2"))  # released by that task: sent again
    assert [m["document_id"] for m in world.enqueuer.pushes()] == [third.document_id]


def test_with_redis_down_every_document_sends_its_push(world: World) -> None:
    class Down:
        def set(self, *args: object, **kwargs: object) -> bool:
            raise redis.ConnectionError("Redis is down")

    intake = Intake(world.sessions, world.rt.tenants, world.enqueuer, "erp", 20,
                    PushCoalescer(Down()))  # fmt: skip
    for i in range(2):
        intake.submit(demo_bill(f"DOWN-{i}"))
    assert [m["bill_no"] for m in world.enqueuer.pushes()] == ["DOWN-0", "DOWN-1"]
