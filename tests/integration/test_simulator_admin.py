"""The simulator's ``/_sim/`` admin routes, its ``--state-file`` restart path, and the
``fapiao simulator`` command line, over real HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from schemas.tenants import load_tenants
from simulator.cli import simulator as simulator_command
from simulator.testing import (
    CloudSession,
    SimulatorHandle,
    make_bill,
    recording_callback_receiver,
    running_simulator,
    sim_tenant_specs,
    write_tenants_toml,
)

SELLER = "91310000SIM0000001"
SHOP_SELLER = "91440300SIM0000003"


@pytest.fixture(scope="module")
def module_sim() -> Iterator[SimulatorHandle]:
    with running_simulator(issue_delay=60.0) as sim:
        yield sim


@pytest.fixture
def sim(module_sim: SimulatorHandle) -> SimulatorHandle:
    module_sim.reset()
    return module_sim


def test_healthz_and_tenants(sim: SimulatorHandle) -> None:
    assert sim.admin.get("/_sim/healthz").json() == {"status": "ok", "tenants": 2}
    tenants = {t["name"]: t for t in sim.admin.get("/_sim/tenants").json()}
    assert tenants["demo"]["path"] == "/demo"
    assert tenants["demo"]["baseUrl"] == sim.base_url_for("demo")
    assert tenants["shop"]["businessSystemCodes"] == ["SHOPERP01"]


def test_bill_list_filters_and_detail(sim: SimulatorHandle) -> None:
    with CloudSession(sim, "demo") as demo, CloudSession(sim, "shop") as shop:
        demo.push(make_bill("A-1", SELLER, auto_invoice=False))
        demo.push(make_bill("A-2", SELLER, auto_invoice=True))
        shop.push(make_bill("A-3", SHOP_SELLER, auto_invoice=False))
        demo.withdraw("A-1")
    assert {b["billNo"] for b in sim.bills(tenant="demo")} == {"A-1", "A-2"}
    assert [b["billNo"] for b in sim.bills(state="issuing")] == ["A-2"]
    assert {b["billNo"] for b in sim.bills(live="1")} == {"A-2", "A-3"}
    assert [b["billNo"] for b in sim.bills(live="0")] == ["A-1"]
    detail = sim.bill("A-1")
    assert detail["state"] == "withdrawn"
    assert [e["event"] for e in detail["history"]] == ["pushed", "withdrawn"]
    assert detail["sellerTaxpayerId"] == SELLER
    assert detail["invoiceList"] == []


def test_unknown_bill_is_404_and_ambiguous_is_409(sim: SimulatorHandle) -> None:
    assert sim.admin.get("/_sim/bills/NOPE").status_code == 404
    with CloudSession(sim, "demo") as demo, CloudSession(sim, "shop") as shop:
        demo.push(make_bill("SAME", SELLER, auto_invoice=False))
        shop.push(make_bill("SAME", SHOP_SELLER, auto_invoice=False))
    ambiguous = sim.admin.get("/_sim/bills/SAME")
    assert ambiguous.status_code == 409
    assert len(ambiguous.json()["candidates"]) == 2
    assert sim.bill("SAME", tenant="shop")["sellerTaxpayerId"] == SHOP_SELLER
    issued = sim.admin.post("/_sim/bills/SAME/issue", json={"tenant": "demo"})
    assert issued.json()["tenant"] == "demo"
    assert sim.bill("SAME", tenant="shop")["state"] == "accepted"


def test_faults_put_replaces_patch_merges(sim: SimulatorHandle) -> None:
    sim.set_faults(push_5xx_before=0.25, latency_ms=5)
    assert sim.admin.get("/_sim/faults").json()["active"] == {
        "latency_ms": 5.0,
        "push_5xx_before": 0.25,
    }
    sim.set_faults(merge=True, callback_drop=0.5)
    assert sim.admin.get("/_sim/faults").json()["active"] == {
        "latency_ms": 5.0,
        "push_5xx_before": 0.25,
        "callback_drop": 0.5,
    }
    sim.set_faults(issue_fail=1)
    assert sim.admin.get("/_sim/faults").json()["active"] == {"issue_fail": 1.0}
    assert sim.stats()["faults"] == {"issue_fail": 1.0}


@pytest.mark.parametrize(
    "body",
    [
        {"faults": {"no_such_fault": 0.1}},
        {"faults": {"push_5xx_before": 1.5}},
        {"faults": {"latency_ms": -1}},
        {"faults": {"auth_fail": True}},
        {"faults": [1, 2]},
    ],
)
def test_bad_faults_are_400_and_change_nothing(sim: SimulatorHandle, body: object) -> None:
    sim.set_faults(push_5xx_before=0.1)
    response = sim.admin.put("/_sim/faults", json=body)
    assert response.status_code == 400
    assert sim.admin.get("/_sim/faults").json()["active"] == {"push_5xx_before": 0.1}


def test_reset_forgets_bills_stats_and_overrides(sim: SimulatorHandle) -> None:
    with CloudSession(sim, "demo") as demo:
        token = demo.login()
        demo.push(make_bill("R-1", SELLER, auto_invoice=False))
        sim.set_callback_url("3std1TESTERP", "http://127.0.0.1:9/cb")
        sim.reset()
        assert sim.bills() == []
        stats = sim.stats()
        assert (stats["calls"], stats["tokens"], stats["billsByState"]) == ({}, {}, {})
        assert sim.admin.get("/_sim/callback-urls").json()["byBusinessSystemCode"] == {}
        # Tokens are forgotten too unless asked to keep them.
        refused = demo.gateway("BILL.PUSH", [make_bill("R-2", SELLER)], token=token).json()
        assert refused["errorCode"] == "401"
        demo.login()
        sim.reset(keep_tokens=True)
        assert demo.push(make_bill("R-2", SELLER))["success"] is True


def test_operator_actions_on_unknown_or_wrong_state(sim: SimulatorHandle) -> None:
    assert sim.admin.post("/_sim/bills/NOPE/issue").status_code == 404
    with CloudSession(sim, "demo") as demo:
        demo.push(make_bill("OP-1", SELLER, auto_invoice=False))
        demo.withdraw("OP-1")
    for action in ("issue", "fail", "return"):
        assert sim.admin.post(f"/_sim/bills/OP-1/{action}").status_code == 409


def test_wait_option_returns_after_the_callback_was_answered(tmp_path: Path) -> None:
    with (
        recording_callback_receiver() as receiver,
        running_simulator(callback_url=receiver.url) as sim,
        CloudSession(sim, "shop") as shop,
    ):
        shop.push(make_bill("WAIT-1", SHOP_SELLER, auto_invoice=False))
        answer = sim.admin.post("/_sim/bills/WAIT-1/issue", json={"wait": True}).json()
        assert len(answer["callbacksStarted"]) == 1
        assert len(receiver.received) == 1  # already there, no polling needed


# ---------------------------------------------------------------------- --state-file


def test_state_file_keeps_bills_invoices_and_statistics(tmp_path: Path) -> None:
    state = tmp_path / "sim.sqlite"
    specs = sim_tenant_specs()
    with (
        running_simulator(specs, state_file=state, issue_delay=0.01) as sim,
        CloudSession(sim, "demo") as demo,
    ):
        demo.push(make_bill("KEEP-1", SELLER, invoice_type="10xdp", auto_invoice=True))
        demo.push(make_bill("KEEP-2", SELLER, auto_invoice=False))
        sim.wait_for(lambda: sim.bill("KEEP-1")["state"] == "invoiced")
        before = sim.bill("KEEP-1")

    with (
        running_simulator(specs, state_file=state) as sim,
        CloudSession(sim, "demo") as demo,
    ):
        after = sim.bill("KEEP-1")
        assert after["state"] == "invoiced"
        assert [
            (i["orderNo"], i["invoiceNum"], i["includeTaxAmount"]) for i in after["invoiceList"]
        ] == [(i["orderNo"], i["invoiceNum"], i["includeTaxAmount"]) for i in before["invoiceList"]]
        assert sim.bill("KEEP-2")["state"] == "accepted"
        assert sim.stats()["calls"]["BILL.PUSH"] == {"success": 2}
        # The restarted cloud still knows its bills: duplicate refused, query answers,
        # files still served (at the new port).
        assert demo.push(make_bill("KEEP-1", SELLER))["errorCode"] == "-10009"
        [invoice] = after["invoiceList"]
        assert len(invoice["invoiceNum"]) == 20
        assert httpx.get(invoice["invoicePdfFileUrl"]).status_code == 200
        assert demo.query(SELLER, "KEEP-2")["success"] is True


def test_state_file_reschedules_pending_issuance(tmp_path: Path) -> None:
    state = tmp_path / "sim.sqlite"
    specs = sim_tenant_specs()
    with running_simulator(specs, state_file=state, issue_delay=3600) as sim:
        with CloudSession(sim, "demo") as demo:
            demo.push(make_bill("PENDING-1", SELLER, auto_invoice=True))
        assert sim.bill("PENDING-1")["state"] == "issuing"
    with running_simulator(specs, state_file=state, issue_delay=0.01) as sim:

        def issued() -> dict[str, Any] | None:
            bill: dict[str, Any] = sim.bill("PENDING-1")
            return bill if bill["state"] == "invoiced" else None

        bill = sim.wait_for(issued)
        assert "issuance_rescheduled" in [e["event"] for e in bill["history"]]


# ---------------------------------------------------------------------- command line


def test_cli_refuses_unknown_faults(tmp_path: Path) -> None:
    tenants = write_tenants_toml(tmp_path / "tenants.toml", "http://127.0.0.1:8765")
    result = CliRunner().invoke(
        _cli_app(), ["--tenants-file", str(tenants), "--faults", "warp_drive=1"]
    )
    assert result.exit_code != 0
    assert "warp_drive" in result.output


def test_cli_refuses_a_missing_tenants_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(_cli_app(), ["--tenants-file", str(tmp_path / "none.toml")])
    assert result.exit_code != 0
    assert "tenants file not found" in result.output


def test_written_tenants_file_is_what_the_bridge_reads(tmp_path: Path) -> None:
    with running_simulator() as sim:
        path = sim.write_tenants_file(tmp_path / "tenants.toml")
        tenants = load_tenants(path, "production")  # random secrets: no placeholders
        demo = tenants.by_name("demo")
        assert demo is not None
        assert demo.base == sim.base_url_for("demo")
        assert demo.callback_style == "per_bill"
        assert tenants.tenant_for_seller(SHOP_SELLER) == tenants.by_name("shop")
        # And the simulator serves exactly those credentials.
        with CloudSession(sim, "demo") as session:
            body = session.app_token_response(
                appId=demo.app_id, appSecuret=demo.app_secret.get_secret_value()
            ).json()
        assert body["state"] == "success"


def _cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(simulator_command)
    return app


def test_python_m_simulator_serves_the_tenants_file(tmp_path: Path) -> None:

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    origin = f"http://127.0.0.1:{port}"
    specs = sim_tenant_specs()
    tenants = write_tenants_toml(tmp_path / "tenants.toml", origin, specs)
    command = [
        sys.executable,
        "-m",
        "simulator",
        "--port",
        str(port),
        "--tenants-file",
        str(tenants),
        "--faults",
        "push_5xx_before=1",
        "--faults",
        "quota_warning=0.5",
        "--seed",
        "3",
        "--callback-retry-schedule",
        "0.05,0.1",
        "--state-file",
        str(tmp_path / "state.sqlite"),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(origin + "/_sim/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "simulator did not start"
            time.sleep(0.05)
        faults = httpx.get(origin + "/_sim/faults").json()["active"]
        assert faults == {"push_5xx_before": 1.0, "quota_warning": 0.5}
        demo = specs[0]
        answer = httpx.post(
            origin + "/demo/api/getAppToken.do",
            json={
                "appId": demo["app_id"],
                "appSecret": demo["app_secret"],
                "accountId": demo["account_id"],
            },
        ).json()
        assert answer["state"] == "success"
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert (tmp_path / "state.sqlite").exists()
