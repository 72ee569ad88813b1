"""Three-way reconciliation (ERP list, bridge, cloud) finds each kind of planted orphan and
nothing else; a clean run of 1,000 documents reports nothing; the CLI (--json, --csv) and the
HTTP routes. Real database and Redis, the worker's services and the simulator over HTTP.

The cloud and the bridge are made to disagree with the simulator's admin routes: a bill
planted in the cloud (``POST /_sim/bills``), withdrawn behind the bridge's back, voided and
red-flushed by the cloud's clerk; the ERP's list adds a bill never submitted and a wrong total.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, update

from producers.bootstrap import Components
from producers.http import create_app
from producers.testing import API_KEY, auth_headers, build_test_components, run_cli
from schemas.cloud_contract import Dialect
from schemas.kingdee import parse_callback
from schemas.reconciliation import ErpBill, Window, parse_erp_list
from simulator.testing import SimulatorHandle, make_bill
from store.columns import utcnow
from store.db import unit_of_work
from store.models import Invoice, ReconciliationReport
from store.states import InboxState
from tests.integration.worlds import DEMO_SELLER, World, WorldFactory, travel
from worker import queues
from worker.services.push import push_documents
from worker.services.reconciliation import Report, cloud_ask, reconcile
from worker.testing import store_bill, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def fast_world(new_world: WorldFactory, sim: SimulatorHandle) -> World:
    """Tenants with a rate limit far above the test's pace, declaring the default dialect
    (so an empty invoiceList is unambiguous)."""
    specs = [{**spec, "rate_limit_per_second": 2000.0} for spec in sim.specs]
    return new_world(
        {"push": {"batch_size": 100, "batch_concurrency": 4}},
        specs=specs,
        cloud=Dialect.default().as_dict(),
    )


def today() -> Window:
    from schemas.reconciliation import SHANGHAI

    day = utcnow().astimezone(SHANGHAI).date()
    return Window(day, day)


def run(world: World, erp: list[ErpBill] | None = None, **kw: Any) -> Report:
    kw.setdefault("grace", timedelta(0))
    return reconcile(world.sessions, world.rt.tenants, cloud_ask(world.rt), today(), erp=erp, **kw)


def bill(bill_no: str, *, auto: bool, amount: str = "100.00") -> dict[str, Any]:
    return make_bill(bill_no, DEMO_SELLER, auto_invoice=auto, amount=amount)


def push(world: World, ids: list[int]) -> None:
    for start in range(0, len(ids), 200):
        outcomes = push_documents(world.rt, ids[start : start + 200])
        assert {o.status for o in outcomes} == {"pushed"}, outcomes[:3]
    world.enqueuer.take()  # the polls they owe: the test polls itself


def issued_in_cloud(world: World, bill_no: str) -> None:
    wait_until(lambda: world.sim.bill(bill_no)["state"] == "invoiced", timeout=20)


def poll_until_invoiced(world: World, document_id: int) -> None:
    world.run(queues.POLL, document_id=document_id)
    assert world.doc(document_id).status == "invoiced", world.path(document_id)


def callback_of(world: World, bill_no: str) -> bytes:
    """The first callback the simulator sent about ``bill_no`` (to the recorder)."""

    def found() -> bytes | None:
        for received in world.callbacks.received:
            if any(item.billNo == bill_no for item in parse_callback(received.body).items):
                return received.body
        return None

    return wait_until(found, timeout=20)


def findings(report: Report) -> dict[tuple[str, str], list[str]]:
    by: dict[tuple[str, str], list[str]] = {}
    for f in report.findings:
        by.setdefault((f.bill_no, f.kind.value), []).append(f.reason)
    return by


# ------------------------------------------------------------------ each kind of orphan


def test_each_planted_orphan_is_found_and_nothing_else(fast_world: World) -> None:
    world, sim = fast_world, fast_world.sim
    sessions = world.sessions
    plain = {
        n: store_bill(sessions, "demo", bill(n, auto=False)) for n in ("R-OK", "R-WDR", "R-ISS")
    }
    issued = {
        n: store_bill(sessions, "demo", bill(n, auto=True))
        for n in ("R-INV", "R-VOID", "R-RED", "R-TOT", "R-AMT")
    }
    push(world, [*plain.values(), *issued.values()])
    for bill_no, document_id in issued.items():
        issued_in_cloud(world, bill_no)
        poll_until_invoiced(world, document_id)
    before = run(world)
    assert before.findings == [] and before.unanswered == [], before.findings

    sim.withdraw_behind("R-WDR")
    sim.void("R-VOID")
    sim.red("R-RED")
    # Issued by the cloud's clerk; the bridge has not heard (no callback reached it, no poll).
    sim.admin.post("/_sim/bills/R-ISS/issue", json={"wait": True}).raise_for_status()
    # The bridge recorded a different 价税合计 than the cloud issued.
    with unit_of_work(sessions) as session:
        session.execute(
            update(Invoice)
            .where(Invoice.document_id == issued["R-AMT"])
            .values(include_tax_amount=Decimal("112.00"))
        )
    sim.plant_bill(bill("R-PLANT", auto=False))  # ERP-listed, pushed another way
    sim.plant_bill(bill("R-PLANT2", auto=True))  # the same, issued, the ERP's total differs
    issued_in_cloud(world, "R-PLANT2")
    # A bill planted and issued in the cloud whose callback reaches the bridge: an orphan.
    sim.plant_bill(bill("R-CB", auto=True))
    issued_in_cloud(world, "R-CB")
    assert world.reconcile(callback_of(world, "R-CB")) == InboxState.orphan.value
    erp = parse_erp_list(
        "billNo,totalAmount,includeTaxAmount\n"
        "R-OK,100.00,113.00\n"
        "R-TOT,100.00,999.00\n"
        "R-PLANT,100.00,\n"
        "R-PLANT2,,200.00\n"
        "R-NEVER,50.00,\n"
    )
    report = run(world, erp)
    assert report.unanswered == []
    got = findings(report)
    assert set(got) == {
        ("R-WDR", "cloud_unknown"),
        ("R-VOID", "state_mismatch"),
        ("R-RED", "state_mismatch"),
        ("R-PLANT", "cloud_only"),
        ("R-CB", "cloud_only"),
        ("R-NEVER", "not_submitted"),
        ("R-TOT", "total_mismatch"),
        ("R-ISS", "state_mismatch"),
        ("R-AMT", "total_mismatch"),
        ("R-PLANT2", "cloud_only"),
        ("R-PLANT2", "total_mismatch"),
    }, got
    [voided] = got[("R-VOID", "state_mismatch")]
    assert voided.startswith("cloud shows voided") and voided.endswith("bridge shows invoiced")
    assert "cloud shows red-flushed" in got[("R-RED", "state_mismatch")][0]
    assert got[("R-ISS", "state_mismatch")] == [
        "cloud shows issued (1 invoice(s)), bridge shows pushed"
    ]
    assert "ERP 999.00, bridge 113.00" in got[("R-TOT", "total_mismatch")][0]
    assert "cloud 113.00, bridge 112.00" in got[("R-AMT", "total_mismatch")][0]
    assert "ERP 200.00, cloud 113.00" in got[("R-PLANT2", "total_mismatch")][0]
    wdr = next(f for f in report.findings if f.bill_no == "R-WDR")
    assert (wdr.tenant, wdr.seller_tax_id) == ("demo", DEMO_SELLER)
    assert wdr.bridge is not None and wdr.bridge["status"] == "pushed"
    assert wdr.cloud == {"known": False, "answer": wdr.cloud["answer"]}
    assert wdr.reason_zh and "发票云" in wdr.reason_zh
    assert report.counts() == {
        "not_submitted": 1,
        "cloud_unknown": 1,
        "state_mismatch": 3,
        "cloud_only": 3,
        "total_mismatch": 3,
    }

    # In flight: documents that changed less than the grace ago are neither queried nor found.
    fresh = run(world, grace=timedelta(minutes=30))
    assert fresh.in_flight == fresh.documents == 8
    assert {f.bill_no for f in fresh.findings} == {"R-CB"}  # the orphan callback stays


def test_a_tenant_filter_and_the_window_bound_what_is_compared(fast_world: World) -> None:
    world = fast_world
    document_id = store_bill(world.sessions, "demo", bill("W-1", auto=False))
    push(world, [document_id])
    world.sim.withdraw_behind("W-1")
    assert {f.bill_no for f in run(world, tenant="demo").findings} == {"W-1"}
    assert run(world, tenant="shop").findings == []
    yesterday = today().since - timedelta(days=1)
    other = reconcile(
        world.sessions,
        world.rt.tenants,
        cloud_ask(world.rt),
        Window(yesterday, yesterday),
        grace=timedelta(0),
    )
    assert other.documents == 0 and other.findings == []


# ------------------------------------------------------------------ dialects


@pytest.mark.parametrize(
    ("reading", "declared", "found"),
    [
        ("error", False, True),  # -10011: absent under every reading
        ("empty_data", False, True),  # data: []: absent under every reading
        ("empty_list", True, False),  # an empty invoiceList: cannot tell, says nothing
        ("empty_list", False, False),
        ("error", True, True),
    ],
)
def test_the_unknown_bill_reading_never_makes_a_false_finding(
    new_world: WorldFactory, sim: SimulatorHandle, reading: str, declared: bool, found: bool
) -> None:
    """A bill withdrawn behind the bridge's back, and one pushed and not yet issued, under each
    reading of how the cloud answers a bill it lacks (docs/DIALECTS.md ``unknown_bill``)."""
    sim.set_dialect(unknown_bill=reading, failed_in_query="omitted")
    specs = [{**spec, "rate_limit_per_second": 2000.0} for spec in sim.specs]
    world = new_world(specs=specs, cloud={"unknown_bill": reading} if declared else None)
    ids = [store_bill(world.sessions, "demo", bill(n, auto=False)) for n in ("D-WDR", "D-OK")]
    push(world, ids)
    sim.withdraw_behind("D-WDR")
    report = run(world)
    assert report.unanswered == []
    assert [(f.bill_no, f.kind.value) for f in report.findings] == (
        [("D-WDR", "cloud_unknown")] if found else []
    )


# ------------------------------------------------------------------ 1,000 documents, clean


def test_a_clean_run_of_a_thousand_documents_reports_nothing(fast_world: World) -> None:
    world = fast_world
    ids: list[int] = []
    rows = ["billNo,totalAmount,includeTaxAmount"]
    for n in range(1000):
        bill_no = f"K-{n:04d}"
        ids.append(store_bill(world.sessions, "demo", bill(bill_no, auto=n % 20 == 0)))
        rows.append(f"{bill_no},100.00,113.00")
    push(world, ids)
    for n in range(0, 1000, 20):  # every 20th issued in the cloud and polled to invoiced
        issued_in_cloud(world, f"K-{n:04d}")
        poll_until_invoiced(world, ids[n])
    report = run(world, parse_erp_list("\n".join(rows)))
    assert (report.documents, report.in_flight, report.erp_bills) == (1000, 0, 1000)
    assert report.queried == 1000
    assert report.unanswered == [] and report.findings == []


# ------------------------------------------------------------------ CLI and HTTP


@pytest.fixture
def components(fast_world: World) -> Components:
    settings = fast_world.rt.settings.model_copy(update={"api_keys": [SecretStr(API_KEY)]})
    return build_test_components(
        settings,
        fast_world.sessions,
        tenants=fast_world.rt.tenants,
        redis=fast_world.rt.redis,
    )


def planted(world: World) -> None:
    """One withdrawn behind the bridge's back; the ERP will list one never submitted."""
    document_id = store_bill(world.sessions, "demo", bill("C-WDR", auto=False))
    push(world, [document_id])
    world.sim.withdraw_behind("C-WDR")


