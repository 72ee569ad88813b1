"""fapiao submit, status, show, withdraw, tenants and db — in process, on a real database."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, sessionmaker

from producers.bootstrap import Components
from producers.testing import (
    SELLER_DEMO_2,
    SELLER_SHOP,
    bill_json,
    bridge_settings,
    build_test_components,
    make_bill,
    run_cli,
)
from store.columns import utcnow
from store.db import make_engine
from store.models import Document, DocumentEvent, ErpOutbox, TenantState
from worker import queues
from worker.enqueue import RecordingEnqueuer

MakeDocument = Callable[..., Document]


@pytest.fixture
def enqueuer() -> RecordingEnqueuer:
    return RecordingEnqueuer()


@pytest.fixture
def components(
    database_url: str, session_factory: sessionmaker[Session], enqueuer: RecordingEnqueuer
) -> Components:
    return build_test_components(bridge_settings(database_url), session_factory, enqueuer=enqueuer)


def documents(sessions: sessionmaker[Session]) -> dict[str, Document]:
    with sessions() as session:
        return {d.bill_no: d for d in session.scalars(select(Document))}


# ------------------------------------------------------------------ submit


def test_submit_a_file_stores_it_and_sends_the_push(
    components: Components, enqueuer: RecordingEnqueuer, tmp_path: Path
) -> None:
    path = tmp_path / "one.json"
    path.write_bytes(bill_json(make_bill("CLI-1")))

    result = run_cli(components, "submit", str(path))

    assert result.exit_code == 0, result.output
    assert "created" in result.output and "CLI-1" in result.output
    assert "1 document(s): 1 created" in result.output
    stored = documents(components.sessions)["CLI-1"]
    assert enqueuer.of(queues.PUSH) == [
        {"document_id": stored.id, "bill_no": "CLI-1", "tenant": "demo"}
    ]
    with components.sessions() as session:
        assert session.scalars(select(DocumentEvent.actor)).one() == "cli"


def test_submit_a_directory_of_json_and_json_lines(components: Components, tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(
        b'{"documents": ['
        + bill_json(make_bill("D-1"))
        + b","
        + bill_json(make_bill("D-2"))
        + b"]}"
    )
    (tmp_path / "b.jsonl").write_bytes(
        bill_json(make_bill("D-3"))
        + b"\n\n"
        + bill_json(make_bill("D-4", seller=SELLER_SHOP))
        + b"\n"
    )
    (tmp_path / "ignored.txt").write_text("not a document")

    result = run_cli(components, "submit", str(tmp_path), "--json")

    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert [(r["bill_no"], r["outcome"]) for r in body["results"]] == [
        ("D-1", "created"),
        ("D-2", "created"),
        ("D-3", "created"),
        ("D-4", "created"),
    ]
    assert body["results"][0]["source"].endswith("a.json#1")
    assert body["results"][3]["source"].endswith("b.jsonl:3")
    assert body["results"][3]["tenant"] == "shop"
    assert body["refused"] == 0


def test_submit_from_stdin_as_json_lines(components: Components) -> None:
    lines = bill_json(make_bill("IN-1")) + b"\n" + bill_json(make_bill("IN-2")) + b"\n"

    result = run_cli(components, "submit", "-", input=lines.decode())

    assert result.exit_code == 0, result.output
    assert set(documents(components.sessions)) == {"IN-1", "IN-2"}


def test_submit_reports_every_issue_and_exits_1(components: Components, tmp_path: Path) -> None:
    good = make_bill("OK-1")
    bad = make_bill("BAD-1", totalAmount="99.00", buyerTaxpayerId="abc")
    path = tmp_path / "mixed.json"
    path.write_bytes(b"[" + bill_json(good) + b"," + bill_json(bad) + b"]")

    result = run_cli(components, "submit", str(path))

    assert result.exit_code == 1
    assert "✗ invalid" in result.output and "BAD-1" in result.output
    assert "totalAmount [total_mismatch]" in result.output
    assert "buyerTaxpayerId [taxpayer_id_format]" in result.output
    assert "价税合计金额不对" in result.output
    assert set(documents(components.sessions)) == {"OK-1"}


def test_unreadable_sources_are_reported_and_exit_1(components: Components, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"billNo": ')
    empty = tmp_path / "empty.json"
    empty.write_text("")

    result = run_cli(components, "submit", str(broken), str(empty), str(tmp_path / "missing.json"))

    assert result.exit_code == 1
    assert "not JSON" in result.output
    assert "empty file" in result.output
    assert "no such file" in result.output
    assert documents(components.sessions) == {}


def test_resubmitting_is_unchanged_and_a_live_change_is_a_conflict(
    components: Components, tmp_path: Path
) -> None:
    first = tmp_path / "first.json"
    first.write_bytes(bill_json(make_bill("R-1")))
    changed = tmp_path / "changed.json"
    changed.write_bytes(bill_json(make_bill("R-1", remark="changed")))

    assert run_cli(components, "submit", str(first)).exit_code == 0
    again = run_cli(components, "submit", str(first))
    conflict = run_cli(components, "submit", str(changed))

    assert again.exit_code == 0 and "unchanged" in again.output
    assert conflict.exit_code == 1 and "conflict" in conflict.output


def test_submit_with_a_named_tenant(components: Components, tmp_path: Path) -> None:
    path = tmp_path / "org.json"
    path.write_bytes(bill_json(make_bill("ORG-1", orgCode="ORG-9", sellerTaxpayerId=None)))

    refused = run_cli(components, "submit", str(path))
    accepted = run_cli(components, "submit", str(path), "--tenant", "shop")

    assert refused.exit_code == 1 and "tenant_required" in refused.output
    assert accepted.exit_code == 0
    assert documents(components.sessions)["ORG-1"].tenant == "shop"


# ------------------------------------------------------------------ status


def test_status_counts_states_by_tenant_and_flags_what_needs_a_person(
    components: Components, make_document: MakeDocument
) -> None:
    long_ago = utcnow() - timedelta(days=2)
    make_document(status="draft", tenant="demo")
    make_document(status="draft", tenant="demo")
    make_document(status="pushed", tenant="demo", status_changed_at=long_ago)  # stuck > 1 day
    make_document(status="failed", tenant="shop", last_error_code="-10005")
    failed = make_document(status="invoice_failed", tenant="shop")
    with components.sessions() as session:
        session.add(TenantState(tenant="shop", paused=True, paused_reason="login refused"))
        session.add(
            ErpOutbox(document_id=failed.id, event="document.failed", payload={}, state="parked")
        )
        session.commit()

    as_json = run_cli(components, "status", "--json")
    table = run_cli(components, "status")

    assert as_json.exit_code == 0, as_json.output
    data = {row["tenant"]: row for row in json.loads(as_json.output)["tenants"]}
    assert data["demo"]["states"]["draft"]["count"] == 2
    assert data["demo"]["states"]["pushed"]["stuck"] is True
    assert data["demo"]["states"]["pushed"]["oldest_age_seconds"] >= 2 * 86400 - 5
    assert data["demo"]["paused"] is False
    assert (data["shop"]["paused"], data["shop"]["paused_reason"]) == (True, "login refused")
    assert data["shop"]["attention"] == 2
    assert data["shop"]["parked_notifications"] == 1
    assert table.exit_code == 0
    assert "PAUSED" in table.output and "STUCK" in table.output
    assert "tenant shop is paused: login refused" in table.output
    assert "1 ERP notification(s) parked" in table.output


def test_status_fits_an_80_column_terminal_with_three_tenants(
    components: Components, make_document: MakeDocument
) -> None:
    from typer.testing import CliRunner

    from producers.cli import CliContext, app

    long_ago = utcnow() - timedelta(days=12)
    for state in ("draft", "pushed", "invoice_failed", "partially_invoiced", "withdrawing"):
        for tenant in ("demo", "shop", "north-china-retail"):  # the third: only in the database
            make_document(status=state, tenant=tenant, status_changed_at=long_ago)
    with components.sessions() as session:
        session.add(TenantState(tenant="shop", paused=True, paused_reason="login refused"))
        session.commit()
    context = CliContext(
        load_settings=lambda: components.settings, build_components=lambda _: components
    )

    result = CliRunner().invoke(app, ["status"], obj=context, env={"COLUMNS": "80"})

    assert result.exit_code == 0, result.output
    widest = max(len(line) for line in result.output.splitlines())
    assert widest <= 80, result.output
    for word in ("demo", "north-china-retail", "PAUSED", "STUCK", "partially_invoiced"):
        assert word in result.output
    # States are rows: each state's name starts its own line of the table.
    rows = [line for line in result.output.splitlines() if "withdrawing" in line]
    assert len(rows) == 1 and rows[0].count("12d") == 3


def test_status_of_one_tenant(components: Components, make_document: MakeDocument) -> None:
    make_document(status="draft", tenant="demo")
    make_document(status="draft", tenant="shop")

    data = json.loads(run_cli(components, "status", "--tenant", "shop", "--json").output)

    assert [row["tenant"] for row in data["tenants"]] == ["shop"]
    assert data["tenants"][0]["total"] == 1


# ------------------------------------------------------------------ show and withdraw


def test_show_prints_the_timeline(components: Components, tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(bill_json(make_bill("SH-1")))
    run_cli(components, "submit", str(path))
    run_cli(
        components, "withdraw", "SH-1", "--reason", "customer cancelled", "--actor", "operator:bob"
    )

    table = run_cli(components, "show", "SH-1")
    as_json = run_cli(components, "show", "SH-1", "--json")

    assert table.exit_code == 0, table.output
    assert "state withdrawn" in table.output
    assert "submit: ∅ → draft" in table.output
    assert "withdraw: draft → withdrawn" in table.output
    assert "customer cancelled" in table.output and "operator:bob" in table.output
    view = json.loads(as_json.output)
    assert view["status"] == "withdrawn"
    assert [e["event"] for e in view["timeline"]] == ["submit", "withdraw"]


def test_show_of_an_unknown_or_ambiguous_bill_exits_1(
    components: Components, tmp_path: Path
) -> None:
    for seller in (None, SELLER_DEMO_2):
        bill = make_bill("AMB-1") if seller is None else make_bill("AMB-1", seller=seller)
        (tmp_path / "a.json").write_bytes(bill_json(bill))
        run_cli(components, "submit", str(tmp_path / "a.json"))

    unknown = run_cli(components, "show", "NOPE")
    ambiguous = run_cli(components, "show", "AMB-1")
    chosen = run_cli(components, "show", "AMB-1", "--seller-tax-id", SELLER_DEMO_2, "--json")

    assert unknown.exit_code == 1 and "no document" in unknown.output
    assert ambiguous.exit_code == 1 and "--seller-tax-id" in ambiguous.output
    assert SELLER_DEMO_2 in ambiguous.output
    assert chosen.exit_code == 0 and json.loads(chosen.output)["seller_tax_id"] == SELLER_DEMO_2


@pytest.mark.parametrize(
    ("state", "exit_code", "becomes", "sends"),
    [
        ("draft", 0, "withdrawn", False),
        ("pushed", 0, "withdrawing", True),
        ("failed", 0, "withdrawing", True),
        ("invoiced", 1, "invoiced", False),
        ("in_doubt", 1, "in_doubt", False),
    ],
)
def test_withdraw_follows_the_lifecycle(
    components: Components,
    enqueuer: RecordingEnqueuer,
    make_document: MakeDocument,
    state: str,
    exit_code: int,
    becomes: str,
    sends: bool,
) -> None:
    document = make_document(status=state, tenant="demo", bill_no="WD-1")

    result = run_cli(components, "withdraw", "WD-1", "--json")

    assert result.exit_code == exit_code, result.output
    assert documents(components.sessions)["WD-1"].status == becomes
    expected = [{"document_id": document.id, "bill_no": "WD-1", "tenant": "demo"}] if sends else []
    assert enqueuer.of(queues.WITHDRAW) == expected


# ------------------------------------------------------------------ tenants


def test_tenants_list_pause_and_resume(components: Components) -> None:
    paused = run_cli(components, "tenants", "pause", "shop", "--reason", "maintenance window")
    listed = json.loads(run_cli(components, "tenants", "list", "--json").output)
    table = run_cli(components, "tenants", "list")
    resumed = run_cli(components, "tenants", "resume", "shop")
    after = json.loads(run_cli(components, "tenants", "list", "--json").output)

    assert paused.exit_code == 0 and resumed.exit_code == 0
    shop = {t["name"]: t for t in listed}["shop"]
    assert shop["paused"] is True and shop["paused_reason"].startswith("maintenance window")
    assert shop["callback_style"] == "per_invoice"
    assert {t["name"]: t for t in listed}["demo"]["callback_style"] == "per_bill"
    assert "PAUSED" in table.output
    assert {t["name"]: t["paused"] for t in after} == {"demo": False, "shop": False}
    with components.sessions() as session:
        assert session.get(TenantState, "shop") is not None


def test_unknown_tenants_are_refused(components: Components) -> None:
    result = run_cli(components, "tenants", "pause", "nobody")
    assert result.exit_code == 1
    assert "unknown tenant" in result.output


# ------------------------------------------------------------------ db


def test_db_upgrade_creates_the_schema_and_current_reports_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    settings = bridge_settings(url)
    components = build_test_components(settings, sessionmaker())

    before = json.loads(run_cli(components, "db", "current", "--json").output)
    upgraded = run_cli(components, "db", "upgrade")
    after = json.loads(run_cli(components, "db", "current", "--json").output)

    assert before["current"] is None
    assert upgraded.exit_code == 0, upgraded.output
    assert after["current"] == after["head"] and after["head"] is not None
    engine = make_engine(url)
    try:
        assert {"documents", "callback_inbox", "document_events"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()


def test_bad_settings_exit_2_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from producers.cli import app

    monkeypatch.setenv("FAPIAO_DATABASE_URL", "mysql://nope")
    monkeypatch.setenv("FAPIAO_ENVIRONMENT", "development")

    result = CliRunner().invoke(app, ["status"])

    assert result.exit_code == 2
    assert "FAPIAO_DATABASE_URL" in result.output
