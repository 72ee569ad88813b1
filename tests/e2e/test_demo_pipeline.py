"""``make demo`` headless: the whole bridge (simulator, API, worker, beat, Flower) end to end.

The module's stack runs once (``demo.stack.running_stack`` + ``demo.scenario.run_scenario``)
and the tests judge what it left behind while it still runs.

Database: the suite's own (``database_url`` from tests/conftest.py), so the demo pipeline runs
on PostgreSQL in the PostgreSQL run and on SQLite in the SQLite run; tables are emptied before
and after. Redis: a private ``redis-server`` on a free loopback port (started and stopped by
the module, never shared, so nothing needs flushing) when one is installed. Without one, the
Redis of FAPIAO_TEST_REDIS_URL (its host, port and credentials) with database number
``n XOR 4``, ``n`` being that URL's own (15 → 11, 14 → 10, none → 4): never the database the
rest of the suite flushes, and runs on different test databases get different demo databases,
none of them the other suite's in ``make test`` (15 and 14, concurrent); that one is flushed
before and after. If it does not answer, the demo starts whatever it
can. Transitions are judged from ``document_events`` (every transition, in order), never
from the states the progress display happened to sample. Two more tests run
``python -m demo`` as a process: once to the end on the in-process fakeredis fallback (exit
code 0, servers gone afterwards), once interrupted with SIGINT (exit code 130, servers gone).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis
from sqlalchemy import Engine, select

from demo.processes import ManagedProcess, ProcessGroup
from demo.redis_source import redis_for_demo
from demo.samples import SampleSet, load_samples
from demo.scenario import DemoReport, DocumentRow, run_scenario
from demo.stack import REPO_ROOT, DemoOptions, DemoStack, running_stack
from store.models import Document, DocumentEvent
from store.states import EventOutcome
from tests.conftest import DEFAULT_REDIS_URL, empty_all_tables

pytestmark = pytest.mark.slow

# The fallback demo database is the test URL's database number XOR this (15 → 11, 14 → 10):
# not 1, which would give each of make test's two concurrent suites (15, 14) the other's.
DEMO_REDIS_DB_XOR = 4
FLOWER_PASSWORD = "e2e-flower-pass-31"
ALL_INVOICE_TYPES = {"004", "007", "025", "026", "028", "08xdp", "10xdp"}


class _Recorder:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.seen: dict[str, list[str]] = {}

    def note(self, text: str) -> None:
        self.notes.append(text)

    def progress(self, rows: list[DocumentRow], elapsed: float) -> None:
        for row in rows:
            states = self.seen.setdefault(row.bill_no, [])
            if not states or states[-1] != row.status:
                states.append(row.status)


def _demo_redis_url(test_url: str | None = None) -> str:
    """FAPIAO_TEST_REDIS_URL's Redis, database number XOR ``DEMO_REDIS_DB_XOR`` (docstring)."""
    if test_url is None:
        test_url = os.environ.get("FAPIAO_TEST_REDIS_URL", "").strip() or DEFAULT_REDIS_URL
    parts = urlsplit(test_url)
    digits = parts.path.strip("/")
    db = int(digits) if digits.isdigit() else 0
    return urlunsplit(parts._replace(path=f"/{db ^ DEMO_REDIS_DB_XOR}"))


@contextmanager
def _demo_redis(workdir: Path) -> Iterator[str]:
    """A private redis-server if installed, else the test Redis on its derived database."""
    if shutil.which("redis-server") is not None:
        group = ProcessGroup()
        try:
            with redis_for_demo(None, group, workdir, allow_server=True) as source:
                assert source.kind == "redis-server", source
                yield source.url
        finally:
            group.stop_all()
        return
    url = _demo_redis_url()
    _flush(url)
    try:
        yield url
    finally:
        _flush(url)


def test_the_fallback_demo_database_is_derived_from_the_test_url() -> None:
    assert _demo_redis_url("redis://127.0.0.1:6379/15") == "redis://127.0.0.1:6379/11"
    assert _demo_redis_url("redis://127.0.0.1:6379/14") == "redis://127.0.0.1:6379/10"
    assert _demo_redis_url("redis://:pw@redis.test:6380/8") == "redis://:pw@redis.test:6380/12"
    assert _demo_redis_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379/4"
    assert _demo_redis_url("redis://h:1/3?protocol=3") == "redis://h:1/7?protocol=3"


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.flushdb()
    except (redis.RedisError, OSError):
        pass  # not answering: the demo starts its own Redis
    finally:
        client.close()


