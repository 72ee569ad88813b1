"""A real ``celery -A worker worker`` (prefork, 2 children) serves its counters over HTTP.

The worker pushes a bill to the simulator, polls it to invoiced and sweeps a planted stuck
document; the exporter on ``FAPIAO_METRICS__WORKER_PORT`` must show what the children did
(multiprocess mode), with the right labels and values.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from schemas.settings import Settings
from simulator.testing import SimulatorHandle, make_bill, running_simulator
from store.columns import utcnow
from store.models import Document
from tests.integration.test_worker_celery import start_celery, statuses, stop, worker_env
from tests.integration.worlds import DEMO_SELLER
from worker import queues
from worker.app import create_app
from worker.enqueue import CeleryEnqueuer, Followup
from worker.metrics import OWN_DIR_PREFIX
from worker.testing import fast_settings, store_bill, wait_until

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def sim() -> Iterator[SimulatorHandle]:
    with running_simulator(issue_delay=0.05, seed=11) as handle:
        yield handle


@pytest.fixture
def settings(sim: SimulatorHandle, database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    tenants = sim.write_tenants_file(tmp_path / "tenants.toml")
    return fast_settings(database_url=database_url, redis_url=redis_url, tenants_file=tenants)


def test_prefork_worker_exporter_serves_its_childrens_counters_and_histograms(
    settings: Settings,
    session_factory: sessionmaker[Session],
    make_document: Callable[..., Document],
    tmp_path: Path,
) -> None:
    port = free_port()
    parent = tmp_path / "metrics"
    env = worker_env(settings, settings.tenants_file)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        FAPIAO_METRICS__WORKER_PORT=str(port),
        FAPIAO_METRICS__HOST="127.0.0.1",
        FAPIAO_METRICS__MULTIPROC_DIR=str(parent),
    )
    doc_id = store_bill(session_factory, "demo", make_bill("MET-1", DEMO_SELLER))
    two_days_ago = utcnow() - timedelta(days=2)
    make_document(  # pushed two days ago, next poll far away: only the sweeper looks at it
        status="pushed",
        tenant="demo",
        seller_tax_id=DEMO_SELLER,
        created_at=two_days_ago,
        status_changed_at=two_days_ago,
        next_poll_at=utcnow() + timedelta(days=1),
    )
    sender = CeleryEnqueuer(create_app(settings))
    labels = {"document_id": doc_id, "bill_no": "MET-1", "tenant": "demo"}
    url = f"http://127.0.0.1:{port}/metrics"

    worker = start_celery(env, tmp_path, "worker", "-P", "prefork", "-c", "2", "-l", "info",
                          "--without-mingle", "--without-gossip")  # fmt: skip
    try:
        first = wait_until(lambda: _try_scrape(url, worker, tmp_path), timeout=60, interval=0.2)
        # The worker re-exec'd itself into multiprocess mode: same pid, still running.
        assert worker.poll() is None
        assert value(first, "fapiao_sweeps_total") == 0.0
        assert sender.send([Followup(queues.PUSH, labels)]) == 1
        wait_until(lambda: statuses(session_factory, [doc_id])[doc_id] == "pushed", timeout=60)
        assert sender.send([Followup(queues.POLL, labels)]) == 1
        wait_until(lambda: statuses(session_factory, [doc_id])[doc_id] == "invoiced", timeout=60)
        assert sender.send([Followup(queues.SWEEP, {})]) == 1
        samples = wait_until(lambda: _after_a_sweep(scrape(url)), timeout=60)
        directories = [p.name for p in parent.iterdir()]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)  # warm shutdown: the exporter cleans up
            try:
                worker.wait(timeout=30)
            except Exception:
                stop(worker)

    push = {"interface": "BILL.PUSH"}
    assert value(samples, "fapiao_cloud_calls_total", **push, outcome="accepted") == 1.0
    assert value(samples, "fapiao_cloud_call_seconds_count", **push) == 1.0
    assert value(samples, "fapiao_cloud_call_seconds_bucket", **push, le="+Inf") == 1.0
    query = {"interface": "BILL.INVOICE.QUERY"}
    assert value(samples, "fapiao_cloud_calls_total", **query, outcome="accepted") == 1.0
    assert value(samples, "fapiao_cloud_call_seconds_count", **query) == 1.0
    assert value(samples, "fapiao_token_refreshes_total", tenant="demo") == 1.0
    assert value(samples, "fapiao_submit_to_pushed_seconds_count", tenant="demo") == 1.0
    assert value(samples, "fapiao_submit_to_invoiced_seconds_count", tenant="demo") == 1.0
    # The planted document: one age alert from the sweep, labelled with its state.
    assert value(samples, "fapiao_stuck_documents_total", status="pushed") == 1.0
    assert value(samples, "fapiao_sweeps_total") == 1.0
    assert len(directories) == 1 and directories[0].startswith(OWN_DIR_PREFIX)
    assert list(parent.iterdir()) == []  # removed at shutdown


def _after_a_sweep(samples: Samples) -> Samples | None:
    return samples if value(samples, "fapiao_sweeps_total") else None


def _try_scrape(url: str, worker: subprocess.Popen[bytes], logs: Path) -> Samples | None:
    if worker.poll() is not None:
        raise RuntimeError((logs / "worker.log").read_text(errors="replace")[-4000:])
    try:
        return scrape(url)
    except httpx.TransportError:
        return None
