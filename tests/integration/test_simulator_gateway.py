"""The simulated gateway over real HTTP: envelope checks, BILL.PUSH validation and error table,
duplicates, BILL.WITHDRAW messages, BILL.INVOICE.QUERY (docs/CLOUD-CONTRACT.md §2.3, §6–§8)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas.cloud_contract import (
    PUSH_SUCCESS_MESSAGE,
    QUERY_UNKNOWN_BILL_ERROR_CODE,
    WITHDRAW_ALREADY_ISSUED,
    WITHDRAW_ALREADY_WITHDRAWN,
    WITHDRAW_BILL_UNKNOWN,
    WITHDRAW_ISSUING,
    WITHDRAW_OK_MESSAGE,
    OutcomeClass,
    is_unknown_bill,
)
from schemas.kingdee import GatewayResponse, query_results, withdraw_results
from schemas.money import loads_exact
from simulator.testing import (
    CloudSession,
    SimulatorHandle,
    make_bill,
    running_simulator,
    sim_tenant_specs,
)

SELLER = "91310000SIM0000001"
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "erp"


def _specs() -> list[dict[str, Any]]:
    specs = sim_tenant_specs()
    sample_sellers = {
        loads_exact(path.read_bytes())["sellerTaxpayerId"] for path in SAMPLES.glob("*.json")
    }
    specs[0]["seller_tax_ids"] = sorted({SELLER, *sample_sellers})
    return specs


@pytest.fixture(scope="module")
def module_sim() -> Iterator[SimulatorHandle]:
    with running_simulator(_specs(), issue_delay=60.0) as sim:
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


def _failure(body: dict[str, Any], code: str, message: str) -> None:
    assert body == {"success": False, "errorCode": code, "message": message, "data": None}


# ---------------------------------------------------------------------- envelope


def _envelope(demo: CloudSession, **changes: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "requestId": "1732400000000123",
        "businessSystemCode": demo.spec["business_system_code"],
        "interfaceCode": "BILL.INVOICE.QUERY",
        "data": base64.b64encode(b'{"sellerTaxpayerId":"X","serialNo":"Y"}').decode(),
    }
    envelope.update(changes)
    return {k: v for k, v in envelope.items() if v is not None}


@pytest.mark.parametrize("field", ["requestId", "businessSystemCode", "interfaceCode", "data"])
def test_missing_envelope_field_is_minus_10004(demo: CloudSession, field: str) -> None:
    body = demo.gateway("", None, envelope=_envelope(demo, **{field: None})).json()
    _failure(body, "-10004", f"{field}不能为空")


def test_unknown_business_system_code_is_minus_10001(demo: CloudSession) -> None:
    body = demo.gateway("", None, envelope=_envelope(demo, businessSystemCode="NOPE")).json()
    _failure(body, "-10001", "未知业务系统编码NOPE")
    assert GatewayResponse.model_validate(body).outcome is OutcomeClass.CONFIG_ERROR


def test_code_of_another_tenant_is_unknown_here(sim: SimulatorHandle, demo: CloudSession) -> None:
    other = sim.spec("shop")["business_system_code"]
    body = demo.gateway("", None, envelope=_envelope(demo, businessSystemCode=other)).json()
    assert body["errorCode"] == "-10001"


def test_unknown_interface_code_is_minus_10010(demo: CloudSession) -> None:
    body = demo.gateway("", None, envelope=_envelope(demo, interfaceCode="BILL.DELETE")).json()
    _failure(body, "-10010", "接口编码不存在")


@pytest.mark.parametrize(
    "data",
    [
        "%%%not-base64%%%",
        base64.b64encode(b"not json at all").decode(),
        [{"sellerTaxpayerId": SELLER, "serialNo": "Y"}],  # raw JSON value
        '{"sellerTaxpayerId": "X", "serialNo": "Y"}',  # raw JSON text
    ],
)
def test_data_that_is_not_base64_json_is_minus_10003(demo: CloudSession, data: Any) -> None:
    body = demo.gateway("", None, envelope=_envelope(demo, data=data)).json()
    _failure(body, "-10003", "data解密失败")


def test_lenient_mode_accepts_raw_json_data() -> None:
    with running_simulator(lenient_data=True) as sim, CloudSession(sim, "demo") as demo:
        bill = make_bill("LENIENT-1", SELLER, auto_invoice=False)
        body = demo.gateway("BILL.PUSH", [bill], encode=False).json()
    assert body["success"] is True
    assert body["message"] == PUSH_SUCCESS_MESSAGE


def test_non_json_body_is_http_400(demo: CloudSession) -> None:
    response = demo.client.post(
        demo.base + "/kapi/app/sim/openApi",
        params={"access_token": demo.access_token or ""},
        content=b"this is not json",
    )
    assert response.status_code == 400


def _issued_blue(sim: SimulatorHandle, demo: CloudSession, red: dict[str, Any]) -> str:
    """The number of a freshly issued blue invoice the red bill ``red`` may reverse."""
    blue_no = "BLUE-FOR-" + str(red["billNo"])
    blue = make_bill(
        blue_no,
        str(red["sellerTaxpayerId"]),
        invoice_type=str(red["invoiceType"]),
        amount=str(-2 * Decimal(str(red["totalAmount"]))),
        auto_invoice=False,
    )
    assert demo.push(blue)["success"] is True
    sim.admin.post(f"/_sim/bills/{blue_no}/issue").raise_for_status()
    [invoice] = sim.bill(blue_no)["invoiceList"]
    return str(invoice["invoiceNum"])


def test_gateway_wants_post(demo: CloudSession) -> None:
    assert demo.client.get(demo.base + "/kapi/app/sim/openApi").status_code == 405


# ---------------------------------------------------------------------- BILL.PUSH


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.json")))
def test_every_erp_sample_is_accepted(
    sim: SimulatorHandle, demo: CloudSession, sample: str
) -> None:
    bill = loads_exact((SAMPLES / sample).read_bytes())
    if bill.get("invoiceProperty") == "1":
        # A red sample reverses a real-world invoice: point it at one this cloud issued.
        bill["originalInvoiceNumber"] = _issued_blue(sim, demo, bill)
    body = demo.push(bill)
    assert body["success"] is True
    assert body["errorCode"] == "0"
    assert body["message"] == PUSH_SUCCESS_MESSAGE
    assert body["data"] == [{"billNo": bill["billNo"], "success": True, "message": "推送成功"}]
    stored = sim.bill(bill["billNo"])
    assert stored["live"] is True
    assert Decimal(str(stored["amountWithTax"])) != 0


def _refused(demo: CloudSession, bill: dict[str, Any]) -> dict[str, Any]:
    body = demo.push(bill)
    assert body["success"] is False
    return body


def test_total_mismatch_is_minus_10007(sim: SimulatorHandle, demo: CloudSession) -> None:
    bill = make_bill("BAD-TOTAL", SELLER, totalAmount=Decimal("100.01"))
    body = _refused(demo, bill)
    _failure(body, "-10007", "价税合计金额不对")
    assert GatewayResponse.model_validate(body).outcome is OutcomeClass.REJECTED
    assert sim.bills(billNo="BAD-TOTAL") == []


def test_missing_bill_no_is_minus_10004(demo: CloudSession) -> None:
    bill = make_bill("X", SELLER)
    del bill["billNo"]
    _failure(_refused(demo, bill), "-10004", "billNo不能为空")


def test_invalid_invoice_type_is_minus_10006(demo: CloudSession) -> None:
    body = _refused(demo, make_bill("BAD-TYPE", SELLER, invoice_type="999"))
    _failure(body, "-10006", "发票种类不合法")


def test_invalid_tax_rate_is_minus_10006_naming_the_line(demo: CloudSession) -> None:
    bill = make_bill("BAD-RATE", SELLER, lines=2)
    bill["billDetail"][1]["taxRate"] = "0.07"
    del bill["billDetail"][1]["taxAmount"]
    _failure(_refused(demo, bill), "-10006", "第2行税率不合法")


def test_line_tax_beyond_tolerance_is_minus_10008(demo: CloudSession) -> None:
    bill = make_bill("BAD-TAX", SELLER, lines=3)
    bill["billDetail"][2]["taxAmount"] = Decimal("13.10")  # 100.00 × 0.13 = 13.00
    _failure(_refused(demo, bill), "-10008", "第3行税额误差超过±0.06")


def test_seller_not_configured_is_minus_10005(demo: CloudSession) -> None:
    body = _refused(demo, make_bill("NO-SELLER", "91310000SIM0009999"))
    _failure(body, "-10005", "销方税号91310000SIM0009999未在发票云维护")
    assert GatewayResponse.model_validate(body).outcome is OutcomeClass.CONFIG_ERROR


def test_seller_of_another_tenant_is_not_configured_here(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    other_seller = sim.spec("shop")["seller_tax_ids"][0]
    assert _refused(demo, make_bill("OTHER", other_seller))["errorCode"] == "-10005"


def test_duplicate_bill_no_is_refused_while_live(sim: SimulatorHandle, demo: CloudSession) -> None:
    bill = make_bill("DUP-1", SELLER, auto_invoice=False)
    assert demo.push(bill)["success"] is True
    body = demo.push(bill)
    _failure(body, "-10009", "单据编号DUP-1已存在")
    assert GatewayResponse.model_validate(body).outcome is OutcomeClass.DUPLICATE
    assert len(sim.bills(billNo="DUP-1")) == 1


def test_repush_after_withdrawal_is_a_new_generation(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    bill = make_bill("REPUSH-1", SELLER, auto_invoice=False)
    assert demo.push(bill)["success"] is True
    assert demo.withdraw("REPUSH-1")["data"][0]["success"] is True
    assert demo.push(bill)["success"] is True
    rows = sim.bills(billNo="REPUSH-1")
    assert sorted((r["generation"], r["state"]) for r in rows) == [
        (1, "withdrawn"),
        (2, "accepted"),
    ]
    assert sim.stats()["doubleIssue"] == {"live_twice": [], "over_issued": []}


def test_a_batch_is_all_or_nothing(sim: SimulatorHandle, demo: CloudSession) -> None:
    good = make_bill("BATCH-OK", SELLER, auto_invoice=False)
    bad = make_bill("BATCH-BAD", SELLER, totalAmount=Decimal("1.00"))
    assert demo.push(good, bad)["errorCode"] == "-10007"
    assert sim.bills(billNo="BATCH-OK") == []
    twice = demo.push(good, good)
    assert twice["errorCode"] == "-10009"
    assert sim.bills(billNo="BATCH-OK") == []
    accepted = demo.push(good, make_bill("BATCH-2", SELLER, auto_invoice=False))
    assert [item["billNo"] for item in accepted["data"]] == ["BATCH-OK", "BATCH-2"]


def test_batch_over_fifty_bills_is_refused(demo: CloudSession) -> None:
    bills = [make_bill(f"MANY-{i}", SELLER) for i in range(51)]
    body = demo.push(*bills)
    assert body["errorCode"] == "-10006"


def test_push_data_must_be_an_array(demo: CloudSession) -> None:
    body = demo.gateway("BILL.PUSH", make_bill("OBJ", SELLER)).json()
    _failure(body, "-10003", "data解密失败")


def test_system_error_fault_stores_nothing(sim: SimulatorHandle, demo: CloudSession) -> None:
    sim.set_faults(push_system_error=1.0)
    body = demo.push(make_bill("SYS-1", SELLER))
    _failure(body, "9999", "系统异常")
    assert GatewayResponse.model_validate(body).outcome is OutcomeClass.TRANSIENT
    assert sim.bills(billNo="SYS-1") == []


# ---------------------------------------------------------------------- BILL.WITHDRAW


def test_withdraw_messages_for_every_situation(sim: SimulatorHandle, demo: CloudSession) -> None:
    demo.push(make_bill("W-OPEN", SELLER, auto_invoice=False))
    demo.push(make_bill("W-AUTO", SELLER, auto_invoice=True))  # issuing: delay is 60 s
    demo.push(make_bill("W-DONE", SELLER, auto_invoice=False))
    demo.push(make_bill("W-GONE", SELLER, auto_invoice=False))
    sim.admin.post("/_sim/bills/W-DONE/issue").raise_for_status()
    assert demo.withdraw("W-GONE")["data"][0]["success"] is True

    body = demo.withdraw("W-OPEN", "W-AUTO", "W-DONE", "W-GONE", "W-NONE", seller=SELLER)
    assert body["success"] is True
    assert body["message"] == WITHDRAW_OK_MESSAGE
    results = {r.serialNo: r for r in withdraw_results(GatewayResponse.model_validate(body))}
    assert (results["W-OPEN"].success, results["W-OPEN"].message) == (True, WITHDRAW_OK_MESSAGE)
    assert (results["W-AUTO"].success, results["W-AUTO"].message) == (False, WITHDRAW_ISSUING)
    assert results["W-DONE"].message == WITHDRAW_ALREADY_ISSUED
    assert results["W-GONE"].already_withdrawn
    assert results["W-GONE"].message == WITHDRAW_ALREADY_WITHDRAWN
    assert results["W-NONE"].message == WITHDRAW_BILL_UNKNOWN
    assert sim.bill("W-OPEN")["state"] == "withdrawn"
    assert sim.bill("W-AUTO")["state"] == "issuing"
    assert sim.bill("W-DONE")["state"] == "invoiced"


def test_withdraw_after_failed_issuance_is_allowed(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    demo.push(make_bill("W-FAILED", SELLER, auto_invoice=False))
    sim.admin.post("/_sim/bills/W-FAILED/fail", json={"message": "授信额度不足"})
    assert sim.bill("W-FAILED")["state"] == "failed"
    assert demo.withdraw("W-FAILED")["data"][0]["message"] == WITHDRAW_OK_MESSAGE


def test_withdraw_scope_by_seller(demo: CloudSession) -> None:
    demo.push(make_bill("W-SCOPE", SELLER, auto_invoice=False))
    other = demo.withdraw("W-SCOPE", seller="91330106MA2H07XK4J")
    assert other["data"][0]["message"] == WITHDRAW_BILL_UNKNOWN
    assert demo.withdraw("W-SCOPE", seller=SELLER)["data"][0]["success"] is True


def test_withdraw_needs_serial_nos(demo: CloudSession) -> None:
    body = demo.gateway("BILL.WITHDRAW", {"serialNos": []}).json()
    _failure(body, "-10004", "serialNos不能为空")


# ---------------------------------------------------------------------- BILL.INVOICE.QUERY


def test_query_of_an_unknown_bill_is_a_failure(demo: CloudSession) -> None:
    body = demo.query(SELLER, "NOT-PUSHED")
    _failure(body, QUERY_UNKNOWN_BILL_ERROR_CODE, "单据不存在")
    assert is_unknown_bill(body["errorCode"], body["message"])


def test_query_before_and_after_issuance(sim: SimulatorHandle, demo: CloudSession) -> None:
    demo.push(make_bill("Q-1", SELLER, auto_invoice=False, lines=2))
    waiting = demo.query(SELLER, "Q-1")
    assert waiting["success"] is True
    assert isinstance(waiting["data"], str)  # base64, as the doc says ("需要解密")
    assert loads_exact(base64.b64decode(waiting["data"])) == [{"billNo": "Q-1", "invoiceList": []}]
    sim.admin.post("/_sim/bills/Q-1/issue").raise_for_status()
    answer = demo.query(SELLER, "Q-1")
    [bill] = query_results(GatewayResponse.model_validate(answer))
    assert bill.billNo == "Q-1"
    [invoice] = bill.invoiceList
    assert invoice.is_issued
    assert invoice.includeTaxAmount == Decimal("226.00")
    assert invoice.totalAmount == Decimal("200.00")
    assert len(invoice.lines) == 2


def test_query_of_a_withdrawn_bill_finds_nothing(demo: CloudSession) -> None:
    demo.push(make_bill("Q-W", SELLER, auto_invoice=False))
    demo.withdraw("Q-W")
    assert demo.query(SELLER, "Q-W")["message"] == "单据不存在"


def test_query_needs_seller_and_serial_no(demo: CloudSession) -> None:
    body = demo.gateway("BILL.INVOICE.QUERY", {"sellerTaxpayerId": SELLER}).json()
    _failure(body, "-10004", "serialNo不能为空")


def test_plain_query_data_mode() -> None:
    with running_simulator(plain_query_data=True) as sim, CloudSession(sim, "demo") as demo:
        demo.push(make_bill("PLAIN-1", SELLER, auto_invoice=False))
        body = demo.query(SELLER, "PLAIN-1")
    assert body["data"] == [{"billNo": "PLAIN-1", "invoiceList": []}]


def test_call_statistics_count_outcomes(sim: SimulatorHandle, demo: CloudSession) -> None:
    demo.push(make_bill("S-1", SELLER, auto_invoice=False))
    demo.push(make_bill("S-1", SELLER, auto_invoice=False))
    demo.query(SELLER, "S-1")
    demo.query(SELLER, "S-2")
    demo.gateway("", None, envelope=_envelope(demo, interfaceCode="NOPE"))
    calls = sim.stats()["calls"]
    assert calls["BILL.PUSH"] == {"success": 1, "-10009": 1}
    assert calls["BILL.INVOICE.QUERY"] == {"success": 1, QUERY_UNKNOWN_BILL_ERROR_CODE: 1}
    assert calls["openApi"] == {"-10010": 1}
