"""What the worker integration tests share that is not a fixture: ``World`` (a runtime
wired to a simulator over real HTTP, the test database and the test Redis, with a recording
broker), ``make_world``, the simulator's sellers and small helpers. The fixtures that build
worlds are in tests/integration/conftest.py.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from simulator.testing import (
    CallbackRecorder,
    SimulatorHandle,
    make_bill,
    write_tenants_toml,
)
from store.columns import utcnow
from store.db import unit_of_work
from store.inbox import receive_callback
from store.lifecycle import transition
from store.models import CloudCall, Document, DocumentEvent, Invoice
from worker import queues
from worker.enqueue import RecordingEnqueuer
from worker.runtime import Runtime, build_runtime
from worker.tasks import run
from worker.testing import fast_settings

DEMO_SELLER = "91310000SIM0000001"  # tenant "demo": 3std1… code, per-bill callbacks


SHOP_SELLER = "91440300SIM0000003"  # tenant "shop": per-invoice callbacks

NO_DOUBLE_ISSUE: dict[str, list[object]] = {"live_twice": [], "over_issued": []}

WEBHOOK_SECRET = "erp-hook-" + "5e3c7a9d1b2f4e6a"


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


# --------------------------------------------------------------------------- helpers


def demo_bill(bill_no: str, **kw: Any) -> dict[str, Any]:
    return make_bill(bill_no, DEMO_SELLER, auto_invoice=False, **kw)


def refuse(world: World, rules: dict[str, str]) -> None:
    world.sim.admin.put("/_sim/bill-rules", json={"refuse": rules}).raise_for_status()


def push_ledger(world: World) -> list[CloudCall]:
    with world.sessions() as session:
        return list(
            session.scalars(
                select(CloudCall).where(CloudCall.interface == "BILL.PUSH").order_by(CloudCall.id)
            )
        )


def ledger(world: World, interface: str | None = None) -> list[CloudCall]:
    with world.sessions() as session:
        statement = select(CloudCall).order_by(CloudCall.id)
        if interface is not None:
            statement = statement.where(CloudCall.interface == interface)
        return list(session.scalars(statement))


def push_calls(world: World) -> dict[str, int]:
    calls: dict[str, int] = world.sim.stats()["calls"].get("BILL.PUSH", {})
    return calls


def travel(world: World, seconds: float) -> None:
    """Move the worker's clock forward (no sleeping in tests)."""
    offset = timedelta(seconds=seconds)
    world.rt.clock = lambda: utcnow() + offset


class Webhook:
    """A real ERP endpoint: records headers and body, answers with ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                hook.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(hook.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/erp/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class WorldFactory(Protocol):
    """The ``new_world`` fixture: ``make_world``'s options, torn down with the test."""

    def __call__(
        self,
        overrides: dict[str, Any] | None = None,
        *,
        simulator: SimulatorHandle | None = None,
        specs: list[dict[str, Any]] | None = None,
        cloud: dict[str, str] | None = None,
    ) -> World: ...
