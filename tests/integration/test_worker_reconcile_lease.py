"""The claim's lease (``callback_inbox.claimed_until``): two reconcile tasks never query the
same callback, a row under another task's live claim is left to it, and a task that died
leaves its rows to the sweeper once the lease has passed. Fixtures: tests/integration/
conftest.py.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from store.columns import utcnow
from store.db import unit_of_work
from store.models import CallbackInbox
from tests.integration.test_worker_reconcile_gather import queries, states, stored_callbacks
from tests.integration.worlds import World, travel
from worker import queues
from worker.services import reconcile as reconcile_service
from worker.services.sweep import sweep
from worker.tasks import run


def test_two_concurrent_tasks_never_query_the_same_callback(world: World) -> None:
    ids = stored_callbacks(world, "TWICE", 6)
    before = queries(world)
    start = threading.Barrier(2)
    results: dict[int, str] = {}

    def task(inbox_id: int) -> None:
        start.wait()
        results[inbox_id] = run(world.rt, queues.RECONCILE, {"inbox_id": inbox_id})[0]

    threads = [threading.Thread(target=task, args=(i,)) for i in (ids[0], ids[5])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert states(world, ids) == ["processed"] * 6
    assert queries(world) == before + 6  # one query per callback: no row was asked twice


def test_a_row_under_another_tasks_live_claim_is_left_to_it(world: World) -> None:
    held, other = stored_callbacks(world, "HELD", 2)
    # Another task claimed ``held`` a moment ago (a claim clears ``error``).
    with unit_of_work(world.sessions) as session:
        session.execute(
            update(CallbackInbox)
            .where(CallbackInbox.id == held)
            .values(claimed_until=utcnow() + timedelta(seconds=60), error=None)
        )
    before = queries(world)
    status, _ = run(world.rt, queues.RECONCILE, {"inbox_id": held})
    assert status == "skipped"  # its own message does not take it...
    assert states(world, [held, other]) == ["received", "processed"]  # ...but gathers others
    assert queries(world) == before + 1
    assert run(world.rt, queues.RECONCILE, {"inbox_id": other})[0] == "skipped"  # done
    assert states(world, [held, other]) == ["received", "processed"]  # nor gathered there


def test_a_dead_tasks_rows_are_recovered_by_the_sweeper_after_the_lease(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = stored_callbacks(world, "DEAD", 3)

    class Killed(BaseException):
        pass

    def die(*_args: Any, **_kwargs: Any) -> None:
        raise Killed  # the worker process is gone between the claim and the calls

    monkeypatch.setattr(reconcile_service, "_ask", die)
    with pytest.raises(Killed):
        run(world.rt, queues.RECONCILE, {"inbox_id": ids[0]})
    monkeypatch.undo()
    with world.sessions() as session:
        leases = session.scalars(
            select(CallbackInbox.claimed_until).where(CallbackInbox.id.in_(ids))
        ).all()
    assert all(lease is not None and lease > utcnow() for lease in leases)
    lease_end = max(lease for lease in leases if lease is not None)
    world.enqueuer.clear()

    # Old enough for the sweeper, but the lease is live: not re-offered.
    travel(world, 40)
    assert world.rt.clock() < lease_end
    report = sweep(world.rt)
    assert report.callbacks == 0
    assert run(world.rt, queues.RECONCILE, {"inbox_id": ids[1]})[0] == "skipped"

    # The lease has passed: the sweeper offers every row again, and they are reconciled.
    travel(world, (lease_end - utcnow()).total_seconds() + 1)
    report = sweep(world.rt)
    assert report.callbacks == 3
    for followup in report.followups:
        if followup.task == queues.RECONCILE:
            run(world.rt, followup.task, followup.kwargs)
    assert states(world, ids) == ["processed"] * 3
