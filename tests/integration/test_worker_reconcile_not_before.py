"""A deferred callback's not-before (``callback_inbox.claimed_until``): no other task gathers
it before its retry wait, its own re-sent message may take it, and the give-up after the
retry table's ``reconcile`` limit is unchanged. Fixtures: tests/integration/conftest.py.
"""

from __future__ import annotations

from sqlalchemy import update

from simulator.testing import make_bill
from store.db import unit_of_work
from store.models import CallbackInbox
from tests.integration.test_worker_reconcile import forged_return
from tests.integration.test_worker_reconcile_gather import states, stored_callbacks
from tests.integration.worlds import DEMO_SELLER, World, travel
from worker import queues
from worker.tasks import run
from worker.testing import store_bill


def overtaking_callback(world: World, bill_no: str) -> tuple[int, int]:
    """A 回退 callback stored while its document is still a draft (it overtook the push):
    (document id, inbox id). Deferred until the document is pushed."""
    doc_id = store_bill(world.sessions, "demo", make_bill(bill_no, DEMO_SELLER, auto_invoice=False))
    return doc_id, world.receive(forged_return(bill_no))


def row(world: World, inbox_id: int) -> CallbackInbox:
    with world.sessions() as session:
        found = session.get(CallbackInbox, inbox_id)
        assert found is not None
        return found


def test_a_deferred_row_is_not_gathered_before_its_time(world: World) -> None:
    _, deferred = overtaking_callback(world, "NB-1")
    status, followups = run(world.rt, queues.RECONCILE, {"inbox_id": deferred})
    assert status == "received"
    [again] = [f for f in followups if f.task == queues.RECONCILE]
    waited = row(world, deferred)
    assert waited.attempts == 1 and "waiting for the push answer" in (waited.error or "")
    assert waited.claimed_until is not None and again.countdown is not None
    assert again.countdown > 0

    # Another task before the not-before: does not gather the deferred row.
    [other] = stored_callbacks(world, "NB-OTHER", 1)
    assert run(world.rt, queues.RECONCILE, {"inbox_id": other})[0] == "processed"
    assert states(world, [deferred, other]) == ["received", "processed"]
    assert row(world, deferred).attempts == 1

    # Past its not-before, any task gathers it (the document was pushed meanwhile, with
    # NB-OTHER's batch; the forged 回退 is not confirmed).
    [late] = stored_callbacks(world, "NB-LATE", 1)
    travel(world, again.countdown + 1)
    assert run(world.rt, queues.RECONCILE, {"inbox_id": late})[0] == "processed"
    assert states(world, [deferred]) == ["processed"]


def test_its_own_message_takes_a_deferred_row(world: World) -> None:
    doc_id, deferred = overtaking_callback(world, "NB-2")
    assert run(world.rt, queues.RECONCILE, {"inbox_id": deferred})[0] == "received"
    assert world.push(doc_id) == "pushed"
    # The re-sent message (its countdown is the backoff; a test runs it at once): the
    # confirming query does not confirm it (the 回退 was forged).
    assert run(world.rt, queues.RECONCILE, {"inbox_id": deferred})[0] == "processed"
    assert "回退 not confirmed" in (row(world, deferred).error or "")


def test_a_deferred_row_still_gives_up_after_the_retry_limit(world: World) -> None:
    _, deferred = overtaking_callback(world, "NB-3")
    limit = world.rt.policy.retries.reconcile.max_attempts
    assert run(world.rt, queues.RECONCILE, {"inbox_id": deferred})[0] == "received"
    with unit_of_work(world.sessions) as session:
        session.execute(
            update(CallbackInbox).where(CallbackInbox.id == deferred).values(attempts=limit - 1)
        )
    status, followups = run(world.rt, queues.RECONCILE, {"inbox_id": deferred})
    assert status == "failed"
    assert not [f for f in followups if f.task == queues.RECONCILE]
    given_up = row(world, deferred)
    assert given_up.state == "failed" and given_up.attempts == limit
    assert f"gave up after {limit} tries" in (given_up.error or "")
