"""One ``fapiao.reconcile`` task reconciles its own callback and the others waiting
(``worker.services.reconcile``: claim, ask concurrently, apply in one transaction); a full
batch sends a task for the next waiting row. Fixtures: tests/integration/conftest.py.
"""

from __future__ import annotations

from sqlalchemy import select

from simulator.testing import make_bill
from store.models import CallbackInbox
from tests.integration.worlds import DEMO_SELLER, World, WorldFactory, ledger
from worker import queues
from worker.tasks import run, summarize
from worker.testing import drain, store_bill


def stored_callbacks(world: World, prefix: str, count: int) -> list[int]:
    """``count`` pushed documents and their stored (not reconciled) callbacks' inbox ids."""
    world.callbacks.clear()
    for i in range(count):
        doc_id = store_bill(world.sessions, "demo", make_bill(f"{prefix}-{i}", DEMO_SELLER))
        assert world.push(doc_id) == "pushed"
    world.enqueuer.clear()
    return [world.receive(c.body) for c in world.callbacks.wait_for(count)[:count]]


def states(world: World, inbox_ids: list[int]) -> list[str]:
    with world.sessions() as session:
        rows = session.scalars(select(CallbackInbox).where(CallbackInbox.id.in_(inbox_ids)))
        found = {row.id: row.state for row in rows}
    return [found[i] for i in inbox_ids]


def queries(world: World) -> int:
    return len(ledger(world, "BILL.INVOICE.QUERY"))


def test_one_task_reconciles_every_waiting_callback(world: World) -> None:
    ids = stored_callbacks(world, "GATHER", 4)
    before = queries(world)

    handled = summarize(world.rt, queues.RECONCILE, {"inbox_id": ids[2]})
    assert handled.status == "processed"
    assert handled.summary["gathered"] == {"processed": 3}
    assert states(world, ids) == ["processed"] * 4
    assert queries(world) == before + 4  # one confirming query per callback
    with world.sessions() as session:
        rows = session.scalars(select(CallbackInbox).where(CallbackInbox.id.in_(ids))).all()
    assert all(row.document_id is not None for row in rows)
    for row in rows:
        assert row.document_id is not None and world.doc(row.document_id).status == "invoiced"
    # The other rows' own messages find them done.
    status, followups = run(world.rt, queues.RECONCILE, {"inbox_id": ids[0]})
    assert status == "skipped" and not [f for f in followups if f.task == queues.RECONCILE]


def test_a_full_batch_sends_a_task_for_the_next_waiting_row(new_world: WorldFactory) -> None:
    world = new_world({"callbacks": {"batch_size": 2}})
    ids = stored_callbacks(world, "FULL", 5)

    assert world.run(queues.RECONCILE, inbox_id=ids[0]) == "processed"
    assert states(world, ids) == ["processed", "processed", "received", "received", "received"]
    # Sent at once (another worker may take it while this one asks the cloud).
    assert [m["inbox_id"] for m in world.enqueuer.of(queues.RECONCILE)] == [ids[2]]

    steps = drain(world.rt, world.enqueuer)
    reconciles = [s for s in steps if s.task == queues.RECONCILE]
    assert [s.kwargs["inbox_id"] for s in reconciles] == [ids[2], ids[4]]
    assert states(world, ids) == ["processed"] * 5


def test_a_task_with_nothing_waiting_takes_its_own_row_only(world: World) -> None:
    [inbox_id] = stored_callbacks(world, "ALONE", 1)
    handled = summarize(world.rt, queues.RECONCILE, {"inbox_id": inbox_id})
    assert handled.status == "processed" and "gathered" not in handled.summary
    assert world.enqueuer.of(queues.RECONCILE) == []