@pytest.fixture(scope="module")
def samples() -> SampleSet:
    return load_samples()


@pytest.fixture(scope="module")
def demo_run(
    engine: Engine,
    database_url: str,
    samples: SampleSet,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DemoStack, DemoReport, _Recorder, list[ManagedProcess]]]:
    empty_all_tables(engine)
    recorder = _Recorder()
    started: list[ManagedProcess] = []
    try:
        with _demo_redis(tmp_path_factory.mktemp("demo-redis")) as redis_url:
            options = DemoOptions(
                workdir=tmp_path_factory.mktemp("demo"),
                database_url=database_url,
                redis_url=redis_url,
                flower_password=FLOWER_PASSWORD,
            )
            with running_stack(options) as stack:
                started.extend(stack.processes.processes)
                report = run_scenario(stack, samples, recorder)
                yield stack, report, recorder, started
    finally:
        empty_all_tables(engine)


@pytest.fixture(scope="module")
def report(demo_run: tuple[DemoStack, DemoReport, _Recorder, list[ManagedProcess]]) -> DemoReport:
    return demo_run[1]


def test_every_sample_reaches_the_state_its_manifest_expects(
    report: DemoReport, samples: SampleSet
) -> None:
    assert report.settled, report.notes
    assert report.mismatches == {}
    assert report.ok
    assert len(report.outcomes) == len(samples.documents) >= 11


def test_the_story_the_issue_asks_for(report: DemoReport, samples: SampleSet) -> None:
    outcome = report.outcomes
    # A bill of 18 lines on a paper invoice: split into 3 invoices, all issued.
    assert outcome["XS20250720-0107"].status == "invoiced"
    assert outcome["XS20250720-0107"].invoices == 3
    # Passed the bridge's own checks, refused by the cloud with its message.
    assert outcome["XS20250721-0015"].status == "rejected"
    assert "价税合计金额不对" in outcome["XS20250721-0015"].reason
    # Withdrawn from the cloud by the ERP before issuance.
    assert outcome["HZYF-SO-250906-011"].status == "withdrawn"
    assert outcome["HZYF-SO-250906-011"].invoices == 0
    # The bill whose callbacks the cloud dropped was found by polling.
    assert outcome["QHSZ-2025-1001-12"].status == "invoiced"
    invoiced_types = {
        d.invoice_type for d in samples.documents if outcome[d.bill_no].status == "invoiced"
    }
    assert invoiced_types == ALL_INVOICE_TYPES
    sellers = {d.seller_tax_id for d in samples.documents}
    assert len(sellers) >= 4


def test_the_cloud_never_issued_twice(
    demo_run: tuple[DemoStack, DemoReport, _Recorder, list[ManagedProcess]],
) -> None:
    stack, report, _, _ = demo_run
    assert report.double_issue == {"live_twice": [], "over_issued": []}
    bills = httpx.get(f"{stack.simulator_url}/_sim/bills").json()
    numbers = [b["billNo"] for b in bills]
    assert len(numbers) == len(set(numbers)), "a billNo was pushed as a second bill"
    states = {b["billNo"]: b["state"] for b in bills}
    assert states["HZYF-SO-250906-011"] == "withdrawn"
    assert "XS20250721-0015" not in states  # refused: nothing stored in the cloud


def test_a_token_expired_and_a_callback_was_dropped_along_the_way(
    demo_run: tuple[DemoStack, DemoReport, _Recorder, list[ManagedProcess]],
) -> None:
    stack, report, recorder, _ = demo_run
    calls: dict[str, dict[str, int]] = report.cloud_stats["calls"]
    assert sum(per.get("401", 0) for per in calls.values()) >= 1
    assert any("expired" in note for note in recorder.notes)
    assert report.cloud_stats["callbacks"]["dropped"] >= 1
    view = httpx.get(
        f"{stack.api_url}/v1/documents/QHSZ-2025-1001-12",
        headers={"Authorization": f"Bearer {stack.api_key}"},
    ).json()
    kinds = [entry["kind"] for entry in view["timeline"]]
    assert "callback" not in kinds
    assert any(
        e["kind"] == "cloud_call" and e["interface"] == "BILL.INVOICE.QUERY"
        for e in view["timeline"]
    )


