"""Shared fixtures of the worker integration tests (no tests here): a ``World`` is a runtime
wired to a simulator over real HTTP, the test database and the test Redis, with a recording
broker. Modules import the fixtures they use by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from simulator.testing import (
    CallbackRecorder,
    SimulatorHandle,
    recording_callback_receiver,
    running_simulator,
    write_tenants_toml,
)
from store.db import unit_of_work
from store.inbox import receive_callback
from store.lifecycle import transition
from store.models import Document, DocumentEvent, Invoice
from worker import queues
from worker.enqueue import RecordingEnqueuer
from worker.runtime import Runtime, build_runtime
from worker.tasks import run
from worker.testing import fast_settings

__all__ = [
    "DEMO_SELLER",
    "SHOP_SELLER",
    "World",
    "callbacks",
    "declare_cloud",
    "declared_world",
    "make_world",
    "sim",
    "trusting_world",
    "world",
]

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

    def path(self, document_id: int) -> list[str]:
        """The states a document went through (applied transitions only)."""
        return [e.to_status for e in self.events(document_id) if e.outcome == "applied"]

    def run(self, task: str, **kwargs: Any) -> str:
        """Run one task's service now; what it sends is recorded for ``drain``."""
        status, followups = run(self.rt, task, kwargs)
        self.rt.dispatch(followups)
        return status

    def push(self, document_id: int) -> str:
        return self.run(queues.PUSH, document_id=document_id)

    def apply(self, document_id: int, event: str, reason: str = "test") -> None:
        """An operator/producer transition (e.g. ``withdraw``), committed."""
        with unit_of_work(self.sessions) as session:
            transition(session, document_id, event, actor="test", reason=reason)

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
    specs: list[dict[str, Any]] | None = None,
    cloud: dict[str, str] | None = None,
) -> Iterator[World]:
    """A ``World``; ``specs`` replaces the tenants the bridge believes in (not the simulator's);
    ``cloud`` is the ``[tenants.cloud]`` table every tenant declares (none: all unknown)."""
    if specs is None:
        path = sim.write_tenants_file(tmp_path / "tenants.toml")
    else:
        path = write_tenants_toml(tmp_path / "tenants.toml", sim.base_url, specs)
    if cloud:
        declare_cloud(path, cloud)
    settings = fast_settings(
        database_url=database_url, redis_url=redis_url, tenants_file=path, **(overrides or {})
    )
    enqueuer = RecordingEnqueuer()
    rt = build_runtime(settings, enqueuer=enqueuer, sessions=session_factory)
    try:
        yield World(rt, enqueuer, sim, callbacks)
    finally:
        rt.close()


def declare_cloud(path: Path, cloud: dict[str, str]) -> None:
    """Append a ``[tenants.cloud]`` table with ``cloud`` to every tenant of a tenants file."""
    table = "[tenants.cloud]\n" + "".join(f'{k} = "{v}"\n' for k, v in cloud.items())
    head, *blocks = path.read_text(encoding="utf-8").split("[[tenants]]")
    body = "".join(f"[[tenants]]{block.rstrip()}\n{table}\n" for block in blocks)
    path.write_text(head + body, encoding="utf-8")


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


@pytest.fixture
def declared_world(
    sim: SimulatorHandle,
    callbacks: CallbackRecorder,
    session_factory: sessionmaker[Session],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[World]:
    """Tenants that declare the simulator's default dialect (``[tenants.cloud]``)."""
    from schemas.cloud_contract import Dialect

    yield from make_world(
        sim, callbacks, session_factory, database_url, redis_url, tmp_path,
        cloud=Dialect.default().as_dict(),
    )  # fmt: skip
