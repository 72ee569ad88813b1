"""Issuance in the simulator over real HTTP: auto/manual, splitting, numbers, files, issuance
faults, operator actions, double-issue detection (docs/CLOUD-CONTRACT.md §6.4, §9.1, §12)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from schemas.kingdee import GatewayResponse, InvoiceItem, query_results
from simulator.faults import ISSUE_ERROR_MESSAGES
from simulator.testing import (
    CloudSession,
    SimulatorHandle,
    make_bill,
    running_simulator,
    sim_tenant_specs,
)

SELLER = "91310000SIM0000001"
SHOP_SELLER = "91440300SIM0000003"


def _specs() -> list[dict[str, Any]]:
    specs = sim_tenant_specs()
    specs[1]["auto_invoice"] = False  # shop: bills wait for an operator unless they ask
    return specs


@pytest.fixture(scope="module")
def module_sim() -> Iterator[SimulatorHandle]:
    with running_simulator(_specs(), issue_delay=0.05) as sim:
        yield sim


@pytest.fixture
def sim(module_sim: SimulatorHandle) -> SimulatorHandle:
    module_sim.reset()
    return module_sim


@pytest.fixture
def demo(sim: SimulatorHandle) -> Iterator[CloudSession]:
    with CloudSession(sim, "demo") as session:
        session.login()
        yield session


def _wait_state(sim: SimulatorHandle, bill_no: str, *states: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        bill = sim.bill(bill_no)
        return bill if bill["state"] in states else None

    result: dict[str, Any] = sim.wait_for(reached)
    return result


def _invoices(demo: CloudSession, seller: str, bill_no: str) -> list[InvoiceItem]:
    [bill] = query_results(GatewayResponse.model_validate(demo.query(seller, bill_no)))
    return bill.invoiceList


def test_auto_invoice_bill_is_issued_after_the_delay(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    demo.push(make_bill("AUTO-1", SELLER, auto_invoice=True))
    bill = _wait_state(sim, "AUTO-1", "invoiced")
    assert [e["event"] for e in bill["history"]][:2] == ["pushed", "issuance_scheduled"]
    [invoice] = _invoices(demo, SELLER, "AUTO-1")
    assert invoice.is_issued
    assert invoice.includeTaxAmount == Decimal("113.00")


def test_manual_bill_waits_for_the_operator(sim: SimulatorHandle) -> None:
    with CloudSession(sim, "shop") as shop:
        shop.push(make_bill("MANUAL-1", SHOP_SELLER))  # no autoInvoice: tenant default (off)
        shop.push(make_bill("MANUAL-2", SHOP_SELLER, auto_invoice=True))
        _wait_state(sim, "MANUAL-2", "invoiced")
        assert sim.bill("MANUAL-1")["state"] == "accepted"
        assert _invoices(shop, SHOP_SELLER, "MANUAL-1") == []
        issued = sim.admin.post("/_sim/bills/MANUAL-1/issue").json()
        assert issued["state"] == "invoiced"
        assert len(_invoices(shop, SHOP_SELLER, "MANUAL-1")) == 1


def test_digital_invoice_numbers_and_files(sim: SimulatorHandle, demo: CloudSession) -> None:
    demo.push(make_bill("NUM-DIGITAL", SELLER, invoice_type="08xdp", auto_invoice=False))
    sim.admin.post("/_sim/bills/NUM-DIGITAL/issue").raise_for_status()
    [invoice] = _invoices(demo, SELLER, "NUM-DIGITAL")
    assert re.fullmatch(r"\d{20}", invoice.invoiceNum or "")
    assert invoice.invoiceCode == ""
    assert invoice.orderNo
    expected = {
        "invoiceFileUrl": ("application/ofd", b"PK"),
        "invoicePdfFileUrl": ("application/pdf", b"%PDF-"),
        "invoiceXmlFileUrl": ("application/xml", b"<?xml"),
    }
    for field, (content_type, magic) in expected.items():
        url = getattr(invoice, field)
        assert url.startswith(sim.base_url_for("demo") + "/")
        response = httpx.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type
        assert response.content.startswith(magic)
    xml = httpx.get(invoice.invoiceXmlFileUrl or "").text
    assert f"<InvoiceNumber>{invoice.invoiceNum}</InvoiceNumber>" in xml


@pytest.mark.parametrize(
    ("invoice_type", "files"),
    [("026", {"invoiceFileUrl"}), ("028", {"invoiceFileUrl"}), ("004", set())],
)
def test_tax_control_numbers_and_files(
    sim: SimulatorHandle, demo: CloudSession, invoice_type: str, files: set[str]
) -> None:
    bill_no = f"NUM-{invoice_type}"
    demo.push(make_bill(bill_no, SELLER, invoice_type=invoice_type, auto_invoice=False))
    sim.admin.post(f"/_sim/bills/{bill_no}/issue").raise_for_status()
    [invoice] = _invoices(demo, SELLER, bill_no)
    assert re.fullmatch(r"\d{12}", invoice.invoiceCode or "")
    assert re.fullmatch(r"\d{8}", invoice.invoiceNum or "")
    present = {
        name
        for name in ("invoiceFileUrl", "invoicePdfFileUrl", "invoiceXmlFileUrl")
        if getattr(invoice, name)
    }
    assert present == files


def test_unknown_file_is_404(sim: SimulatorHandle) -> None:
    url = sim.base_url_for("demo") + "/doc/free/fileInfo/preview/1234567890123456789.pdf"
    assert httpx.get(url).status_code == 404


def test_more_lines_than_an_invoice_holds_are_split(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    demo.push(make_bill("SPLIT-LINES", SELLER, invoice_type="007", lines=10, auto_invoice=False))
    sim.admin.post("/_sim/bills/SPLIT-LINES/issue").raise_for_status()
    invoices = _invoices(demo, SELLER, "SPLIT-LINES")
    assert [len(i.lines) for i in invoices] == [8, 2]
    assert sum((i.includeTaxAmount or Decimal(0) for i in invoices), Decimal(0)) == Decimal(
        "1130.00"
    )
    assert len({i.invoiceNum for i in invoices}) == 2
    assert len({i.orderNo for i in invoices}) == 2


def test_amount_limit_splits_cent_exact() -> None:
    with (
        running_simulator(invoice_amount_limit=Decimal("1000.00")) as sim,
        CloudSession(sim, "demo") as demo,
    ):
        bill = make_bill("SPLIT-AMOUNT", SELLER, amount="2500.01", auto_invoice=False)
        demo.push(bill)
        sim.admin.post("/_sim/bills/SPLIT-AMOUNT/issue").raise_for_status()
        invoices = _invoices(demo, SELLER, "SPLIT-AMOUNT")
    assert len(invoices) == 3
    assert all((i.totalAmount or Decimal(0)) <= Decimal("1000.00") for i in invoices)
    assert sum((i.totalAmount or Decimal(0) for i in invoices), Decimal(0)) == Decimal("2500.01")
    assert (
        sum((i.totalTaxAmount or Decimal(0) for i in invoices), Decimal(0))
        == (bill["billDetail"][0]["taxAmount"])
    )
    assert {line.detailId for i in invoices for line in i.lines} == {"SPLIT-AMOUNT-1"}


def test_issue_fail_fault_fails_every_invoice(sim: SimulatorHandle, demo: CloudSession) -> None:
    sim.set_faults(issue_fail=1.0)
    demo.push(make_bill("FAIL-1", SELLER, auto_invoice=True))
    bill = _wait_state(sim, "FAIL-1", "failed")
    assert bill["issued"] == 0
    [invoice] = _invoices(demo, SELLER, "FAIL-1")
    assert invoice.is_failed
    assert invoice.issueErrorMessage in ISSUE_ERROR_MESSAGES
    assert invoice.invoiceNum == ""


def test_partial_issuance_then_operator_completes(sim: SimulatorHandle, demo: CloudSession) -> None:
    sim.set_faults(issue_partial=1.0, seed=11)
    demo.push(make_bill("PART-1", SELLER, invoice_type="007", lines=20, auto_invoice=True))
    bill = _wait_state(sim, "PART-1", "partially_invoiced")
    assert bill["invoices"] == 3
    assert 1 <= bill["failed"] <= 2
    assert bill["issued"] + bill["failed"] == 3
    invoices = _invoices(demo, SELLER, "PART-1")
    assert {i.is_issued for i in invoices} == {True, False}
    sim.set_faults()
    done = sim.admin.post("/_sim/bills/PART-1/issue").json()
    assert (done["state"], done["issued"]) == ("invoiced", 3)
    assert Decimal(str(done["issuedAmount"])) == Decimal(str(done["amountWithTax"]))


def test_operator_fail_with_a_message(sim: SimulatorHandle, demo: CloudSession) -> None:
    demo.push(make_bill("OPFAIL", SELLER, auto_invoice=False))
    failed = sim.admin.post("/_sim/bills/OPFAIL/fail", json={"message": "税控设备离线"}).json()
    assert failed["state"] == "failed"
    assert failed["invoiceList"][0]["issueErrorMessage"] == "税控设备离线"
    # A failed bill can be issued later by the operator.
    assert sim.admin.post("/_sim/bills/OPFAIL/issue").json()["state"] == "invoiced"
    # ...after which failing is no longer possible.
    assert sim.admin.post("/_sim/bills/OPFAIL/fail").status_code == 409


def test_return_upstream_takes_the_bill_out_of_the_cloud(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    demo.push(make_bill("RET-1", SELLER, auto_invoice=False))
    returned = sim.admin.post("/_sim/bills/RET-1/return", json={"reason": "购方信息有误"})
    assert returned.json()["state"] == "returned"
    assert returned.json()["live"] is False
    assert demo.query(SELLER, "RET-1")["message"] == "单据不存在"
    assert demo.push(make_bill("RET-1", SELLER, auto_invoice=False))["success"] is True


def test_an_issued_bill_cannot_be_returned(sim: SimulatorHandle, demo: CloudSession) -> None:
    demo.push(make_bill("RET-2", SELLER, auto_invoice=True))
    _wait_state(sim, "RET-2", "invoiced")
    response = sim.admin.post("/_sim/bills/RET-2/return")
    assert response.status_code == 409
    assert sim.bill("RET-2")["state"] == "invoiced"


def test_double_issue_detector_reports_a_duplicate_the_cloud_accepted(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    assert sim.stats()["doubleIssue"] == {"live_twice": [], "over_issued": []}
    sim.set_faults(accept_duplicate_push=1.0)
    demo.push(make_bill("TWICE", SELLER, auto_invoice=True))
    assert demo.push(make_bill("TWICE", SELLER, auto_invoice=True))["success"] is True

    def both_issued() -> bool:
        return all(row["state"] == "invoiced" for row in sim.bills(billNo="TWICE"))

    sim.wait_for(both_issued)
    detected = sim.stats()["doubleIssue"]
    [twice] = detected["live_twice"]
    assert (twice["billNo"], twice["generations"]) == ("TWICE", [1, 2])
    [over] = detected["over_issued"]
    assert (over["billAmount"], over["issuedAmount"]) == ("113.00", "226.00")


def test_red_bill_is_issued_as_a_red_invoice(sim: SimulatorHandle, demo: CloudSession) -> None:
    demo.push(make_bill("BLUE-1", SELLER, amount="100.00", auto_invoice=False))
    sim.admin.post("/_sim/bills/BLUE-1/issue").raise_for_status()
    [blue] = _invoices(demo, SELLER, "BLUE-1")
    bill = make_bill(
        "RED-1",
        SELLER,
        amount="-100.00",
        auto_invoice=False,
        invoiceProperty="1",
        originalInvoiceNumber=blue.invoiceNum,
    )
    assert demo.push(bill)["success"] is True
    sim.admin.post("/_sim/bills/RED-1/issue").raise_for_status()
    [invoice] = _invoices(demo, SELLER, "RED-1")
    assert invoice.invoiceProperty == 1
    assert invoice.includeTaxAmount == Decimal("-113.00")
