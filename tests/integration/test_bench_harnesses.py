"""Smoke runs of every bench harness at a small N (real processes; no timing is asserted).

Each harness brings its own PostgreSQL cluster and redis-server (``bench.stack``), so these
tests do not depend on the suite's database: they run once, in the PostgreSQL pass
(``postgres_only``), not again in the SQLite pass.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import redis

from bench import (
    chaos,
    competent,
    fuzz,
    ingest,
    latency,
    paired_api,
    profile_api,
    scale,
    throughput,
)
from bench.pgcluster import pg_bin_dir
from bench.stack import REPO_ROOT
from bench.workload import queued_documents
from producers.testing import bridge_settings
from schemas.kingdee import push_request
from simulator.testing import make_bill, running_simulator, sim_tenant_specs
from worker.app import create_app

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


def _needs_initdb() -> None:
    try:
        pg_bin_dir()
    except RuntimeError:
        pytest.skip("needs PostgreSQL's initdb")


def _run(module: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    _needs_initdb()
    code = module.main([*argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


def test_chaos_small_run_holds_every_invariant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, figures = _run(
        chaos,
        ["-n", "60", "--disrupt-every", "2", "--batch", "20", "--submit-rate", "60",
         "--timeout", "240", "--quiet-seconds", "1", "--workdir", str(tmp_path)],
        capsys,
    )  # fmt: skip
    assert code == 0, figures
    assert figures["by_status"] == {"invoiced": 60}
    assert all(at is not None for at in figures["disruptions"].values())
    assert figures["violations"] == {}
    assert figures["double_issue"] == {"live_twice": [], "over_issued": []}


def test_chaos_exits_non_zero_when_a_document_is_issued_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, figures = _run(
        chaos,
        ["-n", "20", "--disrupt-every", "1", "--batch", "20", "--timeout", "240",
         "--quiet-seconds", "0", "--sabotage", "--workdir", str(tmp_path)],
        capsys,
    )  # fmt: skip
    assert code == 1
    assert len(figures["violations"]["issued_twice"]) == 2


def test_chaos_small_run_under_the_merge_dialect_declared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """merge=when_asked: documents ask for autoMerge, merged invoices count once per document."""
    code, figures = _run(
        chaos,
        ["-n", "20", "--disrupt-every", "2", "--batch", "20", "--timeout", "240",
         "--quiet-seconds", "1", "--dialect", "merge=when_asked", "--declare",
         "--workdir", str(tmp_path)],
        capsys,
    )  # fmt: skip
    assert code == 0, figures
    assert (figures["dialect"], figures["declared"]) == ({"merge": "when_asked"}, True)
    assert figures["by_status"] == {"invoiced": 20}
    assert figures["violations"] == {}
    assert figures["double_issue"] == {"live_twice": [], "over_issued": []}
    tenants = (Path(figures["work_directory"]) / "tenants.toml").read_text(encoding="utf-8")
    assert tenants.count('merge = "when_asked"') == 2  # both tenants declare it


def test_throughput_runs_all_four_lanes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, figures = _run(
        throughput,
        ["-n", "40", "--raw-tasks", "100", "--naive-documents", "3", "--batch", "20",
         "--competent-documents", "12", "--competent-threads", "4",
         "--workdir", str(tmp_path)],
        capsys,
    )  # fmt: skip
    assert code == 0, figures
    assert figures["bridge"]["invoiced"] == 40
    assert figures["raw_celery"]["done"] == 100
    assert figures["naive"]["invoiced"] == 3
    # The naive loop logs in before every push: two token calls per document.
    assert figures["naive"]["token_calls"] == 6
    competent = figures["competent"]
    assert (competent["invoiced"], competent["errors"]) == (12, [])
    assert competent["rate"] > 0 and figures["ratios"]["bridge_vs_competent"] > 0
    # One cached token for the whole run, one push per bill.
    assert competent["token_calls"] == 2
    assert competent["cloud_calls"]["BILL.PUSH"] == 12
    # CPU by process: the bridge's own processes worked, and the competent lane's bills sent
    # the bridge no callbacks (the simulator dropped them), so the API stayed idle then.
    shares = figures["bridge"]["cpu_ms_per_document_by_process"]
    assert shares["worker"] > 0 and shares["postgres"] > 0
    mine = sum(shares[name] for name in throughput.BRIDGE_PROCESSES)
    assert figures["bridge"]["bridge_cpu_ms_per_document"] == pytest.approx(mine, abs=0.05)
    # /proc counts CPU in 10 ms clock ticks: an idle API may still be charged one or two.
    idle_api_ms = competent["cpu_ms_per_document_by_process"].get("api", 0.0) * 12
    assert idle_api_ms <= 20.0
    assert figures["invariants"]["ok"] is True


def test_competent_session_logs_in_once_and_again_only_after_expiry() -> None:
    spec = sim_tenant_specs()[0]
    bills = [make_bill(f"C-{i}", spec["seller_tax_ids"][0], auto_invoice=True) for i in range(6)]
    with running_simulator([spec], issue_delay=0.02) as sim:
        base = sim.base_url_for("demo")
        result = competent.run_competent(base, spec, bills, threads=3, poll_interval=0.01)
        assert (result.invoiced, result.errors) == (6, [])
        assert result.rate > 0
        assert (result.calls["getAppToken"], result.calls["login"]) == (1, 1)
        assert result.calls["BILL.PUSH"] == 6

        session = competent._Session(base, spec, threads=1)
        try:
            session.token()
            assert sim.expire_tokens() >= 1
            request = push_request(
                spec["business_system_code"], [make_bill("C-x", spec["seller_tax_ids"][0])]
            )
            answer = session.gateway("BILL.PUSH", request)
        finally:
            session.client.close()
        assert answer.ok, answer
        # Refused once with the expired token, logged in again, the push repeated.
        assert (session.calls["getAppToken"], session.calls["BILL.PUSH"]) == (2, 2)


def test_ingest_stores_and_enqueues_every_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, figures = _run(
        ingest, ["-n", "1200", "--batch", "600", "--workdir", str(tmp_path)], capsys
    )
    assert code == 0, figures
    assert figures["accepted"] == figures["stored_as_draft"] == 1200
    assert figures["push_documents_queued"] == 1200
    assert 1 <= figures["push_messages"] <= 1200
    assert figures["single_request_of_all_documents"] == 413  # more than 1,000 in one request
    assert figures["api_cpu_ms_per_document"] > 0


def test_ingest_with_two_api_processes_and_two_clients(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, figures = _run(
        ingest,
        ["-n", "800", "--batch", "200", "--clients", "2", "--api-workers", "2",
         "--workdir", str(tmp_path)],
        capsys,
    )  # fmt: skip
    assert code == 0, figures
    assert (figures["api_workers"], figures["clients"]) == (2, 2)
    assert figures["api_processes"] >= 3  # uvicorn's supervisor and its two workers
    assert figures["accepted"] == figures["stored_as_draft"] == 800
    assert figures["push_documents_queued"] == 800


def test_queued_documents_counts_the_documents_a_push_message_owes(redis_url: str) -> None:
    app = create_app(bridge_settings("sqlite://", broker_url=redis_url, redis_url=redis_url))
    client = redis.Redis.from_url(redis_url)
    try:
        one = {"document_id": 1, "bill_no": "Q-1", "tenant": "demo"}
        batch = {"document_ids": [2, 3, 4], "bill_nos": ["Q-2", "Q-3", "Q-4"],
                 "tenants": ["demo"] * 3}  # fmt: skip
        app.send_task("fapiao.push", kwargs=one, queue="push")
        app.send_task("fapiao.push_batch", kwargs=batch, queue="push")
        app.send_task("fapiao.withdraw", kwargs={**one, "document_id": 9}, queue="push")
        assert queued_documents(client, "push") == (4, 3)
        assert queued_documents(client, "poll") == (0, 0)
    finally:
        client.close()


def test_latency_measures_every_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, figures = _run(
        latency, ["--rate", "10", "--seconds", "2", "--workdir", str(tmp_path)], capsys
    )
    assert code == 0, figures
    pushed = figures["submit_to_pushed"]
    assert pushed["count"] == figures["documents"] == 20
    assert 0 < pushed["p50_ms"] <= pushed["p95_ms"] <= pushed["p99_ms"]
    assert isinstance(figures["rate_held"], bool)
    assert figures["cpu_ms_per_document_by_process"]["worker"] > 0


def test_scale_prints_plans_that_use_the_partial_indexes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, figures = _run(
        scale,
        ["--small", "500", "--large", "3000", "--repeat", "2", "--rss-documents", "0",
         "--workdir", str(tmp_path)],
        capsys,
    )  # fmt: skip
    assert code == 0, figures
    plans = figures["database"]["plans"]
    assert set(plans) == {"due_drafts", "due_for_poll", "expired_leases", "due_withdrawals"}
    assert "ix_documents_poll_due" in plans["due_for_poll"]
    assert figures["database"]["seq_scans"] == []


def test_fuzz_finds_no_500_and_no_state_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, figures = _run(fuzz, ["--examples", "40", "--workdir", str(tmp_path)], capsys)
    assert code == 0, figures
    assert figures["requests"] == 80
    assert figures["server_errors"] == 0
    assert figures["refused"] > 0


def test_profile_api_profiles_each_kind_of_request_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs_initdb()
    assert profile_api.main(["-n", "10", "--top", "40", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    intake, callbacks = out.split("=== callbacks")
    # One INSERT per one-document request (no SELECT, no SAVEPOINT); a callback: the inbox
    # INSERT and the document's poll deferral. Each phase's profile holds only its requests.
    assert "statements 1.00, pings 0.00, commits 1.00, BEGINs 1.00" in intake
    assert "statements 2.00, pings 0.00, commits 1.00, BEGINs 1.00" in callbacks
    assert "final: {'invoiced': 10}" in callbacks
    assert "producers/intake.py" in intake and "producers/http.py" in callbacks


def test_paired_api_runs_two_trees_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    _needs_initdb()
    assert paired_api.main([str(REPO_ROOT), str(REPO_ROOT), "-n", "5", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "round 1: intake A " in out and "mean of 1: intake A " in out