def test_cli_json_and_csv(fast_world: World, components: Components, tmp_path: Any) -> None:
    planted(fast_world)
    erp = tmp_path / "erp.csv"
    erp.write_text("billNo,includeTaxAmount\nC-NEVER,113.00\n", encoding="utf-8")
    day = today().since.isoformat()
    args = ("reconcile", "--since", day, "--until", day, "--erp", str(erp), "--grace-minutes", "0")
    result = run_cli(components, *args, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["counts"]["cloud_unknown"] == 1 and report["counts"]["not_submitted"] == 1
    assert report["total"] == 2 and report["trigger"] == "cli"
    assert report["window"]["timezone"] == "Asia/Shanghai"

    result = run_cli(components, *args, "--csv")
    assert result.exit_code == 1, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["kind"], r["billNo"], r["bridge_status"], r["cloud_known"]) for r in rows] == [
        ("not_submitted", "C-NEVER", "", "no"),
        ("cloud_unknown", "C-WDR", "pushed", "no"),
    ]
    assert rows[0]["erp_includeTaxAmount"] == "113.00" and rows[0]["reason_zh"]

    with components.sessions() as session:
        stored = session.scalars(select(ReconciliationReport)).all()
    assert [(r.trigger, r.total) for r in stored] == [("cli", 2), ("cli", 2)]

    # Table output, exit 0 on a clean window (yesterday had nothing).
    yesterday = (today().since - timedelta(days=1)).isoformat()
    clean = run_cli(components, "reconcile", "--since", yesterday)
    assert clean.exit_code == 0, clean.output
    assert "0 finding(s)" in clean.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--since", "2026-13-01"), "since: '2026-13-01' is not a date"),
        (("--since", "2026-12-06", "--until", "2026-12-01"), "before since"),
        (("--since", "2026-12-06", "--tenant", "ghost"), "unknown tenant 'ghost'"),
    ],
)
def test_cli_bad_input_exits_2(components: Components, args: tuple[str, ...], needle: str) -> None:
    result = run_cli(components, "reconcile", *args)
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_cli_a_bad_erp_file_names_line_column_and_rule(
    components: Components, tmp_path: Any
) -> None:
    erp = tmp_path / "erp.csv"
    erp.write_text("billNo,totalAmount\nOK-1,1.00\nBAD-1,1.005\n,2.00\n", encoding="utf-8")
    result = run_cli(components, "reconcile", "--since", "2026-12-06", "--erp", str(erp))
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert "line 3, column totalAmount: '1.005': at most 2 decimals" in flat
    assert "line 4, column billNo: required" in flat