def _transitions(engine: Engine, bill_no: str) -> list[tuple[str | None, str]]:
    """Every applied transition of ``bill_no`` (all revisions), in the order it happened."""
    query = (
        select(DocumentEvent.from_status, DocumentEvent.to_status)
        .join(Document, Document.id == DocumentEvent.document_id)
        .where(Document.bill_no == bill_no, DocumentEvent.outcome == EventOutcome.applied.value)
        .order_by(DocumentEvent.id)
    )
    with engine.connect() as connection:
        return [(row.from_status, row.to_status) for row in connection.execute(query)]


def test_the_withdrawn_bill_went_through_withdrawing(
    demo_run: tuple[DemoStack, DemoReport, _Recorder, list[ManagedProcess]], engine: Engine
) -> None:
    # From the audit trail, which records every transition (the progress display only samples).
    transitions = _transitions(engine, "HZYF-SO-250906-011")
    assert transitions, "no document_events for the withdrawn bill"
    assert transitions[-1] == ("withdrawing", "withdrawn"), transitions
    assert transitions[-2][1] == "withdrawing", transitions
    assert "pushed" in [to for _, to in transitions], transitions  # it reached the cloud
    for (_, before), (after, _) in itertools.pairwise(transitions):
        assert before == after, transitions  # one unbroken path, no jumps


def _flower_tasks(stack: DemoStack, bill_no: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        response = httpx.get(f"{stack.flower_url}/api/tasks", auth=stack.flower_auth)
        assert response.status_code == 200
        tasks: dict[str, Any] = response.json()
        if bill_no in response.text or time.monotonic() > deadline:
            return tasks
        time.sleep(0.5)


def test_flower_lists_the_demo_tasks_behind_basic_auth(
    demo_run: tuple[DemoStack, DemoReport, _Recorder, list[ManagedProcess]],
) -> None:
    stack = demo_run[0]
    assert httpx.get(f"{stack.flower_url}/api/tasks").status_code == 401
    wrong = httpx.get(f"{stack.flower_url}/api/tasks", auth=("demo", "not-the-password"))
    assert wrong.status_code == 401
    tasks = _flower_tasks(stack, "XS20250720-0107")
    names = {task.get("name") for task in tasks.values()}
    push_tasks = {"fapiao.push", "fapiao.push_batch"}  # a batch's kwargs name every bill
    assert names & push_tasks
    pushes = [t for t in tasks.values() if t.get("name") in push_tasks]
    assert any("XS20250720-0107" in str(t.get("kwargs")) for t in pushes)


def _urls(output: str) -> list[str]:
    return sorted(set(re.findall(r"http://127\.0\.0\.1:\d+", output)))


def _refuses(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.ConnectError:
        return True
    return False


def _demo_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FAPIAO_")}


def test_the_command_runs_to_the_end_on_fakeredis_and_stops_everything(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo", "--headless", "--workdir", str(tmp_path),
         "--redis-url", "redis://127.0.0.1:9/0", "--no-redis-server"],
        cwd=REPO_ROOT, env={**_demo_env(), "COLUMNS": "160"},
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "DEMO ONLY" in result.stdout
    assert "as expected" in result.stdout
    assert "Where to look next" in result.stdout
    assert f"password {FLOWER_PASSWORD}" not in result.stdout  # a random one was made
    urls = _urls(result.stdout)
    assert len(urls) >= 3
    assert all(_refuses(url) for url in urls)


def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "demo", "--headless", "--workdir", str(tmp_path)],
        cwd=REPO_ROOT, env={**_demo_env(), "COLUMNS": "160"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("wave 1:"):
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    output = "".join(lines) + rest
    assert process.returncode == 130, output[-3000:]
    assert "interrupted" in output
    urls = _urls(output)
    assert len(urls) >= 3
    assert all(_refuses(url) for url in urls)
