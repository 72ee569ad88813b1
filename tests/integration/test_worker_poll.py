"""Polling: what makes up for lost callbacks (``fapiao.poll_due`` / ``fapiao.poll``).
Fixtures: tests/integration/conftest.py; World and helpers: tests/integration/worlds.py.

Simulator over real HTTP, real database, real Redis; messages run inline (``drain``). The
database cost of a poll for a paused tenant is in test_worker_reconcile.py.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session

from simulator.testing import make_bill
from store.columns import utcnow
from store.db import unit_of_work
from store.lifecycle import update_fields
from store.models import CallbackInbox, Document
from store.states import ISSUE_OVERDUE
from tests.integration.worlds import DEMO_SELLER, World, demo_bill, travel
from worker import queues
from worker.services import push as push_service
from worker.services.push import push_documents
from worker.testing import drain, store_bill


def test_dropped_callbacks_are_made_up_for_by_polling(world: World) -> None:
    world.sim.set_faults(callback_drop=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("POLL-1", DEMO_SELLER, lines=3))
    assert world.push(doc_id) == "pushed"
    world.sim.wait_for(lambda: world.sim.bill("POLL-1")["invoices"])
    assert world.run(queues.POLL_DUE) == "due=0"  # not due yet
    travel(world, 5)
    assert world.run(queues.POLL_DUE) == "due=1"
    steps = drain(world.rt, world.enqueuer)
    assert [(s.task, s.status) for s in steps] == [(queues.POLL, "invoiced")]
    document = world.doc(doc_id)
    assert document.status == "invoiced"
    assert document.issued_amount == Decimal("339.00")
    assert world.callbacks.received == []


def test_failed_issuance_is_polled_to_invoice_failed(world: World) -> None:
    world.sim.set_faults(issue_fail=1.0, callback_drop=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("POLL-2", DEMO_SELLER))
    world.push(doc_id)
    world.sim.wait_for(lambda: world.sim.bill("POLL-2")["invoices"])
    travel(world, 5)
    world.run(queues.POLL_DUE)
    drain(world.rt, world.enqueuer)
    document = world.doc(doc_id)
    assert document.status == "invoice_failed"
    assert document.last_error_message  # the cloud's issueErrorMessage


def test_invoices_found_after_the_overdue_flag_clear_it(world: World) -> None:
    world.sim.set_faults(callback_drop=1.0)
    doc_id = store_bill(world.sessions, "demo", make_bill("POLL-3", DEMO_SELLER))
    assert world.push(doc_id) == "pushed"
    with unit_of_work(world.sessions) as session:  # as the poller leaves a slow bill
        update_fields(
            session, doc_id, {"last_error_code": ISSUE_OVERDUE, "last_error_message": "late"}
        )
    world.sim.wait_for(lambda: world.sim.bill("POLL-3")["invoices"])
    assert world.run(queues.POLL, document_id=doc_id) == "invoiced"
    document = world.doc(doc_id)
    assert (document.last_error_code, document.last_error_message) == (None, None)


def test_a_callback_that_overtook_the_push_answer_defers_the_first_poll(
    world: World,
) -> None:
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BOVERTAKE-{i}")) for i in range(2)]
    with unit_of_work(world.sessions) as session:
        # The receiver stored (and linked) a callback for the first one before the answer.
        session.add(
            CallbackInbox(
                dedupe_key="overtook-1", raw_body=b"{}", style="per_bill", state="received",
                document_id=ids[0], received_at=utcnow(),
            )
        )  # fmt: skip
    before = utcnow()
    outcomes = push_documents(world.rt, ids)
    assert [o.status for o in outcomes] == ["pushed", "pushed"]
    grace = world.rt.settings.callbacks.poll_grace_seconds
    first, second = (world.doc(i).next_poll_at for i in ids)
    assert first is not None and second is not None
    naive = before.replace(tzinfo=None)
    # Its reconcile will ask the cloud: the poll is only the safety net, after the grace.
    assert first.replace(tzinfo=None) >= naive + timedelta(seconds=grace - 1)
    assert second.replace(tzinfo=None) < naive + timedelta(seconds=grace - 1)


@pytest.mark.postgres_only
def test_a_callback_stored_while_the_answers_are_applied_defers_the_first_poll(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window of the poll race: the receiver commits a callback (still seeing the
    # document `pushing`, so it defers nothing) after the apply transaction began and
    # before it wrote `pushed`. The apply must still see it and defer the poll.
    ids = [store_bill(world.sessions, "demo", demo_bill(f"BWINDOW-{i}")) for i in range(2)]
    real = push_service.transition
    stored: list[int] = []

    def receiver_commits_first(session: Session, document_id: int, *args: Any, **kw: Any) -> Any:
        if document_id == ids[0] and not stored:
            with unit_of_work(world.sessions) as receiver:
                assert receiver.get(Document, ids[0]).status == "pushing"  # type: ignore[union-attr]
                row = CallbackInbox(
                    dedupe_key="window-1", raw_body=b"{}", style="per_bill", state="received",
                    document_id=ids[0], received_at=utcnow(),
                )  # fmt: skip
                receiver.add(row)
                receiver.flush()
                stored.append(row.id)
        return real(session, document_id, *args, **kw)

    monkeypatch.setattr(push_service, "transition", receiver_commits_first)
    before = utcnow()
    outcomes = push_documents(world.rt, ids)
    assert stored and [o.status for o in outcomes] == ["pushed", "pushed"]
    grace = world.rt.settings.callbacks.poll_grace_seconds
    first, second = (world.doc(i).next_poll_at for i in ids)
    assert first is not None and second is not None
    naive = before.replace(tzinfo=None)
    assert first.replace(tzinfo=None) >= naive + timedelta(seconds=grace - 1)
    assert second.replace(tzinfo=None) < naive + timedelta(seconds=grace - 1)