@pytest.fixture
def client(components: Components) -> Any:
    with TestClient(create_app(components.settings, components=components)) as test_client:
        yield test_client


def test_http_get_post_and_stored_reports(fast_world: World, client: TestClient) -> None:
    planted(fast_world)
    day = today().since.isoformat()
    headers = auth_headers()
    answer = client.get(
        "/v1/reconciliation", params={"since": day, "grace_minutes": 0}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    first = answer.json()
    assert first["counts"]["cloud_unknown"] == 1 and first["trigger"] == "api"
    assert first["findings"][0]["billNo"] == "C-WDR"

    answer = client.post(
        "/v1/reconciliation",
        json={
            "since": day,
            "grace_minutes": 0,
            "bills": [{"billNo": "H-NEVER", "totalAmount": "10.00"}],
        },
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["counts"]["not_submitted"] == 1

    listed = client.get("/v1/reconciliation/reports", headers=headers).json()["reports"]
    assert [r["id"] for r in listed] == [answer.json()["id"], first["id"]]
    assert "findings" not in listed[0]
    one = client.get(f"/v1/reconciliation/reports/{first['id']}", headers=headers)
    assert one.status_code == 200 and one.json()["findings"] == first["findings"]
    assert client.get("/v1/reconciliation/reports/99999", headers=headers).status_code == 404


@pytest.mark.parametrize(
    ("call", "code", "field"),
    [
        (lambda c, h: c.get("/v1/reconciliation", params={"since": "12/06/2026"}, headers=h),
         "bad_request", "since"),
        (lambda c, h: c.get("/v1/reconciliation", headers=h), "bad_request", "since"),
        (lambda c, h: c.get("/v1/reconciliation", params={"since": "2026-12-06",
                                                          "tenant": "ghost"}, headers=h),
         "bad_request", "tenant"),
        (lambda c, h: c.post("/v1/reconciliation", json={"since": "2026-12-06",
                                                         "csv": "billNo,total\nX,1\n"}, headers=h),
         "bad_erp_list", None),
    ],
)  # fmt: skip
def test_http_bad_dates_tenants_and_lists_answer_400(
    client: TestClient,
    call: Callable[[TestClient, dict[str, str]], Any],
    code: str,
    field: str | None,
) -> None:
    answer = call(client, auth_headers())
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"]["code"] == code and body["error"]["message_zh"]
    if field is not None:
        assert body["field"] == field
    else:
        assert body["problems"][0]["line"] == 1 and body["problems"][0]["column"] == "header"


# ------------------------------------------------------------------ nightly job and metrics


def test_the_nightly_job_stores_a_report_per_tenant_and_exports_its_counts(
    fast_world: World, client: TestClient
) -> None:
    planted(fast_world)
    travel(fast_world, 24 * 3600)  # tomorrow: yesterday is today's window
    status = fast_world.run(queues.RECONCILE_DAILY)
    assert "demo=1" in status and "shop=0" in status, status
    with fast_world.sessions() as session:
        stored = session.scalars(select(ReconciliationReport)).all()
    assert sorted((r.tenant, r.trigger, r.actor, r.total) for r in stored) == sorted(
        (name, "beat", "beat", 1 if name == "demo" else 0) for name in fast_world.rt.tenants.names
    )
    assert {(r.since, r.until) for r in stored} == {(today().since, today().since)}
    samples = scrape(client)
    assert samples['fapiao_reconciliation_findings{kind="cloud_unknown",tenant="demo"}'] == 1
    assert samples['fapiao_reconciliation_findings{kind="cloud_only",tenant="demo"}'] == 0
    assert samples['fapiao_reconciliation_findings{kind="cloud_unknown",tenant="shop"}'] == 0
    assert samples['fapiao_reconciliation_last_run_timestamp_seconds{tenant="demo"}'] > 0


def scrape(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        key: float(value)
        for key, value in (
            line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#"
        )
    }


# ------------------------------------------------------------------ merged invoices


def test_a_merged_invoice_is_no_finding(
    callbacks: Any, new_world: WorldFactory, tmp_path: Any
) -> None:
    """One invoice for several bills (dialect ``merge = when_asked``): each bill's query lists
    it whole, and the bridge links it to each document whole: the totals agree."""
    from simulator.testing import running_simulator

    with running_simulator(
        issue_delay=0.2, callback_url=callbacks.url, seed=11, dialect={"merge": "when_asked"}
    ) as merging:
        specs = [{**spec, "rate_limit_per_second": 2000.0} for spec in merging.specs]
        world = new_world(simulator=merging, specs=specs)
        bills = [
            make_bill(n, DEMO_SELLER, amount=a, auto_invoice=True, autoMerge="1")
            for n, a in (("M-1", "100.00"), ("M-2", "50.00"))
        ]
        ids = [store_bill(world.sessions, "demo", b) for b in bills]
        push(world, ids)
        for bill_no, document_id in zip(("M-1", "M-2"), ids, strict=True):
            issued_in_cloud(world, bill_no)
            poll_until_invoiced(world, document_id)
        assert len({inv.invoice_num for i in ids for inv in world.invoices(i)}) == 1  # merged
        erp = parse_erp_list("billNo,includeTaxAmount\nM-1,113.00\nM-2,56.50\n")
        report = run(world, erp)
        assert report.findings == [] and report.unanswered == []
        assert report.documents == 2
