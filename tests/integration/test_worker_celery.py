"""Real Celery workers: acks, crashes and concurrency (Redis broker db 15, the simulator over
HTTP, the test database).

| test                                   | worker                                          |
|----------------------------------------|-------------------------------------------------|
| cold cache, many concurrent pushes     | ``start_worker`` in this process, 8 threads     |
| Redis flushed mid-run                  | ``start_worker`` in this process, 4 threads     |
| prefork child SIGKILLed mid-push       | ``celery -A worker worker -B`` subprocess       |
| whole worker SIGKILLed mid-push        | subprocess, then an in-process worker + sweep   |
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from schemas.settings import Settings
from simulator.testing import SimulatorHandle, make_bill, running_simulator
from store.columns import utcnow
from store.models import CloudCall, Document
from store.queries import document_history
from tests.integration.worlds import DEMO_SELLER
from worker import queues
from worker.app import FapiaoCelery, create_app
from worker.enqueue import CeleryEnqueuer, push_message
from worker.runtime import build_runtime
from worker.tasks import reset_runtime
from worker.testing import fast_settings, store_bill, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NO_DOUBLE_ISSUE = {"live_twice": [], "over_issued": []}


@pytest.fixture
def sim() -> Iterator[SimulatorHandle]:
    with running_simulator(issue_delay=0.05, seed=5) as handle:  # no callbacks: polling
        yield handle


@pytest.fixture
def settings(sim: SimulatorHandle, database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    tenants = sim.write_tenants_file(tmp_path / "tenants.toml")
    return fast_settings(database_url=database_url, redis_url=redis_url, tenants_file=tenants)


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[FapiaoCelery]:
    yield from _app(settings, session_factory)


@pytest.fixture
def one_by_one_app(
    settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[FapiaoCelery]:
    """Batches of one: a push task gathers no other drafts, each waits for its own message."""
    push = settings.push.model_copy(update={"batch_size": 1})
    yield from _app(settings.model_copy(update={"push": push}), session_factory)


def _app(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[FapiaoCelery]:
    app = create_app(settings)
    reset_runtime(app, build_runtime(settings, enqueuer=CeleryEnqueuer(app),
                                     sessions=session_factory))  # fmt: skip
    try:
        yield app
    finally:
        reset_runtime(app)


def statuses(sessions: sessionmaker[Session], ids: list[int]) -> dict[int, str]:
    with sessions() as session:
        rows = session.execute(select(Document.id, Document.status).where(Document.id.in_(ids)))
        return {row.id: row.status for row in rows}


def all_in(sessions: sessionmaker[Session], ids: list[int], wanted: set[str]) -> bool:
    return set(statuses(sessions, ids).values()) <= wanted


def enqueue_all(app: FapiaoCelery, ids: list[int], bill_nos: list[str]) -> None:
    messages = [push_message(d, bill_no, "demo") for d, bill_no in zip(ids, bill_nos, strict=True)]
    assert CeleryEnqueuer(app).send(messages) == len(ids)


def test_concurrent_pushes_on_a_cold_cache_log_in_exactly_once(
    app: FapiaoCelery, sim: SimulatorHandle, session_factory: sessionmaker[Session]
) -> None:
    sim.set_faults(latency_ms=30)  # make the pushes overlap
    bill_nos = [f"COLD-{i}" for i in range(24)]
    ids = [
        store_bill(session_factory, "demo", make_bill(no, DEMO_SELLER, auto_invoice=False))
        for no in bill_nos
    ]
    enqueue_all(app, ids, bill_nos)
    with start_worker(app, pool="threads", concurrency=8, perform_ping_check=False):
        wait_until(lambda: all_in(session_factory, ids, {"pushed"}), timeout=60)
    assert sim.stats()["tokens"]["demo"] == {"app": 1, "access": 1}
    assert len(sim.bills()) == 24
    assert sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


def test_redis_flushed_mid_run_every_document_still_reaches_its_end(
    one_by_one_app: FapiaoCelery,
    sim: SimulatorHandle,
    session_factory: sessionmaker[Session],
    redis_url: str,
) -> None:
    app = one_by_one_app  # queued pushes are lost by the flush, not gathered before it
    sim.set_faults(latency_ms=40)
    bill_nos = [f"FLUSH-{i}" for i in range(16)]
    ids = [store_bill(session_factory, "demo", make_bill(no, DEMO_SELLER)) for no in bill_nos]
    enqueue_all(app, ids, bill_nos)
    broker = redis.Redis.from_url(redis_url)
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
            wait_until(lambda: "pushed" in statuses(session_factory, ids).values(), timeout=30)
            broker.flushdb()  # queued messages, unacked messages, cached tokens: gone
            lost = [i for i, s in statuses(session_factory, ids).items() if s == "draft"]
            assert lost, "the flush should have dropped some queued pushes"

            def finished() -> bool:
                # What beat would send: the sweeper re-enqueues, the poller finds invoices.
                app.send_task(queues.SWEEP)
                app.send_task(queues.POLL_DUE)
                return all_in(session_factory, ids, {"invoiced"})

            wait_until(finished, timeout=90, interval=0.5)
    finally:
        broker.close()
    assert len(sim.bills()) == 16
    assert sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE


# --------------------------------------------------------------------------- SIGKILL


def worker_env(settings: Settings, tenants_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAPIAO_")}
    env.update(
        FAPIAO_DATABASE_URL=settings.database_url,
        FAPIAO_REDIS_URL=settings.redis_url,
        FAPIAO_BROKER_URL=settings.broker_url,
        FAPIAO_TENANTS_FILE=str(tenants_file),
        FAPIAO_ENVIRONMENT="test",
        FAPIAO_TOKENS__REFRESH_MARGIN_SECONDS="0",
        # Lease = 2 × (0.5 + 1.5) + 5 = 9 s; the sweeper runs every 4.5 s.
        FAPIAO_HTTP__CONNECT_TIMEOUT_SECONDS="0.5",
        FAPIAO_HTTP__READ_TIMEOUT_SECONDS="1.5",
        FAPIAO_BROKER__VISIBILITY_TIMEOUT_SECONDS="60",
        FAPIAO_PUSH__BACKOFF_BASE_SECONDS="0.05",
        FAPIAO_PUSH__BACKOFF_CAP_SECONDS="0.2",
        FAPIAO_ERP_WEBHOOK__BACKOFF_CAP_SECONDS="0.2",
        FAPIAO_POLL__SCHEDULE_SECONDS="1",
        FAPIAO_POLL__CAP_SECONDS="1",
        PYTHONPATH=str(REPO),
    )
    return env


def start_celery(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """``celery -A worker <args>`` in its own process group, logging to tmp_path."""
    log = (tmp_path / f"{args[0]}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", *args],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: we kill exactly what we started
    )  # fmt: skip


WORKER_ARGS = (
    "worker", "-P", "prefork", "-c", "1", "-l", "info", "--without-mingle", "--without-gossip",
)  # fmt: skip


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def pending_push(
    sessions: sessionmaker[Session], doc_id: int, worker: subprocess.Popen[bytes] | None = None
) -> CloudCall | None:
    if worker is not None and worker.poll() is not None:
        raise RuntimeError(f"the worker exited with {worker.returncode}; see worker.log")
    with sessions() as session:
        return session.scalars(
            select(CloudCall).where(
                CloudCall.document_id == doc_id,
                CloudCall.interface == "BILL.PUSH",
                CloudCall.outcome == "pending",
            )
        ).first()


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_prefork_child_killed_mid_push_is_recovered_once(
    settings: Settings,
    sim: SimulatorHandle,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    sim.set_faults(latency_ms=1200)  # the push is still in flight when the child dies
    doc_id = store_bill(session_factory, "demo", make_bill("KILL-1", DEMO_SELLER))
    env = worker_env(settings, settings.tenants_file)
    app = create_app(settings)
    assert CeleryEnqueuer(app).send([push_message(doc_id, "KILL-1", "demo")]) == 1
    worker = start_celery(env, tmp_path, *WORKER_ARGS)
    beat = start_celery(env, tmp_path, "beat", "-l", "info", "-s", str(tmp_path / "schedule"))
    try:
        wait_until(lambda: pending_push(session_factory, doc_id, worker), timeout=60, interval=0.02)
        children = children_of(worker.pid)
        assert len(children) == 1  # -c 1: the one pool process, running the push
        os.kill(children[0], signal.SIGKILL)
        sim.set_faults()
        wait_until(lambda: statuses(session_factory, [doc_id])[doc_id] == "invoiced", timeout=90)
    finally:
        stop(beat)
        stop(worker)
    with session_factory() as session:
        path = [e.to_status for e in document_history(session, doc_id) if e.outcome == "applied"]
    assert path[:3] == ["draft", "pushing", "in_doubt"]  # the lease expired: a query decided
    assert path[-1] == "invoiced"
    assert len(sim.bills()) == 1
    assert sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE
    assert pending_push(session_factory, doc_id) is not None  # evidence of the crash kept


def test_whole_worker_killed_mid_push_is_recovered_by_the_sweeper(
    app: FapiaoCelery,
    settings: Settings,
    sim: SimulatorHandle,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    sim.set_faults(latency_ms=1200)
    doc_id = store_bill(
        session_factory, "demo", make_bill("KILL-2", DEMO_SELLER, auto_invoice=False)
    )
    assert CeleryEnqueuer(app).send([push_message(doc_id, "KILL-2", "demo")]) == 1
    worker = start_celery(worker_env(settings, settings.tenants_file), tmp_path, *WORKER_ARGS)
    try:
        wait_until(lambda: pending_push(session_factory, doc_id, worker), timeout=60, interval=0.02)
    finally:
        stop(worker)  # SIGKILL to the whole process group: nothing is acked or restored
    assert statuses(session_factory, [doc_id])[doc_id] == "pushing"
    sim.set_faults()
    # A surviving worker; its clock is past the dead worker's lease (instead of waiting).
    rt = app.runtime()
    rt.clock = lambda: utcnow() + timedelta(minutes=5)
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False):
        app.send_task(queues.SWEEP)
        wait_until(lambda: statuses(session_factory, [doc_id])[doc_id] == "pushed", timeout=30)
    assert len(sim.bills()) == 1
    assert sim.stats()["doubleIssue"] == NO_DOUBLE_ISSUE
    with session_factory() as session:
        calls = session.execute(
            select(CloudCall.interface, CloudCall.outcome)
            .where(CloudCall.document_id == doc_id)
            .order_by(CloudCall.id)
        ).all()
        path = [e.to_status for e in document_history(session, doc_id) if e.outcome == "applied"]
    # The dead worker's push left its evidence; a query decided before anything was pushed
    # again (the simulator may or may not have stored a request whose client vanished).
    assert tuple(calls[0]) == ("BILL.PUSH", "pending")
    assert calls[1].interface == "BILL.INVOICE.QUERY"
    assert path[:4] == ["draft", "pushing", "in_doubt", path[3]]
    assert path[-1] == "pushed"
