"""The callback receiver sends ``fapiao.reconcile`` only when none is owed already
(``worker.coalesce.ReconcileCoalescer``): a burst of callbacks costs a few messages, every
row is still reconciled (the waiting task gathers them), and with Redis down every callback
sends its own. Fixtures: tests/integration/conftest.py.
"""

from __future__ import annotations

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from simulator.testing import make_bill
from store.models import CallbackInbox
from tests.integration.test_api_callbacks import build_receiver
from tests.integration.worlds import DEMO_SELLER, World
from worker import queues
from worker.coalesce import ReconcileCoalescer
from worker.tasks import run
from worker.testing import drain, store_bill

BURSTS, BURST = 3, 4


def callback_bodies(world: World, prefix: str, count: int) -> list[bytes]:
    world.callbacks.clear()
    for i in range(count):
        doc_id = store_bill(world.sessions, "demo", make_bill(f"{prefix}-{i}", DEMO_SELLER))
        if world.doc(doc_id).status == "draft":  # a push gathers the tenant's other drafts
            assert world.push(doc_id) == "pushed"
    world.enqueuer.clear()
    return [c.body for c in world.callbacks.wait_for(count)[:count]]


def test_a_burst_sends_a_few_messages_and_every_callback_is_reconciled(
    world: World, database_url: str, session_factory: sessionmaker[Session]
) -> None:
    ReconcileCoalescer(world.rt.redis).release_reconcile()  # nothing owed from before
    bodies = callback_bodies(world, "BURST", BURSTS * BURST)
    receiver = build_receiver(database_url, session_factory, redis=world.rt.redis)
    sent = 0
    with receiver.client:
        for burst in range(BURSTS):
            for body in bodies[burst * BURST : (burst + 1) * BURST]:
                assert receiver.send(body).status_code == 200
            # The worker runs what the receiver sent (it releases the key, then gathers).
            messages = receiver.enqueuer.take()
            sent += len(messages)
            for message in messages:
                assert message.task == queues.RECONCILE
                world.rt.dispatch(run(world.rt, message.task, message.kwargs)[1])
            drain(world.rt, world.enqueuer)
    # One per burst (a key that expired in a slow run costs one more, never fewer rows).
    assert BURSTS <= sent < BURSTS * BURST // 2
    with session_factory() as session:
        rows = session.scalars(select(CallbackInbox).order_by(CallbackInbox.id)).all()
    assert len(rows) == BURSTS * BURST
    assert {row.state for row in rows} == {"processed"}


def test_with_redis_down_every_callback_sends_its_reconcile(
    world: World, database_url: str, session_factory: sessionmaker[Session]
) -> None:
    class Down:
        def set(self, *args: object, **kwargs: object) -> bool:
            raise redis.ConnectionError("Redis is down")

    bodies = callback_bodies(world, "DOWN", 3)
    receiver = build_receiver(database_url, session_factory, redis=Down())
    with receiver.client:
        for body in bodies:
            assert receiver.send(body).status_code == 200
    messages = receiver.enqueuer.of(queues.RECONCILE)
    with session_factory() as session:
        ids = session.scalars(select(CallbackInbox.id).order_by(CallbackInbox.id)).all()
    assert [m["inbox_id"] for m in messages] == list(ids) and len(ids) == 3
