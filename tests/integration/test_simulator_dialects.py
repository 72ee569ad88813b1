"""Every contract dialect over real HTTP: each switch value gives exactly its wire shape.

Switches and values: ``schemas.cloud_contract.DIALECT_SWITCHES``; documented in
docs/DIALECTS.md. Also the AES 加密策略 of a tenant (kingdee-api.md §2.3).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from schemas.cloud_contract import DIALECT_SWITCHES, Dialect
from schemas.data_codec import AesGcmCodec
from schemas.kingdee import (
    DataDecodeError,
    decode_data,
    encode_data,
    new_request_id,
    parse_callback,
)
from schemas.money import dumps_exact, loads_exact
from simulator.cli import simulator as simulator_command
from simulator.testing import (
    CallbackRecorder,
    CloudSession,
    SimulatorHandle,
    make_bill,
    recording_callback_receiver,
    running_simulator,
    sim_tenant_specs,
    write_tenants_toml,
)

SELLER = "91310000SIM0000001"  # tenant demo (3std1…: per-bill callbacks)
SHOP_SELLER = "91440300SIM0000003"  # tenant shop (AES here)
AES_KEY = "aes-" + secrets.token_hex(8)


def _specs() -> list[dict[str, Any]]:
    specs = sim_tenant_specs()
    specs[1]["data_encryption"] = "aes"
    specs[1]["aes_key"] = AES_KEY
    return specs


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackRecorder]:
    with recording_callback_receiver() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def module_sim(receiver: CallbackRecorder) -> Iterator[SimulatorHandle]:
    with running_simulator(
        _specs(), issue_delay=0.1, callback_url=receiver.url, callback_retry_schedule=(0.05,)
    ) as sim:
        yield sim


@pytest.fixture
def sim(module_sim: SimulatorHandle, receiver: CallbackRecorder) -> SimulatorHandle:
    module_sim.reset()
    receiver.clear()
    return module_sim


@pytest.fixture
def demo(sim: SimulatorHandle) -> Iterator[CloudSession]:
    with CloudSession(sim, "demo") as session:
        session.login()
        yield session


def _state(sim: SimulatorHandle, bill_no: str, *states: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        rows = sim.bills(billNo=bill_no)
        return rows[-1] if rows and rows[-1]["state"] in states else None

    found: dict[str, Any] = sim.wait_for(reached)
    return found


# ---------------------------------------------------------------------- admin route


def test_get_put_dialect_and_reset(sim: SimulatorHandle) -> None:
    assert sim.dialect() == Dialect.default().as_dict()
    assert list(sim.dialect()) == list(DIALECT_SWITCHES)
    changed = sim.set_dialect(merge="when_asked", unknown_bill="empty_data")
    assert changed == {
        **Dialect.default().as_dict(),
        "merge": "when_asked",
        "unknown_bill": "empty_data",
    }
    bad_value = sim.admin.put("/_sim/dialect", json={"merge": "sometimes"})
    assert bad_value.status_code == 400
    assert "never, when_asked" in bad_value.json()["error"]
    bad_name = sim.admin.put("/_sim/dialect", json={"mergre": "never"})
    assert bad_name.status_code == 400
    assert "'mergre'" in bad_name.json()["error"]
    assert bad_name.json()["choices"]["merge"] == ["never", "when_asked"]
    assert sim.dialect() == changed  # a refused PUT changes nothing
    sim.reset()
    assert sim.dialect() == Dialect.default().as_dict()


def test_reset_restores_the_dialect_the_process_started_with() -> None:
    with running_simulator(dialect=["request_id=optional", "success_data=base64"]) as sim:
        started = sim.dialect()
        assert (started["request_id"], started["success_data"]) == ("optional", "base64")
        sim.set_dialect(request_id="required")
        sim.reset()
        assert sim.dialect() == started


# ---------------------------------------------------------------------- unknown_bill


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("error", None),
        ("empty_list", [{"billNo": "NOPE", "invoiceList": []}]),
        ("empty_data", []),
    ],
)
def test_unknown_bill(sim: SimulatorHandle, demo: CloudSession, value: str, expected: Any) -> None:
    sim.set_dialect(unknown_bill=value)
    answer = demo.query(SELLER, "NOPE")
    if expected is None:
        assert answer == {
            "success": False,
            "errorCode": "-10011",
            "message": "单据不存在",
            "data": None,
        }
    else:
        assert (answer["success"], answer["errorCode"]) == (True, "0")
        assert decode_data(answer["data"]) == expected


# ---------------------------------------------------------------------- withdraw_refusal


def test_withdraw_refusal_per_item(sim: SimulatorHandle, demo: CloudSession) -> None:
    demo.push(make_bill("W-1", SELLER, auto_invoice=True))
    _state(sim, "W-1", "invoiced")
    answer = demo.withdraw("W-1")
    assert (answer["success"], answer["errorCode"]) == (True, "0")
    assert answer["data"] == [
        {"serialNo": "W-1", "success": False, "message": "单据已开票，不允许撤回"}
    ]


def test_withdraw_refusal_envelope(sim: SimulatorHandle, demo: CloudSession) -> None:
    sim.set_dialect(withdraw_refusal="envelope")
    demo.push(make_bill("W-2", SELLER, auto_invoice=True))
    demo.push(make_bill("W-3", SELLER, auto_invoice=False))
    _state(sim, "W-2", "invoiced")
    refused = demo.withdraw("W-2")
    assert refused == {
        "success": False,
        "errorCode": "-10012",
        "message": "单据已开票，不允许撤回",
        "data": None,
    }
    unknown = demo.withdraw("W-404")
    assert (unknown["success"], unknown["errorCode"], unknown["message"]) == (
        False,
        "-10011",
        "单据不存在",
    )
    # One bill withdrawn, one refused: still answered per item.
    mixed = demo.withdraw("W-2", "W-3")
    assert mixed["success"] is True
    assert [(r["serialNo"], r["success"]) for r in mixed["data"]] == [
        ("W-2", False),
        ("W-3", True),
    ]


# ---------------------------------------------------------------------- expired_token


@pytest.mark.parametrize(
    ("value", "status", "code", "message"),
    [
        ("invented_401", 200, "401", "access_token已过期或无效，请重新获取"),
        ("unauthorized_text", 200, "-10002", "未进行接口授权"),
        ("http_401", 401, "401", "access_token已过期或无效，请重新获取"),
    ],
)
def test_expired_token(
    sim: SimulatorHandle, demo: CloudSession, value: str, status: int, code: str, message: str
) -> None:
    sim.set_dialect(expired_token=value)
    demo.login()
    sim.expire_tokens()
    response = demo.gateway("BILL.PUSH", [make_bill("T-1", SELLER)])
    assert response.status_code == status
    body = loads_exact(response.content)
    assert body == {"success": False, "errorCode": code, "message": message, "data": None}
    assert sim.bills() == []


# ---------------------------------------------------------------------- success_data


def test_success_data_plain_and_base64(sim: SimulatorHandle, demo: CloudSession) -> None:
    pushed = demo.push(make_bill("S-1", SELLER, auto_invoice=False))
    item = {"billNo": "S-1", "success": True, "message": "推送成功"}
    assert pushed["data"] == [item]
    withdrawn = demo.withdraw("S-1")
    assert withdrawn["data"] == [{"serialNo": "S-1", "success": True, "message": "撤回成功"}]
    sim.set_dialect(success_data="base64")
    pushed = demo.push(make_bill("S-2", SELLER, auto_invoice=False))
    assert isinstance(pushed["data"], str)
    assert decode_data(pushed["data"]) == [{**item, "billNo": "S-2"}]
    withdrawn = demo.withdraw("S-2")
    assert isinstance(withdrawn["data"], str)
    assert decode_data(withdrawn["data"]) == [
        {"serialNo": "S-2", "success": True, "message": "撤回成功"}
    ]


# ---------------------------------------------------------------------- status_field


def test_status_field(sim: SimulatorHandle, demo: CloudSession) -> None:
    ok = demo.push(make_bill("ST-1", SELLER, auto_invoice=False))
    refused = demo.push(make_bill("ST-1", SELLER, auto_invoice=False))
    assert "status" not in ok and "status" not in refused
    sim.set_dialect(status_field="present")
    ok = demo.push(make_bill("ST-2", SELLER, auto_invoice=False))
    refused = demo.push(make_bill("ST-2", SELLER, auto_invoice=False))
    query = demo.query(SELLER, "ST-2")
    assert (ok["success"], ok["status"]) == (True, True)
    assert (refused["success"], refused["status"], refused["errorCode"]) == (False, False, "-10009")
    assert query["status"] is True
    denied = loads_exact(demo.gateway("BILL.PUSH", [], token="bogus").content)
    assert (denied["success"], denied["status"]) == (False, False)


# ---------------------------------------------------------------------- query_lines


@pytest.mark.parametrize(
    ("value", "key", "absent"),
    [("goods", "goods", "invoiceDetail"), ("invoiceDetail", "invoiceDetail", "goods")],
)
def test_query_lines(
    sim: SimulatorHandle, demo: CloudSession, value: str, key: str, absent: str
) -> None:
    sim.set_dialect(query_lines=value)
    demo.push(make_bill("Q-1", SELLER, auto_invoice=True, lines=2))
    _state(sim, "Q-1", "invoiced")
    [bill] = decode_data(demo.query(SELLER, "Q-1")["data"])
    [invoice] = bill["invoiceList"]
    assert absent not in invoice
    assert [line["detailId"] for line in invoice[key]] == ["Q-1-1", "Q-1-2"]


# ---------------------------------------------------------------------- duplicate_bill


def test_duplicate_bill_refused(sim: SimulatorHandle, demo: CloudSession) -> None:
    demo.push(make_bill("D-1", SELLER, auto_invoice=False))
    again = demo.push(make_bill("D-1", SELLER, auto_invoice=False))
    assert (again["success"], again["errorCode"], again["message"]) == (
        False,
        "-10009",
        "单据编号D-1已存在",
    )
    assert len(sim.bills(billNo="D-1")) == 1


def test_duplicate_bill_accepted_is_seen_by_the_double_issue_detector(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    sim.set_dialect(duplicate_bill="accepted")
    demo.push(make_bill("D-2", SELLER, auto_invoice=True))
    assert demo.push(make_bill("D-2", SELLER, auto_invoice=True))["success"] is True
    sim.wait_for(lambda: all(r["state"] == "invoiced" for r in sim.bills(billNo="D-2")))
    detected = sim.stats()["doubleIssue"]
    assert [(r["billNo"], r["generations"]) for r in detected["live_twice"]] == [("D-2", [1, 2])]
    [over] = detected["over_issued"]
    assert (over["billAmount"], over["issuedAmount"]) == ("113.00", "226.00")


# ---------------------------------------------------------------------- unknown_fields


def test_unknown_fields(sim: SimulatorHandle, demo: CloudSession) -> None:
    bill = make_bill("U-1", SELLER, auto_invoice=False, customerRef="X-9")
    refused = demo.push(bill)
    assert (refused["success"], refused["errorCode"], refused["message"]) == (
        False,
        "-10006",
        "customerRef不合法",
    )
    line_extra = make_bill("U-2", SELLER, auto_invoice=False)
    line_extra["billDetail"][0]["colour"] = "red"
    assert demo.push(line_extra)["message"] == "第1行colour不合法"
    sim.set_dialect(unknown_fields="ignored")
    assert demo.push(bill)["success"] is True
    assert demo.push(line_extra)["success"] is True


# ---------------------------------------------------------------------- request_id


def test_request_id(sim: SimulatorHandle, demo: CloudSession) -> None:
    envelope = {
        "businessSystemCode": demo.spec["business_system_code"],
        "interfaceCode": "BILL.PUSH",
        "data": encode_data([make_bill("R-1", SELLER, auto_invoice=False)]),
    }
    refused = loads_exact(demo.gateway("BILL.PUSH", None, envelope=envelope).content)
    assert (refused["errorCode"], refused["message"]) == ("-10004", "requestId不能为空")
    sim.set_dialect(request_id="optional")
    accepted = loads_exact(demo.gateway("BILL.PUSH", None, envelope=envelope).content)
    assert accepted["success"] is True
    with_id = {**envelope, "requestId": new_request_id()}
    with_id["data"] = encode_data([make_bill("R-2", SELLER, auto_invoice=False)])
    assert loads_exact(demo.gateway("BILL.PUSH", None, envelope=with_id).content)["success"]


# ---------------------------------------------------------------------- merge


def _merge_bills() -> list[dict[str, Any]]:
    return [
        make_bill("M-1", SELLER, auto_invoice=True, autoMerge="1", amount="100.00"),
        make_bill("M-2", SELLER, auto_invoice=True, autoMerge="1", amount="33.33", lines=2),
        make_bill("M-3", SELLER, auto_invoice=True, autoMerge="0", amount="50.00"),
        make_bill(
            "M-4",
            SELLER,
            auto_invoice=True,
            autoMerge="1",
            buyerName="另一家公司",
            buyer_tax_id="91310000MA1FL0BEN0",
        ),
    ]


def _invoice_list(demo: CloudSession, bill_no: str) -> list[dict[str, Any]]:
    [bill] = decode_data(demo.query(SELLER, bill_no)["data"])
    result: list[dict[str, Any]] = bill["invoiceList"]
    return result


def test_merge_never_issues_one_invoice_per_bill(sim: SimulatorHandle, demo: CloudSession) -> None:
    assert demo.push(*_merge_bills())["success"] is True
    for bill_no in ("M-1", "M-2", "M-3", "M-4"):
        _state(sim, bill_no, "invoiced")
    numbers = {
        bill_no: [i["invoiceNum"] for i in _invoice_list(demo, bill_no)]
        for bill_no in ("M-1", "M-2")
    }
    assert len(numbers["M-1"]) == len(numbers["M-2"]) == 1
    assert numbers["M-1"] != numbers["M-2"]


def test_merge_when_asked_issues_one_invoice_covering_the_bills_exactly(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder
) -> None:
    sim.set_dialect(merge="when_asked")
    assert demo.push(*_merge_bills())["success"] is True
    for bill_no in ("M-1", "M-2", "M-3", "M-4"):
        _state(sim, bill_no, "invoiced")
    [one] = _invoice_list(demo, "M-1")
    [two] = _invoice_list(demo, "M-2")
    [alone] = _invoice_list(demo, "M-3")
    [other_buyer] = _invoice_list(demo, "M-4")
    assert one["invoiceNum"] == two["invoiceNum"] and one["orderNo"] == two["orderNo"]
    assert alone["invoiceNum"] != one["invoiceNum"] != other_buyer["invoiceNum"]
    # 100.00 + 2 × 33.33 excl. at 13%: every line and the totals are carried over exactly.
    assert [line["detailId"] for line in one["goods"]] == ["M-1-1", "M-2-1", "M-2-2"]
    assert [line["seq"] for line in one["goods"]] == [1, 2, 3]
    assert one["totalAmount"] == Decimal("166.66")
    assert one["totalTaxAmount"] == Decimal("13.00") + 2 * Decimal("4.33")
    assert one["includeTaxAmount"] == one["totalAmount"] + one["totalTaxAmount"]
    amounts = {row["billNo"]: Decimal(str(row["amountWithTax"])) for row in sim.bills()}
    assert one["includeTaxAmount"] == amounts["M-1"] + amounts["M-2"]
    assert sim.stats()["doubleIssue"] == {"live_twice": [], "over_issued": []}
    assert {row["billNo"]: Decimal(str(row["issuedAmount"])) for row in sim.bills()} == amounts
    # Each merged bill gets its own callback carrying the shared invoice.
    sim.wait_for(lambda: sim.stats()["callbacksInFlight"] == 0 and len(receiver.received) >= 4)
    called = {
        item.billNo: item.invoiceNum
        for received in receiver.received
        for item in parse_callback(received.body).items
    }
    assert called["M-1"] == called["M-2"] == one["invoiceNum"]


def test_merge_when_asked_still_detects_a_double_issue(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    sim.set_dialect(merge="when_asked", duplicate_bill="accepted")
    bill = make_bill("MD-1", SELLER, auto_invoice=True, autoMerge="1")
    assert demo.push(bill, bill)["success"] is True
    sim.wait_for(lambda: all(r["state"] == "invoiced" for r in sim.bills(billNo="MD-1")))
    [invoice] = _invoice_list(demo, "MD-1")[:1]
    assert invoice["includeTaxAmount"] == Decimal("226.00")  # both generations, one invoice
    detected = sim.stats()["doubleIssue"]
    assert [r["billNo"] for r in detected["live_twice"]] == ["MD-1"]
    assert [(r["billAmount"], r["issuedAmount"]) for r in detected["over_issued"]][-1] == (
        "113.00",
        "226.00",
    )


# ---------------------------------------------------------------------- callback_data


@pytest.mark.parametrize("value", ["base64", "plain"])
def test_callback_data(
    sim: SimulatorHandle, demo: CloudSession, receiver: CallbackRecorder, value: str
) -> None:
    sim.set_dialect(callback_data=value)
    demo.push(make_bill("C-1", SELLER, auto_invoice=True))
    [received] = receiver.wait_for(1)
    data = received.json()["data"]
    if value == "base64":
        assert isinstance(data, str)
        data = decode_data(data)
    assert isinstance(data, list)  # 3std1…: per-bill callback, an array
    assert [item["billNo"] for item in data] == ["C-1"]
    assert [i.billNo for i in parse_callback(received.body).items] == ["C-1"]


# ---------------------------------------------------------------------- failed_in_query


@pytest.mark.parametrize(("value", "listed"), [("listed", 1), ("omitted", 0)])
def test_failed_in_query(sim: SimulatorHandle, demo: CloudSession, value: str, listed: int) -> None:
    sim.set_dialect(failed_in_query=value)
    demo.push(make_bill("F-1", SELLER, auto_invoice=False))
    sim.admin.post("/_sim/bills/F-1/fail", json={"message": "授信额度不足"}).raise_for_status()
    items = _invoice_list(demo, "F-1")
    assert len(items) == listed
    if listed:
        assert (items[0]["invoiceNum"], items[0]["issueErrorMessage"]) == ("", "授信额度不足")


# ---------------------------------------------------------------------- AES tenants


def test_aes_tenant_round_trip(sim: SimulatorHandle, receiver: CallbackRecorder) -> None:
    codec = AesGcmCodec(AES_KEY)
    with CloudSession(sim, "shop") as shop:
        assert shop.codec.name == "AES"
        pushed = shop.push(make_bill("A-1", SHOP_SELLER, auto_invoice=True))
        assert pushed["success"] is True
        _state(sim, "A-1", "invoiced")
        answer = shop.query(SHOP_SELLER, "A-1")
        [bill] = decode_data(answer["data"], codec)
        assert bill["billNo"] == "A-1" and len(bill["invoiceList"]) == 1
        with pytest.raises(DataDecodeError):
            decode_data(answer["data"])  # not base64 JSON: it is AES
        plain = shop.gateway(
            "BILL.PUSH", None, envelope=_envelope(shop, make_bill("A-2", SHOP_SELLER))
        )
        assert loads_exact(plain.content)["errorCode"] == "-10003"
        assert loads_exact(plain.content)["message"] == "data解密失败"
    [received] = receiver.wait_for(1)
    assert [i.billNo for i in parse_callback(received.body, codec).items] == ["A-1"]


def _envelope(session: CloudSession, bill: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestId": new_request_id(),
        "businessSystemCode": session.spec["business_system_code"],
        "interfaceCode": "BILL.PUSH",
        "data": encode_data([bill]),  # BASE64 to an AES tenant
    }


def test_base_64_tenant_refuses_aes_data(sim: SimulatorHandle, demo: CloudSession) -> None:
    envelope = {
        "requestId": new_request_id(),
        "businessSystemCode": demo.spec["business_system_code"],
        "interfaceCode": "BILL.PUSH",
        "data": encode_data([make_bill("A-3", SELLER)], AesGcmCodec(AES_KEY)),
    }
    response = httpx.post(
        demo.base + "/kapi/app/sim/openApi",
        params={"access_token": demo.access_token or demo.login()},
        content=dumps_exact(envelope).encode("utf-8"),
        headers={"content-type": "application/json"},
    )
    assert loads_exact(response.content)["errorCode"] == "-10003"


# ---------------------------------------------------------------------- CLI


def _cli_app() -> typer.Typer:
    cli = typer.Typer()
    cli.command()(simulator_command)
    return cli


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "merge=sometimes",
            "unknown value 'sometimes' for dialect switch 'merge'; choices: never, when_asked",
        ),
        ("mergre=never", "unknown dialect switch 'mergre'; switches: unknown_bill,"),
        ("merge", "'merge' is not NAME=VALUE"),
    ],
)
def test_cli_refuses_an_unknown_dialect_naming_the_choices(
    tmp_path: Path, option: str, message: str
) -> None:
    tenants = write_tenants_toml(tmp_path / "tenants.toml", "http://127.0.0.1:9")
    result = CliRunner().invoke(
        _cli_app(), ["--tenants-file", str(tenants), "--dialect", option], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert "--dialect" in flat
    assert message in flat
