"""The Kingdee client over ``httpx.MockTransport``: wire shape, outcome mapping, ledger order."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from schemas.cloud_contract import OutcomeClass
from schemas.kingdee import decode_data, token_success_body
from schemas.settings import HttpSettings
from schemas.tenants import TenantConfig
from worker.kingdee import (
    CallContext,
    CloudConfigError,
    CloudTransientError,
    HttpKingdeeClient,
    config_reason,
    fetch_access_token,
    make_http_client,
)

TENANT = TenantConfig(
    name="acme",
    base_url="http://kingdee.test/demo",  # type: ignore[arg-type]
    app_id="app-1",
    app_secret=SecretStr("s3cret-value-1"),
    account_id="acct-1",
    user="13800000000",
    business_system_code="ERP01",
    seller_tax_ids=["91310000MA1FL0001X"],
)

BILL = {
    "billNo": "B-1",
    "totalAmount": Decimal("100.10"),
    "billDetail": [{"detailId": "1", "amount": Decimal("100.10"), "taxRate": "0.13"}],
}


@dataclass
class Entry:
    interface: str
    outcome: str
    request_id: str | None
    http_status: int | None = None
    error_code: str | None = None
    message: str | None = None
    document_id: int | None = None
    attempt: int | None = None


@dataclass
class FakeLedger:
    entries: list[Entry] = field(default_factory=list)

    def begin(
        self, *, tenant: str, interface: str, request_id: str | None, context: CallContext
    ) -> int | None:
        self.entries.append(
            Entry(interface, "pending", request_id, None, None, None, context.document_id,
                  context.attempt)
        )  # fmt: skip
        return len(self.entries) - 1

    def finish(
        self,
        entry: int | None,
        *,
        tenant: str,
        interface: str,
        request_id: str | None,
        context: CallContext,
        outcome: str,
        http_status: int | None,
        error_code: str | None,
        message: str | None,
        latency_ms: int,
    ) -> None:
        row = Entry(interface, outcome, request_id, http_status, error_code, message,
                    context.document_id, context.attempt)  # fmt: skip
        if entry is None:
            self.entries.append(row)
        else:
            self.entries[entry] = row


def client_for(
    handler: Callable[[httpx.Request], httpx.Response], ledger: FakeLedger | None = None
) -> tuple[HttpKingdeeClient, FakeLedger]:
    ledger = ledger or FakeLedger()
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return HttpKingdeeClient(TENANT, http, ledger=ledger), ledger


def envelope(success: bool, code: str, message: str, data: Any = None) -> httpx.Response:
    return httpx.Response(
        200, json={"success": success, "errorCode": code, "message": message, "data": data}
    )


def test_push_sends_token_twice_and_one_base64_bill_with_exact_amounts() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return envelope(True, "0", "开票申请单推送成功")

    client, ledger = client_for(handler)
    result = client.push(BILL, access_token="tok-9", context=CallContext(7, 2))
    assert result.outcome is OutcomeClass.ACCEPTED
    request = seen[0]
    assert request.url.path == "/demo/kapi/app/sim/openApi"
    assert request.url.params["access_token"] == "tok-9"
    assert request.headers["access_token"] == "tok-9"
    body = json.loads(request.content)
    assert body["interfaceCode"] == "BILL.PUSH"
    assert body["businessSystemCode"] == "ERP01"
    assert len(body["requestId"]) == 16
    bills = decode_data(body["data"])
    assert bills == [BILL]
    assert isinstance(bills[0]["totalAmount"], Decimal)
    assert ledger.entries == [
        Entry("BILL.PUSH", "accepted", body["requestId"], 200, "0", "开票申请单推送成功", 7, 2)
    ]


def test_push_ledger_row_exists_before_the_request_leaves() -> None:
    ledger = FakeLedger()
    pending_at_send: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        pending_at_send.extend(e.outcome for e in ledger.entries)
        raise httpx.ReadTimeout("timed out", request=request)

    client, _ = client_for(handler, ledger)
    result = client.push(BILL, access_token="t", context=CallContext(1, 1))
    assert pending_at_send == ["pending"]
    assert result.outcome is OutcomeClass.UNKNOWN_OUTCOME
    assert [e.outcome for e in ledger.entries] == ["unknown_outcome"]


@pytest.mark.parametrize(
    ("response", "outcome"),
    [
        (envelope(False, "-10007", "价税合计金额不对"), OutcomeClass.REJECTED),
        (envelope(False, "-10009", "单据编号B-1已存在"), OutcomeClass.DUPLICATE),
        (envelope(False, "401", "access_token已过期或无效，请重新获取"), OutcomeClass.AUTH_EXPIRED),
        (envelope(False, "-10001", "未知业务系统编码ERP01"), OutcomeClass.CONFIG_ERROR),
        (envelope(False, "9999", "系统异常"), OutcomeClass.TRANSIENT),
        (httpx.Response(502, text="bad gateway"), OutcomeClass.UNKNOWN_OUTCOME),
        (httpx.Response(429, text="slow down"), OutcomeClass.TRANSIENT),
        (httpx.Response(401, text="who"), OutcomeClass.AUTH_EXPIRED),
        (httpx.Response(404, text="no such tenant"), OutcomeClass.CONFIG_ERROR),
        (httpx.Response(200, text="<html>proxy</html>"), OutcomeClass.UNKNOWN_OUTCOME),
        (httpx.Response(200, json=["not", "an", "object"]), OutcomeClass.UNKNOWN_OUTCOME),
    ],
)
def test_every_answer_maps_to_one_outcome(response: httpx.Response, outcome: OutcomeClass) -> None:
    client, ledger = client_for(lambda _request: response)
    result = client.push(BILL, access_token="t", context=CallContext())
    assert result.outcome is outcome
    assert ledger.entries[-1].outcome == outcome.value
    assert ledger.entries[-1].http_status == response.status_code


def test_rejection_keeps_the_clouds_words() -> None:
    client, ledger = client_for(lambda _r: envelope(False, "-10007", "价税合计金额不对"))
    result = client.push(BILL, access_token="t", context=CallContext())
    assert (result.error_code, result.message) == ("-10007", "价税合计金额不对")
    assert ledger.entries[-1].error_code == "-10007"


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (httpx.ConnectError, OutcomeClass.TRANSIENT),
        (httpx.ConnectTimeout, OutcomeClass.TRANSIENT),
        (httpx.PoolTimeout, OutcomeClass.TRANSIENT),
        (httpx.ReadTimeout, OutcomeClass.UNKNOWN_OUTCOME),
        (httpx.WriteTimeout, OutcomeClass.UNKNOWN_OUTCOME),
        (httpx.RemoteProtocolError, OutcomeClass.UNKNOWN_OUTCOME),
        (httpx.ReadError, OutcomeClass.UNKNOWN_OUTCOME),
    ],
)
def test_transport_errors(error: type[httpx.TransportError], outcome: OutcomeClass) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    client, _ = client_for(handler)
    result = client.push(BILL, access_token="t", context=CallContext())
    assert result.outcome is outcome
    assert result.http_status is None


def test_query_and_withdraw_payloads() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"interface": body["interfaceCode"], "data": decode_data(body["data"])})
        return envelope(True, "0", "ok", [])

    client, ledger = client_for(handler)
    client.query("B-1", "91310000MA1FL0001X", access_token="t", context=CallContext(3))
    client.withdraw(["B-1"], "91310000MA1FL0001X", access_token="t", context=CallContext(3))
    assert seen == [
        {
            "interface": "BILL.INVOICE.QUERY",
            "data": {"sellerTaxpayerId": "91310000MA1FL0001X", "serialNo": "B-1"},
        },
        {
            "interface": "BILL.WITHDRAW",
            "data": {"serialNos": ["B-1"], "sellerTaxpayerId": "91310000MA1FL0001X"},
        },
    ]
    assert [e.interface for e in ledger.entries] == ["BILL.INVOICE.QUERY", "BILL.WITHDRAW"]


def test_fetch_access_token_sends_both_secret_spellings() -> None:
    bodies: dict[str, dict[str, Any]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        bodies[request.url.path] = json.loads(request.content)
        if request.url.path.endswith("getAppToken.do"):
            return httpx.Response(200, json=token_success_body("app_token", "app-tok", 10**13))
        return httpx.Response(200, json=token_success_body("access_token", "acc-tok", 10**13))

    client, ledger = client_for(handler)
    token = fetch_access_token(client, clock=lambda: 1000.0)
    assert token.value == "acc-tok"
    assert token.expires_ms == 10**13
    app = bodies["/demo/api/getAppToken.do"]
    assert app["appSecret"] == app["appSecuret"] == "s3cret-value-1"
    assert app["appId"] == "app-1" and app["accountId"] == "acct-1"
    login = bodies["/demo/api/login.do"]
    assert login["apptoken"] == "app-tok" and login["user"] == "13800000000"
    assert [e.interface for e in ledger.entries] == ["getAppToken", "login"]
    assert all("s3cret" not in (e.message or "") for e in ledger.entries)


def test_refused_app_token_names_the_setting() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "state": "error",
                "status": False,
                "errorCode": "accountId_error",
                "errorMsg": "数据中心不存在",
                "data": {"app_token": "", "success": False, "error_code": "accountId_error"},
            },
        )

    client, ledger = client_for(handler)
    with pytest.raises(CloudConfigError) as caught:
        fetch_access_token(client)
    assert "account_id" in caught.value.reason
    assert "acme" in caught.value.reason
    assert "数据中心不存在" in caught.value.reason
    assert ledger.entries[-1].outcome == "config_error"


def test_unreachable_token_endpoint_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client, _ = client_for(handler)
    with pytest.raises(CloudTransientError):
        fetch_access_token(client)


@pytest.mark.parametrize(
    ("code", "message", "setting"),
    [
        ("-10001", "未知业务系统编码ERP01", "business_system_code"),
        ("-10005", "销方税号X未在发票云维护", "seller_tax_ids"),
        ("-10003", "data解密失败", "加密策略"),
        ("-10002", "未进行接口授权", "app_id"),
    ],
)
def test_config_reasons_name_what_to_fix(code: str, message: str, setting: str) -> None:
    reason = config_reason("acme", "BILL.PUSH", http_status=200, error_code=code, message=message)
    assert setting in reason
    assert message in reason


def test_make_http_client_sets_every_timeout() -> None:
    client = make_http_client(HttpSettings(connect_timeout_seconds=1.5, read_timeout_seconds=7))
    try:
        assert client.timeout.connect == 1.5
        assert client.timeout.read == 7
        assert client.timeout.write == 7
        assert client.timeout.pool == 1.5
    finally:
        client.close()


def test_a_wrong_base_url_is_named_whatever_the_call() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="no such path")

    client, _ = client_for(handler)
    with pytest.raises(CloudConfigError) as caught:
        fetch_access_token(client)
    assert "base_url" in caught.value.reason
    reason = config_reason("acme", "BILL.PUSH", http_status=404, error_code=None, message="")
    assert "base_url" in reason


def test_every_request_url_is_what_httpx_builds_from_url_and_params() -> None:
    """The client keeps the parsed URL per path and token: what is sent stays byte for byte
    what ``post(url, params={"access_token": …})`` sends, and follows a new token at once."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        if request.url.path.endswith("getAppToken.do"):
            return httpx.Response(200, json=token_success_body("app_token", "app-tok", 10**13))
        if request.url.path.endswith("login.do"):
            return httpx.Response(200, json=token_success_body("access_token", "a+b/c=", 10**13))
        return envelope(True, "0", "ok", [])

    client, _ = client_for(handler)
    fetch_access_token(client)
    for token in ("tok-1", "tok-1", "a+b/c= x", "tok-1"):
        client.query("B-1", "91310000MA1FL0001X", access_token=token, context=CallContext())
        client.push(BILL, access_token=token, context=CallContext())
    expected_http = httpx.Client()
    try:

        def built(path: str, token: str | None) -> str:
            params = {} if token is None else {"access_token": token}
            url = TENANT.url_for(path)
            return str(expected_http.build_request("POST", url, params=params).url)

        openapi = "/kapi/app/sim/openApi"
        expected = [built("/api/getAppToken.do", None), built("/api/login.do", None)]
        for token in ("tok-1", "tok-1", "a+b/c= x", "tok-1"):
            expected += [built(openapi, token)] * 2
    finally:
        expected_http.close()
    assert sent == expected
    assert "access_token=a%2Bb%2Fc%3D+x" in sent[6]


