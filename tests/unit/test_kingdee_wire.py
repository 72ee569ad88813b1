"""The Kingdee wire: data codec, envelopes, tokens, withdraw/query results, callbacks, ACKs,
and the guessed contract (error classification, auth-failure detection)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.cloud_contract import (
    GATEWAY_ERRORS,
    TOKEN_FAILURE_BAD_APP,
    BillReturn,
    OutcomeClass,
    callback_style_for,
    classify_gateway_failure,
    classify_http_status,
    expired_token_body,
    gateway_error,
    is_auth_failure,
    is_unknown_bill,
    max_lines_per_invoice,
    token_failure_body,
)
from schemas.kingdee import (
    APP_TOKEN_PATH,
    CALLBACK_ACK,
    LOGIN_PATH,
    OPENAPI_PATH,
    AppTokenRequest,
    Base64Codec,
    BizControl,
    CallbackInterfaceCode,
    CallbackParseError,
    DataCodec,
    DataDecodeError,
    GatewayRequest,
    GatewayResponse,
    InterfaceCode,
    InvoiceItem,
    InvoiceQueryRequestData,
    LoginRequest,
    TokenResponse,
    WithdrawRequestData,
    build_callback,
    decode_data,
    decode_push_bills,
    encode_data,
    is_ack,
    new_request_id,
    parse_callback,
    push_accepted,
    push_request,
    push_results,
    query_results,
    token_success_body,
    withdraw_results,
)

WIRE = Path(__file__).resolve().parents[1] / "data" / "wire"


def raw(name: str) -> bytes:
    return (WIRE / name).read_bytes()


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(raw(name), parse_float=Decimal)
    return loaded


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


# --------------------------------------------------------------------------- paths and codes


def test_paths_and_interface_codes_are_spelled_as_the_cloud_does() -> None:
    assert APP_TOKEN_PATH == "/api/getAppToken.do"
    assert LOGIN_PATH == "/api/login.do"
    assert OPENAPI_PATH == "/kapi/app/sim/openApi"
    assert [c.value for c in InterfaceCode] == ["BILL.PUSH", "BILL.WITHDRAW", "BILL.INVOICE.QUERY"]
    assert {c.value for c in CallbackInterfaceCode} == {
        "INVOICE.OPEN",
        "INVOICE.CANCEL",
        "INVOICE.RED",
        "FILLIN",
        "BILL.RETURN",
    }


# --------------------------------------------------------------------------- data codec


def test_data_round_trip_keeps_chinese_text_and_exact_decimals() -> None:
    payload = [
        {
            "buyerName": "上海示例贸易有限公司",
            "totalAmount": Decimal("1414.16"),
            "taxAmount": Decimal("0.10"),
            "big": Decimal("12345678901234.56"),
            "lineProperty": 2,
            "flag": True,
            "empty": None,
        }
    ]
    encoded = encode_data(payload)
    text = base64.b64decode(encoded, validate=True).decode("utf-8")
    # UTF-8 text, not \u escapes; decimals written exactly as they are (0.10 keeps its zero).
    assert "上海示例贸易有限公司" in text
    assert '"taxAmount":0.10' in text
    assert '"big":12345678901234.56' in text
    decoded = decode_data(encoded)
    assert decoded == payload
    assert str(decoded[0]["taxAmount"]) == "0.10"
    assert isinstance(decoded[0]["lineProperty"], int)


@given(
    st.lists(
        st.tuples(
            st.text(max_size=20),
            st.decimals(allow_nan=False, allow_infinity=False, places=2, max_value=10**12),
        ),
        max_size=5,
    )
)
def test_data_round_trip_property(rows: list[tuple[str, Decimal]]) -> None:
    payload = [{"name": name, "amount": amount} for name, amount in rows]
    decoded = decode_data(encode_data(payload))
    assert decoded == payload
    assert [str(r["amount"]) for r in decoded] == [str(a) for _, a in rows]


def test_encode_refuses_floats_money_is_never_float() -> None:
    with pytest.raises(TypeError):
        encode_data({"amount": 0.1})


def test_decode_tolerates_an_already_decoded_object_or_array() -> None:
    assert decode_data({"billNo": "B1"}) == {"billNo": "B1"}
    # A float from a caller's plain json.loads becomes the Decimal of what was written.
    assert decode_data([{"amount": 0.3}]) == [{"amount": Decimal("0.3")}]
    assert decode_data('  {"amount": 10.50}') == {"amount": Decimal("10.50")}


def test_decode_forgives_line_breaks_and_missing_padding() -> None:
    encoded = encode_data({"billNo": "单据-1"})
    wrapped = encoded[:8] + "\r\n" + encoded[8:]
    assert decode_data(wrapped) == {"billNo": "单据-1"}
    assert decode_data(encoded.rstrip("=")) == {"billNo": "单据-1"}


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("not*base64!", "base64"),
        (b64("this is not json"), "not JSON"),
        (base64.b64encode(b"\xff\xfe\x00bad").decode(), "not UTF-8"),
        (b64("NaN"), "not JSON"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_decode_refuses_bad_values_with_a_specific_error(value: str, fragment: str) -> None:
    with pytest.raises(DataDecodeError, match=fragment):
        decode_data(value)


def test_decode_refuses_a_value_of_the_wrong_type() -> None:
    with pytest.raises(DataDecodeError, match="int"):
        decode_data(42)  # type: ignore[arg-type]


class _ReversedCodec:
    """A stand-in for the AES seam: any codec that turns JSON bytes into wire text."""

    name = "REVERSED"

    def encode(self, payload: bytes) -> str:
        return base64.b64encode(payload[::-1]).decode()

    def decode(self, value: str) -> bytes:
        return base64.b64decode(value)[::-1]


def test_codec_seam_is_used_for_both_directions() -> None:
    codec: DataCodec = _ReversedCodec()
    base64_codec: DataCodec = Base64Codec()
    encoded = encode_data({"billNo": "B1"}, codec)
    assert decode_data(encoded, codec) == {"billNo": "B1"}
    with pytest.raises(DataDecodeError):
        decode_data(encoded, base64_codec)


def test_new_request_id_is_ms_timestamp_plus_three_digits() -> None:
    rid = new_request_id(now_ms=1764000000123)
    assert len(rid) == 16
    assert rid.isdigit()
    assert rid.startswith("1764000000123")
    assert len(new_request_id()) == 16


# --------------------------------------------------------------------------- envelope


def test_gateway_request_build_encodes_data_and_wires_four_fields() -> None:
    req = GatewayRequest.build(
        "3std1DEMOERP", InterfaceCode.BILL_INVOICE_QUERY, {"serialNo": "B1"}, request_id="1"
    )
    wire = req.to_wire()
    assert set(wire) == {"requestId", "businessSystemCode", "interfaceCode", "data"}
    assert wire["interfaceCode"] == "BILL.INVOICE.QUERY"
    assert isinstance(wire["data"], str)
    assert decode_data(wire["data"]) == {"serialNo": "B1"}


def test_push_request_sample_decodes_to_bills_with_exact_amounts() -> None:
    req = GatewayRequest.model_validate(sample("push_request.json"))
    assert req.interfaceCode == InterfaceCode.BILL_PUSH
    bills = decode_push_bills(req)
    assert bills[0]["billNo"] == "ERP-SO-20251124-0001"
    assert bills[0]["totalAmount"] == Decimal("1000.00")
    assert bills[0]["billDetail"][0]["lineProperty"] == 2


def test_push_request_builds_an_array_and_limits_the_batch() -> None:
    bill = {"billNo": "B1", "totalAmount": Decimal("10.00")}
    req = push_request("SHOPERP01", [bill])
    assert req.decoded_data() == [bill]
    with pytest.raises(ValueError, match="at least one"):
        push_request("SHOPERP01", [])
    with pytest.raises(ValueError, match="at most 50"):
        push_request("SHOPERP01", [bill] * 51)


def test_decode_push_bills_refuses_an_object() -> None:
    req = GatewayRequest.build("X", InterfaceCode.BILL_PUSH, {"billNo": "B1"})
    with pytest.raises(DataDecodeError, match="non-empty array"):
        decode_push_bills(req)


def test_push_success_is_accepted_with_per_bill_items() -> None:
    resp = GatewayResponse.model_validate(sample("push_success.json"))
    assert resp.ok
    assert push_accepted(resp)
    assert resp.outcome is OutcomeClass.ACCEPTED
    items = push_results(resp)
    assert [(i.billNo, i.success) for i in items] == [("ERP-SO-20251124-0001", True)]


def test_push_failure_is_classified_from_the_error_table() -> None:
    resp = GatewayResponse.model_validate(sample("push_failure_total.json"))
    assert not resp.ok
    assert not push_accepted(resp)
    assert resp.error_code == "-10007"
    assert resp.outcome is OutcomeClass.REJECTED
    assert push_results(resp) == []


def test_legacy_status_and_return_code_forms() -> None:
    legacy = GatewayResponse.model_validate(sample("gateway_legacy_status.json"))
    assert legacy.ok
    assert push_accepted(legacy)
    assert GatewayResponse.model_validate({"returnCode": "0"}).ok
    assert not GatewayResponse.model_validate({"returnCode": "9999", "message": "x"}).ok
    assert not GatewayResponse.model_validate({"success": False, "returnCode": "0"}).ok
    # S15's test: the message alone when no flag is sent at all.
    assert push_accepted(GatewayResponse.model_validate({"message": "开票申请单推送成功"}))


def test_expired_token_answer_is_auth_expired() -> None:
    resp = GatewayResponse.model_validate(sample("gateway_token_expired.json"))
    assert resp.outcome is OutcomeClass.AUTH_EXPIRED
    assert GatewayResponse.model_validate(expired_token_body()).outcome is OutcomeClass.AUTH_EXPIRED


def test_response_builders_emit_only_the_documented_fields() -> None:
    ok = GatewayResponse.succeeded("查询成功", [{"billNo": "B1"}], encode=True)
    wire = ok.to_wire()
    assert set(wire) == {"success", "errorCode", "message", "data"}
    assert wire["success"] is True
    assert wire["errorCode"] == "0"
    assert isinstance(wire["data"], str)
    assert decode_data(wire["data"]) == [{"billNo": "B1"}]
    bad = GatewayResponse.failed("-10001", "未知业务系统编码X").to_wire()
    assert bad == {
        "success": False,
        "errorCode": "-10001",
        "message": "未知业务系统编码X",
        "data": None,
    }


# --------------------------------------------------------------------------- tokens


def test_app_token_request_sends_both_secret_spellings() -> None:
    req = AppTokenRequest(appId="app", appSecret="s3cret-value", accountId="190")
    wire = req.to_wire()
    assert wire["appSecret"] == "s3cret-value"
    assert wire["appSecuret"] == "s3cret-value"
    assert wire["tenantid"] == ""
    assert wire["language"] == "zh_CN"


@pytest.mark.parametrize("key", ["appSecret", "appSecuret"])
def test_app_token_request_parses_either_spelling(key: str) -> None:
    req = AppTokenRequest.model_validate({"appId": "a", key: "from-" + key, "accountId": "1"})
    assert req.appSecret.get_secret_value() == "from-" + key


def test_app_token_request_without_secret_is_refused() -> None:
    with pytest.raises(ValidationError):
        AppTokenRequest.model_validate({"appId": "a", "accountId": "1"})


def test_token_requests_never_print_their_secrets() -> None:
    app = AppTokenRequest.model_validate(
        {"appId": "a", "appSecuret": "very-secret-1", "accountId": "1"}
    )
    login = LoginRequest(user="u", apptoken="very-secret-2", accountId="1", usertype="UserName")
    for text in (repr(app), str(app), app.model_dump_json(), repr(login), login.model_dump_json()):
        assert "very-secret" not in text
    assert login.to_wire()["apptoken"] == "very-secret-2"
    assert login.to_wire()["usertype"] == "UserName"


def test_app_token_success_sample() -> None:
    resp = TokenResponse.model_validate(sample("app_token_success.json"))
    assert resp.is_success
    assert resp.token == "8c6f5e0a-3b7d-4d5e-9a43-2f0c1d9e7b11"
    assert resp.expire_time == 1764000000000
    assert resp.expires_at == datetime(2025, 11, 24, 16, 0, tzinfo=UTC)
    assert resp.error_text == ""


def test_access_token_success_with_numeric_error_code() -> None:
    resp = TokenResponse.model_validate(sample("access_token_success.json"))
    assert resp.is_success
    assert resp.token.startswith("1900000000000000001_")
    assert resp.expire_time == 1764007200000


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("token_failure_state.json", "第三方appId或appSecuret不能为空!"),
        ("token_failure_data_success_false.json", "第三方应用校验失败"),
        ("token_failure_error_code.json", "参数错误"),
    ],
)
def test_token_failure_shapes(name: str, reason: str) -> None:
    resp = TokenResponse.model_validate(sample(name))
    assert not resp.is_success
    assert reason in resp.error_text


def test_token_rule_needs_a_non_empty_token() -> None:
    body = token_success_body("app_token", "", 1764000000000)
    assert not TokenResponse.model_validate(body).is_success
    good = TokenResponse.model_validate(token_success_body("access_token", "t-1", 1))
    assert good.is_success
    assert good.token == "t-1"


def test_proposed_token_failure_body_is_a_failure_with_its_text() -> None:
    resp = TokenResponse.model_validate(token_failure_body(TOKEN_FAILURE_BAD_APP))
    assert not resp.is_success
    assert resp.error_text == "第三方应用校验失败"
    assert resp.expire_time is None


def test_token_response_with_non_object_data_is_a_failure() -> None:
    resp = TokenResponse.model_validate({"state": "success", "data": "oops"})
    assert not resp.is_success
    assert "state='success'" in resp.error_text


# --------------------------------------------------------------------------- withdraw


def test_withdraw_request_data_limits_and_wire() -> None:
    data = WithdrawRequestData(serialNos=["B1"], sellerTaxpayerId="91310000SIM0000001")
    assert data.to_wire() == {"serialNos": ["B1"], "sellerTaxpayerId": "91310000SIM0000001"}
    with pytest.raises(ValidationError):
        WithdrawRequestData(serialNos=[])
    with pytest.raises(ValidationError):
        WithdrawRequestData(serialNos=[f"B{i}" for i in range(51)])


def test_withdraw_sample_round_trip() -> None:
    req = GatewayRequest.model_validate(sample("withdraw_request.json"))
    data = WithdrawRequestData.model_validate(req.decoded_data())
    assert data.serialNos == ["SHOP-20251124-77", "SHOP-20251124-78", "SHOP-X"]
    assert data.orgCode is None
    resp = GatewayResponse.model_validate(sample("withdraw_response.json"))
    results = withdraw_results(resp)
    assert [(r.serialNo, r.success) for r in results] == [
        ("SHOP-20251124-77", True),
        ("SHOP-20251124-78", False),
        ("SHOP-X", False),
    ]
    assert results[1].message == "单据已开票，不允许撤回"
    assert not results[1].already_withdrawn


def test_withdraw_results_refuse_a_bad_shape() -> None:
    resp = GatewayResponse.succeeded("撤回成功", "not-base64-!!")
    with pytest.raises(DataDecodeError):
        withdraw_results(resp)
    resp = GatewayResponse.succeeded("撤回成功", [{"message": "no serialNo"}])
    with pytest.raises(DataDecodeError, match="bad item"):
        withdraw_results(resp)


# --------------------------------------------------------------------------- query


def test_query_request_sample() -> None:
    req = GatewayRequest.model_validate(sample("query_request.json"))
    data = InvoiceQueryRequestData.model_validate(req.decoded_data())
    assert data.serialNo == "ERP-SO-20251124-0001"
    assert data.sellerTaxpayerId == "91310000SIM0000001"


def test_query_with_an_issued_and_a_failed_invoice() -> None:
    bills = query_results(GatewayResponse.model_validate(sample("query_issued_and_failed.json")))
    assert [b.billNo for b in bills] == ["ERP-SO-20251124-0001"]
    bill = bills[0]
    assert len(bill.issued) == 1
    assert len(bill.failed) == 1
    assert bill.pending == []
    issued = bill.issued[0]
    assert issued.invoiceNum == "25312000000123456789"
    assert issued.invoiceCode == ""
    assert issued.includeTaxAmount == Decimal("1130.00")
    assert issued.lines[0].amount == Decimal("1000.00")  # query lines come as goods[]
    assert issued.lines[0].lineProperty == 0
    assert issued.model_extra == {"qrCodeUrl": "a field this schema does not list"}
    assert bill.failed[0].issueErrorMessage == "授信额度不足"


def test_query_with_pending_items_and_plain_data() -> None:
    bills = query_results(GatewayResponse.model_validate(sample("query_pending.json")))
    assert [b.billNo for b in bills] == ["ERP-SO-20251124-0003", "ERP-SO-20251124-0004"]
    assert len(bills[0].pending) == 1
    assert bills[0].issued == [] and bills[0].failed == []
    assert bills[0].pending[0].totalTaxAmount == Decimal("0.60")
    assert bills[1].invoiceList == []


def test_query_for_an_unknown_bill() -> None:
    resp = GatewayResponse.model_validate(sample("query_unknown_bill.json"))
    assert not resp.ok
    assert is_unknown_bill(resp.error_code, resp.message)
    assert query_results(resp) == []
    assert is_unknown_bill("E?", "单据不存在")
    assert not is_unknown_bill("-10007", "价税合计金额不对")


# --------------------------------------------------------------------------- invoice item


def test_invoice_item_status_properties() -> None:
    digital = InvoiceItem(billNo="B", invoiceNum="25312000000123456789", invoiceCode="")
    assert digital.is_issued and not digital.is_failed and not digital.is_pending
    failed = InvoiceItem(billNo="B", issueErrorMessage="税局登录失效")
    assert failed.is_failed and not failed.is_issued
    pending = InvoiceItem(billNo="B", invoiceStatus="2")
    assert pending.is_pending and not pending.is_failed
    # A code without a number is neither issued nor a clean failure.
    odd = InvoiceItem(billNo="B", invoiceCode="0310", issueErrorMessage="x")
    assert not odd.is_issued and not odd.is_failed


def test_invoice_item_red_cancelled_and_dedupe_key() -> None:
    assert InvoiceItem(billNo="B", invoiceProperty="1").is_red
    assert InvoiceItem(billNo="B", invoiceStatus="3").is_red
    assert not InvoiceItem(billNo="B", invoiceStatus="0", invoiceProperty=0).is_red
    assert InvoiceItem(billNo="B", invoiceStatus="6").is_cancelled
    with_order = InvoiceItem(billNo="B", orderNo="ORD1", invoiceNum="1")
    without = InvoiceItem(billNo="B", invoiceCode="C", invoiceNum="N")
    assert with_order.dedupe_key == "order:ORD1"
    assert without.dedupe_key == "invoice:C:N:B"
    assert (
        without.dedupe_key != InvoiceItem(billNo="B2", invoiceCode="C", invoiceNum="N").dedupe_key
    )


def test_invoice_item_requires_bill_no_and_numeric_amounts() -> None:
    with pytest.raises(ValidationError):
        InvoiceItem.model_validate({"invoiceNum": "1"})
    with pytest.raises(ValidationError):
        InvoiceItem.model_validate({"billNo": "B", "totalAmount": "abc"})
    with pytest.raises(ValidationError):
        InvoiceItem.model_validate({"billNo": "B", "invoiceProperty": "0.5"})
    item = InvoiceItem.model_validate(
        {"billNo": 123, "totalAmount": "", "printFlag": 0, "invoiceProperty": Decimal("1.0")}
    )
    assert item.invoiceProperty == 1
    assert InvoiceItem.model_validate({"billNo": "B", "buyerProperty": " 1 "}).buyerProperty == 1
    assert item.billNo == "123"
    assert item.totalAmount is None
    assert item.printFlag == "0"


# --------------------------------------------------------------------------- callbacks


def test_per_invoice_callback_from_bytes_text_or_mapping() -> None:
    body = raw("callback_per_invoice_base64.json")
    parsed = parse_callback(body)
    assert parse_callback(body.decode("utf-8")) == parsed
    assert parse_callback(json.loads(body)) == parsed
    assert parsed.style == "per_invoice"
    assert parsed.interfaceCode == "INVOICE.OPEN"
    assert parsed.known_interface is CallbackInterfaceCode.INVOICE_OPEN
    assert parsed.returnCode == "0"
    assert parsed.bizControl is None and parsed.returned is None
    [item] = parsed.items
    assert item.is_issued
    assert (item.invoiceCode, item.invoiceNum) == ("031002300111", "12345678")
    assert item.totalAmount == Decimal("88.50")
    assert item.invoiceProperty == 0


def test_per_invoice_failure_with_already_decoded_data() -> None:
    parsed = parse_callback(raw("callback_per_invoice_failed_decoded.json"))
    assert parsed.style == "per_invoice"
    assert parsed.returnCode == "9999"
    [item] = parsed.items
    assert item.is_failed
    assert item.totalAmount == Decimal("250.10")


def test_per_bill_callback_with_base64_array_and_biz_control() -> None:
    parsed = parse_callback(raw("callback_per_bill_base64.json"))
    assert parsed.style == "per_bill"
    assert [i.is_issued for i in parsed.items] == [True, False]
    assert parsed.items[1].issueErrorMessage == "授信额度不足"
    assert parsed.items[0].lines[0].taxAmount == Decimal("130.00")
    assert parsed.items[0].model_extra == {"qrCodeUrl": "a field this schema does not list"}
    assert parsed.bizControl is not None
    assert parsed.bizControl.monthSurplusLimit == Decimal("9998869.99")
    assert parsed.bizControl.isWarning is False


def test_per_bill_callback_with_decoded_array_and_numeric_return_code() -> None:
    parsed = parse_callback(raw("callback_per_bill_decoded.json"))
    assert parsed.style == "per_bill"
    assert parsed.returnCode == "0"
    assert len(parsed.items) == 1 and parsed.items[0].is_issued
    assert parsed.bizControl is not None and parsed.bizControl.isWarning is True


def test_red_invoice_callback() -> None:
    parsed = parse_callback(raw("callback_invoice_red_base64.json"))
    assert parsed.known_interface is CallbackInterfaceCode.INVOICE_RED
    [item] = parsed.items
    assert item.is_red and item.is_issued
    assert item.originalInvoiceNumber == "12345678"
    assert item.totalAmount == Decimal("-88.50")


def test_bill_return_callback() -> None:
    parsed = parse_callback(raw("callback_bill_return.json"))
    assert parsed.style == "return"
    assert parsed.items == []
    assert parsed.returned == BillReturn(
        billNo="ERP-SO-20251124-0002",
        sellerTaxpayerId="91310000SIM0000001",
        reason="购方名称有误，退回修改",
    )


def _envelope(data: Any, **extra: Any) -> dict[str, Any]:
    return {
        "interfaceCode": "INVOICE.OPEN",
        "returnCode": "0",
        "returnMsg": "success",
        "data": data,
        **extra,
    }


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"<xml>not json</xml>", "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        ({"returnCode": "0", "data": b64('{"billNo":"B"}')}, "no interfaceCode"),
        ({"interfaceCode": "INVOICE.OPEN", "returnCode": "0"}, "no data"),
        (_envelope(""), "no data"),
        (_envelope("%%%not-base64%%%"), "base64"),
        (_envelope(b64("42")), "object or an array"),
        (_envelope(b64('{"invoiceNum":"1"}')), "invoice 0 is invalid (billNo"),
        (_envelope(b64('[{"billNo":"B"}, 7]')), "data[1] is not an object"),
        (_envelope(b64('{"billNo":"B"}'), bizControl="oops"), "bizControl must be an object"),
        (
            {"interfaceCode": "BILL.RETURN", "returnCode": "0", "data": b64('[{"billNo":"B"}]')},
            "BILL.RETURN data must decode to an object",
        ),
        (
            {"interfaceCode": "BILL.RETURN", "returnCode": "0", "data": b64('{"reason":"x"}')},
            "BILL.RETURN data is invalid (billNo",
        ),
    ],
)
def test_malformed_callbacks_are_refused_with_a_specific_error(body: Any, fragment: str) -> None:
    with pytest.raises(CallbackParseError) as info:
        parse_callback(body)
    assert fragment in str(info.value)


def _issued(bill_no: str, num: str) -> InvoiceItem:
    return InvoiceItem(
        billNo=bill_no,
        orderNo="ORD-" + num,
        invoiceType="10xdp",
        invoiceNum=num,
        invoiceCode="",
        totalAmount=Decimal("100.00"),
        totalTaxAmount=Decimal("13.00"),
        buyerName="示例公司",
        invoiceDetail=[{"seq": "1", "amount": Decimal("100.00"), "taxRate": "0.13"}],
    )


def test_build_then_parse_per_invoice_round_trip() -> None:
    item = _issued("B1", "25312000000000000001")
    body = build_callback(CallbackInterfaceCode.INVOICE_OPEN, [item], "per_invoice")
    assert isinstance(body["data"], str)
    assert "bizControl" not in body
    parsed = parse_callback(json.dumps(body))
    assert parsed.style == "per_invoice"
    assert (parsed.returnCode, parsed.returnMsg) == ("0", "success")
    assert [i.to_wire() for i in parsed.items] == [item.to_wire()]


def test_build_then_parse_per_bill_round_trip_with_a_failure() -> None:
    failed = InvoiceItem(billNo="B1", issueErrorMessage="税局登录失效", totalAmount=Decimal("5.00"))
    items = [_issued("B1", "25312000000000000002"), failed]
    quota = BizControl(monthSurplusLimit=Decimal("1000.50"), isWarning=True, bizType="BILL")
    body = build_callback("INVOICE.OPEN", items, "per_bill", quota)
    parsed = parse_callback(body)
    assert parsed.style == "per_bill"
    assert (parsed.returnCode, parsed.returnMsg) == ("9999", "税局登录失效")
    assert [i.to_wire() for i in parsed.items] == [i.to_wire() for i in items]
    assert parsed.bizControl == quota


def test_build_then_parse_bill_return() -> None:
    returned = BillReturn(billNo="B9", sellerTaxpayerId="91310000SIM0000001", reason="退回")
    body = build_callback("BILL.RETURN", [], "return", returned=returned)
    parsed = parse_callback(body)
    assert parsed.style == "return"
    assert parsed.returned == returned


def test_build_callback_refuses_inconsistent_arguments() -> None:
    item = _issued("B1", "1")
    with pytest.raises(ValueError, match="exactly one"):
        build_callback("INVOICE.OPEN", [item, item], "per_invoice")
    with pytest.raises(ValueError, match="at least one"):
        build_callback("INVOICE.OPEN", [], "per_bill")
    with pytest.raises(ValueError, match="returned"):
        build_callback("BILL.RETURN", [item], "return")


# --------------------------------------------------------------------------- ACK


@pytest.mark.parametrize(
    "name", ["ack_recommended.json", "ack_5103_schema.json", "ack_2102_example.json"]
)
def test_documented_ack_forms_are_acks(name: str) -> None:
    assert is_ack(raw(name))
    assert is_ack(sample(name))


def test_recommended_ack_is_an_ack() -> None:
    assert CALLBACK_ACK == {"success": True, "code": "0", "errorCode": "0", "message": "success"}
    assert is_ack(json.dumps(CALLBACK_ACK))


@pytest.mark.parametrize(
    "body",
    [
        {"success": False, "code": "0"},
        {"success": "true", "code": "0"},
        {"success": True, "code": "500"},
        {"success": True, "errorCode": "9999"},
        {"code": "0", "message": "success"},
        b"OK",
        b"[true]",
        b"",
    ],
)
def test_non_acks_are_not_acks(body: Any) -> None:
    assert not is_ack(body)


# --------------------------------------------------------------------------- cloud contract

# Written out here rather than read from GATEWAY_ERRORS, so a wrong table row fails the test.
EXPECTED_CLASSES = {
    "-10001": OutcomeClass.CONFIG_ERROR,
    "-10002": OutcomeClass.AUTH_EXPIRED,
    "401": OutcomeClass.AUTH_EXPIRED,
    "403": OutcomeClass.AUTH_EXPIRED,
    "-10003": OutcomeClass.CONFIG_ERROR,
    "-10004": OutcomeClass.REJECTED,
    "-10005": OutcomeClass.CONFIG_ERROR,
    "-10006": OutcomeClass.REJECTED,
    "-10007": OutcomeClass.REJECTED,
    "-10008": OutcomeClass.REJECTED,
    "-10009": OutcomeClass.DUPLICATE,
    "-10010": OutcomeClass.CONFIG_ERROR,
    "-10011": OutcomeClass.REJECTED,
    "-10012": OutcomeClass.REJECTED,
    "-10013": OutcomeClass.REJECTED,
    "-10014": OutcomeClass.REJECTED,
    "-10015": OutcomeClass.REJECTED,
    "9999": OutcomeClass.TRANSIENT,
}


def test_error_table_covers_every_documented_situation() -> None:
    assert {e.code for e in GATEWAY_ERRORS} == set(EXPECTED_CLASSES)


@pytest.mark.parametrize("error", GATEWAY_ERRORS, ids=lambda e: e.code)
def test_classify_every_row_of_the_error_table(error: Any) -> None:
    expected = EXPECTED_CLASSES[error.code]
    message = error.message(code="X", field="billNo", tax_id="T", row=1, bill_no="B1")
    assert classify_gateway_failure(error.code, message) is expected
    if error.code.lstrip("-").isdigit():
        assert classify_gateway_failure(int(error.code), message) is expected
    # The answer as the cloud would send it classifies the same way.
    body = GatewayResponse.failed(error.code, message)
    assert body.outcome is expected


def test_error_messages_fill_their_placeholders() -> None:
    assert gateway_error("-10009").message(bill_no="B1") == "单据编号B1已存在"
    assert gateway_error("-10001").message(code="ERP9") == "未知业务系统编码ERP9"
    assert gateway_error("-10008").message() == "第行税额误差超过±0.06"


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("E1", "token无效", OutcomeClass.AUTH_EXPIRED),
        ("E2", "登录已过期", OutcomeClass.AUTH_EXPIRED),
        ("E3", "单据编号X已存在", OutcomeClass.DUPLICATE),
        ("E4", "系统繁忙，请稍后重试", OutcomeClass.TRANSIENT),
        ("E5", "未知业务系统编码ABC", OutcomeClass.CONFIG_ERROR),
        ("E6", "购方名称不能为空", OutcomeClass.REJECTED),
        (None, None, OutcomeClass.REJECTED),
        ("0", "", OutcomeClass.REJECTED),
    ],
)
def test_classify_unknown_codes_by_message(
    code: str | None, message: str | None, expected: OutcomeClass
) -> None:
    assert classify_gateway_failure(code, message) is expected


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (401, None, None, True),
        (403, "0", "", True),
        (200, "401", "", True),
        (200, 403, "", True),
        (200, "-1", "Access Token expired", True),
        (200, "-1", "用户登录已失效", True),
        (200, "-1", "令牌过期", True),
        (200, "-10002", "未进行接口授权", True),
        (200, "-10007", "价税合计金额不对", False),
        (500, "9999", "系统异常", False),
        (None, None, None, False),
    ],
)
def test_is_auth_failure(
    status: int | None, code: object, message: str | None, expected: bool
) -> None:
    assert is_auth_failure(status, code, message) is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (401, OutcomeClass.AUTH_EXPIRED),
        (429, OutcomeClass.TRANSIENT),
        (502, OutcomeClass.UNKNOWN_OUTCOME),
        (504, OutcomeClass.UNKNOWN_OUTCOME),
        (404, OutcomeClass.CONFIG_ERROR),
    ],
)
def test_classify_http_status(status: int, expected: OutcomeClass | None) -> None:
    assert classify_http_status(status) is expected


def test_callback_style_prefix_rule_and_split_limits() -> None:
    assert callback_style_for("3std1DEMOERP") == "per_bill"
    assert callback_style_for("SHOPERP01") == "per_invoice"
    assert callback_style_for("ERP3std1") == "per_invoice"
    assert max_lines_per_invoice("10xdp") == 2000
    assert max_lines_per_invoice("08xdp") == 2000
    assert max_lines_per_invoice("026") == 8
