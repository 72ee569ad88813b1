"""Flower as operators use it: a real ``celery -A worker flower`` (``worker.flower`` options)
watching a real worker process, queried over its HTTP API (``/api/tasks``).

| test                                   | shows                                                |
|----------------------------------------|------------------------------------------------------|
| rejected documents                     | found by bill number (kwargs); the result names the  |
|                                        | rejected bill with the cloud's code and message      |
| maintenance tasks                      | a succeeding sweep leaves no trace; a failing        |
|                                        | maintenance task is listed, named, as FAILURE        |
| restart                                | the history survives a Flower restart (``--db``)     |
| sweep labels                           | a re-sent callback message carries bill_no / tenant  |
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from demo.processes import free_port
from schemas.settings import Settings
from simulator.testing import SimulatorHandle, make_bill, running_simulator
from store.columns import utcnow
from store.db import unit_of_work
from store.models import CallbackInbox, Document
from tests.integration.test_worker_celery import WORKER_ARGS, start_celery, stop, worker_env
from tests.integration.worlds import DEMO_SELLER
from worker import queues
from worker.app import FapiaoCelery, create_app
from worker.enqueue import CeleryEnqueuer, RecordingEnqueuer, push_message, push_messages
from worker.flower import flower_options
from worker.runtime import build_runtime
from worker.tasks import run
from worker.testing import fast_settings, store_bill, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
AUTH = ("ops", "flower-test-pw")


@pytest.fixture
def sim() -> Iterator[SimulatorHandle]:
    with running_simulator(issue_delay=0.05, seed=5) as handle:
        yield handle


@pytest.fixture
def settings(sim: SimulatorHandle, database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    tenants = sim.write_tenants_file(tmp_path / "tenants.toml")
    return fast_settings(database_url=database_url, redis_url=redis_url, tenants_file=tenants)


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return worker_env(settings, settings.tenants_file)


@pytest.fixture
def app(settings: Settings) -> FapiaoCelery:
    return create_app(settings)


class Flower:
    """``celery -A worker flower`` on a free port with a history file; stopped by SIGTERM."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env, self.directory = env, directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Flower:
        log = (self.directory / "flower.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "flower", "--address=127.0.0.1",
             f"--port={self.port}", f"--basic-auth={AUTH[0]}:{AUTH[1]}",
             *flower_options(db=self.directory / "flower.db", state_save_interval_ms=1000)],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_until(self._healthy, timeout=60, interval=0.2)
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"flower exited {self.process.returncode}; see flower.log")
        try:
            return httpx.get(f"{self.url}/healthcheck", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def terminate(self) -> None:
        """A clean stop (what ``docker compose stop`` does): Flower saves its state."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)

    def tasks(self, **params: str) -> dict[str, dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/tasks", params=params, auth=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        found: dict[str, dict[str, Any]] = response.json()
        return found

    def finished(self, **params: str) -> list[dict[str, Any]]:
        return [
            task
            for task in self.tasks(**params).values()
            if task.get("state") in ("SUCCESS", "FAILURE")
        ]


@pytest.fixture
def flower(env: dict[str, str], tmp_path: Path) -> Iterator[Flower]:
    running = Flower(env, tmp_path).start()
    try:
        yield running
    finally:
        running.terminate()


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path, flower: Flower) -> Iterator[Path]:
    """A prefork worker process (after Flower, so Flower sees its first event); its log."""
    process = start_celery(env, tmp_path, *WORKER_ARGS)
    try:
        yield tmp_path / "worker.log"
    finally:
        stop(process)


def refuse(sim: SimulatorHandle, rules: dict[str, str]) -> None:
    sim.admin.put("/_sim/bill-rules", json={"refuse": rules}).raise_for_status()


def last_error(sessions: sessionmaker[Session], document_id: int) -> str:
    with sessions() as session:
        document = session.get(Document, document_id)
        assert document is not None and document.status == "rejected"
        assert document.last_error_message
        return document.last_error_message


def test_flower_finds_rejected_documents_by_bill_number_and_says_why(
    app: FapiaoCelery,
    sim: SimulatorHandle,
    session_factory: sessionmaker[Session],
    flower: Flower,
    worker: Path,
) -> None:
    refuse(sim, {"FLW-1": "-10007", "FLW-B-1": "-10007"})
    enqueuer = CeleryEnqueuer(app)
    # One document waits alone: a push task fills its batch with every waiting draft of its
    # tenant, so the batch's documents are stored only once this push is done.
    single = store_bill(session_factory, "demo", make_bill("FLW-1", DEMO_SELLER))
    assert enqueuer.send([push_message(single, "FLW-1", "demo")]) == 1

    # One push, found by its bill number as an exact keyword match.
    (task,) = wait_until(lambda: flower.finished(search="kwargs:bill_no=FLW-1"), timeout=90)
    assert task["name"] == queues.PUSH and task["state"] == "SUCCESS"
    assert ast.literal_eval(task["kwargs"]) == {
        "document_id": single,
        "bill_no": "FLW-1",
        "tenant": "demo",
    }
    result = ast.literal_eval(task["result"])
    assert result == {"rejected": {"FLW-1": last_error_reason(result, "FLW-1")}}
    assert "-10007" in result["rejected"]["FLW-1"]
    assert last_error(session_factory, single) in result["rejected"]["FLW-1"]

    batch = [
        (store_bill(session_factory, "demo", make_bill(f"FLW-B-{i}", DEMO_SELLER)), f"FLW-B-{i}")
        for i in range(3)
    ]
    assert enqueuer.send(push_messages([(d, b, "demo") for d, b in batch], 3)) == 1

    # The batch, found by one of its bill numbers (a substring of its kwargs).
    (batch_task,) = wait_until(lambda: flower.finished(search="FLW-B-1"), timeout=90)
    assert batch_task["name"] == queues.PUSH_BATCH
    assert "'tenants': ['demo', 'demo', 'demo']" in batch_task["kwargs"]
    outcome = ast.literal_eval(batch_task["result"])
    assert outcome["pushed"] == ["FLW-B-0", "FLW-B-2"]
    assert list(outcome["rejected"]) == ["FLW-B-1"]
    assert last_error(session_factory, batch[1][0]) in outcome["rejected"]["FLW-B-1"]


def last_error_reason(result: dict[str, Any], bill_no: str) -> str:
    reason = result["rejected"][bill_no]
    assert isinstance(reason, str)
    return reason


def test_maintenance_tasks_stay_out_of_flower_unless_they_fail(
    settings: Settings, flower: Flower, worker: Path
) -> None:
    # As beat sends them: no task-sent event (worker.app quiets beat's app the same way).
    quiet = create_app(settings)
    quiet.conf.task_send_sent_event = False
    swept = quiet.send_task(queues.SWEEP)
    # A maintenance task that fails (it takes no arguments): the failure must be seen.
    broken = quiet.send_task(queues.POLL_DUE, kwargs={"unexpected": 1})

    (failed,) = wait_until(lambda: flower.finished(taskname=queues.POLL_DUE), timeout=90)
    assert failed["uuid"] == broken.id and failed["state"] == "FAILURE"
    assert "unexpected" in failed["exception"]
    # The worker ran the sweep before the failing task (one process, one queue, in order).
    assert f"Task {queues.SWEEP}[{swept.id}] succeeded" in worker.read_text(encoding="utf-8")
    assert swept.id not in flower.tasks()
    assert {task["name"] for task in flower.tasks().values()} == {queues.POLL_DUE}


def test_flower_history_survives_a_restart(app: FapiaoCelery, flower: Flower) -> None:
    # No worker: the task-sent event alone puts the task in Flower's history. Flower
    # subscribes to events shortly after it answers /healthcheck: send until one is seen.
    def seen() -> dict[str, dict[str, Any]]:
        app.send_task(
            queues.PUSH, kwargs={"document_id": 5, "bill_no": "PERSIST-1", "tenant": "demo"}
        )
        return wait_until(
            lambda: flower.tasks(search="kwargs:bill_no=PERSIST-1"), timeout=2, interval=0.2
        )

    before = wait_until(lambda: _or_empty(seen), timeout=60)
    flower.terminate()
    flower.start()
    after = flower.tasks(search="kwargs:bill_no=PERSIST-1")
    assert set(before) <= set(after)
    assert {task["name"] for task in after.values()} == {queues.PUSH}


def _or_empty(
    find: Callable[[], dict[str, dict[str, Any]]],
) -> dict[str, dict[str, Any]]:
    try:
        return find()
    except TimeoutError:
        return {}


def test_the_sweeper_labels_a_resent_callback_with_its_bill(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    document_id = store_bill(session_factory, "demo", make_bill("LBL-1", DEMO_SELLER))
    with unit_of_work(session_factory) as session:
        row = CallbackInbox(
            dedupe_key="lbl-1", raw_body=b"{}", document_id=document_id, style="per_bill"
        )
        session.add(row)
        session.flush()
        inbox_id = row.id
    rt = build_runtime(settings, enqueuer=RecordingEnqueuer(), sessions=session_factory)
    try:
        rt.clock = lambda: utcnow() + timedelta(hours=1)  # the row is stale by then
        _, followups = run(rt, queues.SWEEP, {})
    finally:
        rt.close()
    resent = [f.kwargs for f in followups if f.task == queues.RECONCILE]
    assert resent == [{"inbox_id": inbox_id, "bill_no": "LBL-1", "tenant": "demo"}]