@pytest.mark.parametrize("plain", [False, True], ids=["base64", "plain-array"])
def test_a_query_answer_is_read_once_with_exact_amounts(plain: bool) -> None:
    """The client reads the answer with exact decimals once; reading its ``data`` again
    (``query_results``) gives the same values without a second conversion walk."""
    from schemas.kingdee import GatewayResponse, encode_data, query_results

    item = {"billNo": "B-1", "invoiceNum": "0001", "totalAmount": "100.10", "extraMoney": 1}
    data: Any = [{"billNo": "B-1", "invoiceList": [item]}]
    raw = '{"success":true,"errorCode":"0","message":"ok","data":%s}' % (
        '[{"billNo":"B-1","invoiceList":[{"billNo":"B-1","invoiceNum":"0001",'
        '"totalAmount":100.10,"extraMoney":0.30}]}]'
        if plain
        else json.dumps(encode_data([{**data[0], "invoiceList": [{**item, "extraMoney": "x"}]}]))
    )

    client, _ = client_for(lambda request: httpx.Response(200, content=raw.encode()))
    result = client.query("B-1", "91310000MA1FL0001X", access_token="t", context=CallContext())
    assert result.outcome is OutcomeClass.ACCEPTED and result.response is not None
    assert result.response.decoded_data() is result.response.data  # no second walk
    [bill] = query_results(result.response)
    [invoice] = bill.invoiceList
    assert invoice.totalAmount == Decimal("100.10")
    if plain:
        extra = invoice.model_extra or {}
        assert extra["extraMoney"] == Decimal("0.30")
        assert isinstance(extra["extraMoney"], Decimal)
    # A response built from floats (not read by the client) is still converted exactly.
    built = GatewayResponse.model_validate({"success": True, "data": [{"v": 0.1}]})
    assert built.decoded_data() == [{"v": Decimal("0.1")}]
    assert isinstance(built.decoded_data()[0]["v"], Decimal)
