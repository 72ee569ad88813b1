"""Worker services end to end against the simulator over real HTTP, real database, real Redis.

Messages are run inline (``worker.testing.drain`` goes through the same dispatcher as the
Celery tasks); the tests with real worker processes are in ``test_worker_celery.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.db import unit_of_work
from store.inbox import receive_callback
from store.models import CallbackInbox, CloudCall, Document, DocumentEvent, Invoice
from simulator.testing import (
    CallbackRecorder,
    SimulatorHandle,
    make_bill,
    recording_callback_receiver,
    running_simulator,
)
from worker import queues
from worker.runtime import Runtime, build_runtime
from worker.tasks import run
from worker.testing import RecordingEnqueuer, drain, fast_settings, store_bill

DEMO_SELLER = "91310000SIM0000001"  # tenant "demo": 3std1… code, per-bill callbacks
SHOP_SELLER = "91440300SIM0000003"  # tenant "shop": per-invoice callbacks


@pytest.fixture
def callbacks() -> Iterator[CallbackRecorder]:
    with recording_callback_receiver() as recorder:
        yield recorder


@pytest.fixture
def sim(callbacks: CallbackRecorder) -> Iterator[SimulatorHandle]:
    with running_simulator(
        issue_delay=0.05, callback_url=callbacks.url, max_lines_per_invoice=2, seed=11
    ) as handle:
        yield handle


class World:
    """A runtime wired to the simulator, plus helpers to look at the database."""

    def __init__(
        self,
        rt: Runtime,
        enqueuer: RecordingEnqueuer,
        sim: SimulatorHandle,
        callbacks: CallbackRecorder,
    ) -> None:
        self.rt, self.enqueuer, self.sim, self.callbacks = rt, enqueuer, sim, callbacks

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.rt.sessions

    def doc(self, document_id: int) -> Document:
        with self.sessions() as session:
            document = session.get(Document, document_id)
            assert document is not None
            return document

    def events(self, document_id: int) -> list[DocumentEvent]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(DocumentEvent)
                    .where(DocumentEvent.document_id == document_id)
                    .order_by(DocumentEvent.id)
                )
            )

    def invoices(self, document_id: int) -> list[Invoice]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Invoice).where(Invoice.document_id == document_id).order_by(Invoice.id)
                )
            )

    def push(self, document_id: int) -> str:
        status, followups = run(self.rt, queues.PUSH, {"document_id": document_id})
        self.rt.dispatch(followups)
        return status

    def receive(self, body: bytes) -> int:
        """What the callback receiver does: store the raw body (deduplicated), commit."""
        with unit_of_work(self.sessions) as session:
            received = receive_callback(
                session, dedupe_key=hashlib.sha256(body).hexdigest(), raw_body=body
            )
            return received.inbox_id

    def reconcile(self, body: bytes) -> str:
        status, followups = run(self.rt, queues.RECONCILE, {"inbox_id": self.receive(body)})
        self.rt.dispatch(followups)
        return status


def make_world(
    sim: SimulatorHandle,
    callbacks: CallbackRecorder,
    session_factory: sessionmaker[Session],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    overrides: dict[str, Any] | None = None,
) -> Iterator[World]:
    path = sim.write_tenants_file(tmp_path / "tenants.toml")
    settings = fast_settings(
        database_url=database_url, redis_url=redis_url, tenants_file=path, **(overrides or {})
    )
    enqueuer = RecordingEnqueuer()
    rt = build_runtime(settings, enqueuer=enqueuer, sessions=session_factory)
    try:
        yield World(rt, enqueuer, sim, callbacks)
    finally:
        rt.close()


@pytest.fixture
def world(
    sim: SimulatorHandle,
    callbacks: CallbackRecorder,
    session_factory: sessionmaker[Session],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[World]:
    yield from make_world(sim, callbacks, session_factory, database_url, redis_url, tmp_path)


@pytest.fixture
def trusting_world(
    sim: SimulatorHandle,
    callbacks: CallbackRecorder,
    session_factory: sessionmaker[Session],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[World]:
    """Callbacks applied as they come (``FAPIAO_CALLBACKS__CONFIRM_WITH_QUERY=false``)."""
    yield from make_world(
        sim, callbacks, session_factory, database_url, redis_url, tmp_path,
        {"callbacks": {"confirm_with_query": False}},
    )  # fmt: skip


def test_happy_path_per_bill_callback_to_invoiced(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("FLOW-1", DEMO_SELLER, lines=1))
    assert world.push(doc_id) == "pushed"
    received = world.callbacks.wait_for(1)
    assert world.reconcile(received[0].body) == "processed"

    document = world.doc(doc_id)
    assert document.status == "invoiced"
    assert document.issued_amount == Decimal("113.00")
    invoices = world.invoices(doc_id)
    assert len(invoices) == 1 and invoices[0].invoice_num
    assert [e.to_status for e in world.events(doc_id)] == ["draft", "pushing", "pushed", "invoiced"]
    with world.sessions() as session:
        calls = session.scalars(select(CloudCall).order_by(CloudCall.id)).all()
        interfaces = [c.interface for c in calls]
        assert interfaces[:3] == ["getAppToken", "login", "BILL.PUSH"]
        assert "BILL.INVOICE.QUERY" in interfaces  # the callback was confirmed by a query
        push_call = calls[2]
        assert (push_call.document_id, push_call.attempt, push_call.outcome) == (
            doc_id,
            1,
            "accepted",
        )
        assert all(c.outcome != "pending" for c in calls)
        inbox = session.scalars(select(CallbackInbox)).one()
        assert (inbox.state, inbox.document_id) == ("processed", doc_id)


def test_split_bill_per_invoice_callbacks_reconcile_to_the_full_amount(
    trusting_world: World,
) -> None:
    world = trusting_world
    bill = make_bill("FLOW-SPLIT", SHOP_SELLER, lines=5, amount="100.00")
    doc_id = store_bill(world.sessions, "shop", bill)
    assert world.push(doc_id) == "pushed"
    received = world.callbacks.wait_for(3)  # 5 lines, 2 per invoice → 3 invoices, 3 calls
    statuses = [world.reconcile(r.body) for r in received]
    assert statuses == ["processed"] * 3

    document = world.doc(doc_id)
    assert document.status == "invoiced"
    assert document.issued_amount == Decimal("565.00")
    invoices = world.invoices(doc_id)
    assert len(invoices) == 3
    assert sum((i.include_tax_amount or Decimal(0)) for i in invoices) == Decimal("565.00")
    path = [e.to_status for e in world.events(doc_id) if e.outcome == "applied"]
    assert path == ["draft", "pushing", "pushed", "partially_invoiced", "invoiced"]


def test_duplicate_and_out_of_order_callbacks_never_go_backwards(trusting_world: World) -> None:
    world = trusting_world
    doc_id = store_bill(world.sessions, "shop", make_bill("FLOW-DUP", SHOP_SELLER, lines=4))
    world.push(doc_id)
    received = world.callbacks.wait_for(2)
    bodies = [r.body for r in received]
    # Last first, then everything again (the receiver's dedupe is by body here).
    for body in [bodies[1], bodies[0], bodies[1], bodies[0]]:
        world.reconcile(body)
    assert world.doc(doc_id).status == "invoiced"
    path = [e.to_status for e in world.events(doc_id) if e.outcome == "applied"]
    assert path == ["draft", "pushing", "pushed", "partially_invoiced", "invoiced"]
    assert len(world.invoices(doc_id)) == 2


def test_callback_for_an_unknown_bill_is_an_orphan(world: World) -> None:
    other = make_bill("NOT-OURS", DEMO_SELLER)
    world.sim.set_faults()
    from simulator.testing import CloudSession

    with CloudSession(world.sim, "demo") as cloud:
        assert cloud.push(other)["success"] is True
    body = world.callbacks.wait_for(1)[0].body
    assert world.reconcile(body) == "orphan"
    with world.sessions() as session:
        assert session.scalars(select(CallbackInbox.state)).one() == "orphan"
