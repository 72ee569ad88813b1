"""Simulator tokens over real HTTP: getAppToken.do, login.do, and the access_token on openApi.

The request shapes of the public clients (docs/CLOUD-CONTRACT.md §2.2, §3) are accepted; the wrong
ones are refused the way the cloud refuses them (cloud_contract shapes).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from schemas.cloud_contract import (
    TOKEN_EXPIRED_ERROR_CODE,
    TOKEN_EXPIRED_MESSAGE,
    TOKEN_FAILURE_BAD_ACCOUNT,
    TOKEN_FAILURE_BAD_APP,
    TOKEN_FAILURE_BAD_LOGIN,
)
from schemas.kingdee import TokenResponse
from simulator.testing import CloudSession, SimulatorHandle, make_bill, running_simulator

SELLER = "91310000SIM0000001"


@pytest.fixture(scope="module")
def module_sim() -> Iterator[SimulatorHandle]:
    with running_simulator(issue_delay=60.0, token_ttl=600.0) as sim:
        yield sim


@pytest.fixture
def sim(module_sim: SimulatorHandle) -> SimulatorHandle:
    module_sim.reset()
    return module_sim


@pytest.fixture
def demo(sim: SimulatorHandle) -> Iterator[CloudSession]:
    with CloudSession(sim, "demo") as session:
        yield session


def test_app_token_accepts_the_classic_appsecuret_spelling(demo: CloudSession) -> None:
    before_ms = int(time.time() * 1000)
    answer = TokenResponse.model_validate(demo.app_token_response().json())
    assert answer.is_success
    assert len(answer.token) == 36  # UUID
    # expire_time is absolute epoch milliseconds, token_ttl (600 s) ahead.
    assert answer.expire_time is not None
    assert before_ms + 590_000 <= answer.expire_time <= before_ms + 610_000


def test_app_token_accepts_appsecret_spelling(demo: CloudSession) -> None:
    response = demo.app_token_response(appSecuret=None, appSecret=demo.spec["app_secret"])
    assert TokenResponse.model_validate(response.json()).is_success


@pytest.mark.parametrize(
    ("overrides", "failure"),
    [
        ({"appSecuret": "wrong-secret-123456"}, TOKEN_FAILURE_BAD_APP),
        ({"appId": "someone-else"}, TOKEN_FAILURE_BAD_APP),
        ({"appSecuret": None}, TOKEN_FAILURE_BAD_APP),
        ({"accountId": "1900000000000009999"}, TOKEN_FAILURE_BAD_ACCOUNT),
        ({"accountId": None}, TOKEN_FAILURE_BAD_ACCOUNT),
    ],
)
def test_app_token_refusals_have_the_contract_shape(
    demo: CloudSession, overrides: dict[str, str | None], failure: object
) -> None:
    body = demo.app_token_response(**overrides).json()
    assert body["state"] == "error"
    assert body["data"]["success"] is False
    assert body["data"]["app_token"] == ""
    assert body["errorCode"] == failure.code  # type: ignore[attr-defined]
    assert body["errorMsg"] == failure.text  # type: ignore[attr-defined]
    assert not TokenResponse.model_validate(body).is_success


def test_account_of_another_tenant_path_is_unknown_here(sim: SimulatorHandle) -> None:
    with CloudSession(sim, "demo") as demo:
        shop = sim.spec("shop")
        body = demo.app_token_response(
            appId=shop["app_id"], appSecuret=shop["app_secret"], accountId=shop["account_id"]
        ).json()
    assert body["errorCode"] == TOKEN_FAILURE_BAD_ACCOUNT.code


def test_login_gives_an_access_token_prefixed_with_the_account(demo: CloudSession) -> None:
    app_token = demo.app_token_response().json()["data"]["app_token"]
    answer = TokenResponse.model_validate(demo.login_response(app_token).json())
    assert answer.is_success
    assert answer.token.startswith(demo.spec["account_id"] + "_")
    assert len(answer.token) == len(demo.spec["account_id"]) + 1 + 100


@pytest.mark.parametrize(
    "overrides",
    [
        {"user": "somebody-else"},
        {"usertype": "Mobile"},  # demo's user is a UserName
        {"apptoken": "4b1c6a8e-0000-4000-8000-000000000000"},
    ],
)
def test_login_refusals(demo: CloudSession, overrides: dict[str, str]) -> None:
    app_token = demo.app_token_response().json()["data"]["app_token"]
    body = demo.login_response(app_token, **overrides).json()
    assert body["errorCode"] == TOKEN_FAILURE_BAD_LOGIN.code
    assert body["data"]["access_token"] == ""


def test_login_refuses_an_app_token_of_another_tenant(sim: SimulatorHandle) -> None:
    with CloudSession(sim, "shop") as shop, CloudSession(sim, "demo") as demo:
        shop_app_token = shop.app_token_response().json()["data"]["app_token"]
        body = demo.login_response(shop_app_token).json()
    assert body["errorCode"] == TOKEN_FAILURE_BAD_LOGIN.code


def _query(demo: CloudSession, token_in: str, token: str | None = None) -> dict[str, object]:
    response = demo.gateway(
        "BILL.INVOICE.QUERY",
        {"sellerTaxpayerId": SELLER, "serialNo": "NO-SUCH-BILL"},
        token_in=token_in,
        token=token,
    )
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


@pytest.mark.parametrize("token_in", ["query", "header", "both"])
def test_access_token_in_query_header_or_both_is_accepted(
    demo: CloudSession, token_in: str
) -> None:
    body = _query(demo, token_in)
    # Authenticated: the query itself answers (unknown bill), not the auth refusal.
    assert body["errorCode"] != TOKEN_EXPIRED_ERROR_CODE
    assert body["message"] == "单据不存在"


@pytest.mark.parametrize("token_in", ["camel", "none"])
def test_camelcase_header_alone_or_no_token_is_refused_as_missing(
    demo: CloudSession, token_in: str
) -> None:
    body = _query(demo, token_in)
    assert body == {
        "success": False,
        "errorCode": TOKEN_EXPIRED_ERROR_CODE,
        "message": TOKEN_EXPIRED_MESSAGE,
        "data": None,
    }


def test_unknown_token_is_refused(demo: CloudSession) -> None:
    body = _query(demo, "both", token=demo.spec["account_id"] + "_" + "x" * 100)
    assert body["errorCode"] == TOKEN_EXPIRED_ERROR_CODE


def test_token_of_another_tenant_is_refused(sim: SimulatorHandle) -> None:
    with CloudSession(sim, "shop") as shop, CloudSession(sim, "demo") as demo:
        body = _query(demo, "both", token=shop.login())
    assert body["errorCode"] == TOKEN_EXPIRED_ERROR_CODE


def test_admin_expiry_per_tenant_and_for_all(sim: SimulatorHandle) -> None:
    with CloudSession(sim, "shop") as shop, CloudSession(sim, "demo") as demo:
        demo.login()
        shop.login()
        assert sim.expire_tokens("demo") == 2  # its app_token and access_token
        assert _query(demo, "both")["errorCode"] == TOKEN_EXPIRED_ERROR_CODE
        assert _query(shop, "both")["message"] == "单据不存在"
        assert sim.expire_tokens() == 2
        assert _query(shop, "both")["errorCode"] == TOKEN_EXPIRED_ERROR_CODE
        # A fresh login works again.
        demo.login()
        assert _query(demo, "both")["message"] == "单据不存在"


def test_tokens_expire_for_real() -> None:
    with running_simulator(token_ttl=0.3) as sim, CloudSession(sim, "demo") as demo:
        demo.login()
        assert _query(demo, "both")["message"] == "单据不存在"
        time.sleep(0.5)
        assert _query(demo, "both")["errorCode"] == TOKEN_EXPIRED_ERROR_CODE


def test_short_ttl_fault_shortens_new_tokens_only(sim: SimulatorHandle, demo: CloudSession) -> None:
    long_lived = demo.login()
    sim.set_faults(token_ttl=0.3)
    before_ms = int(time.time() * 1000)
    app_token = demo.app_token_response().json()["data"]
    assert app_token["expire_time"] <= before_ms + 1_000
    short_lived = demo.login_response(app_token["app_token"]).json()["data"]["access_token"]
    time.sleep(0.5)
    assert _query(demo, "both", token=short_lived)["errorCode"] == TOKEN_EXPIRED_ERROR_CODE
    assert _query(demo, "both", token=long_lived)["message"] == "单据不存在"


def test_token_expire_fault_expires_the_presented_token(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    token = demo.login()
    sim.set_faults(token_expire=1.0)
    assert _query(demo, "both")["errorCode"] == TOKEN_EXPIRED_ERROR_CODE
    sim.set_faults()  # off again: the token stays expired
    assert _query(demo, "both", token=token)["errorCode"] == TOKEN_EXPIRED_ERROR_CODE


def test_auth_fail_fault_refuses_but_keeps_the_token(
    sim: SimulatorHandle, demo: CloudSession
) -> None:
    demo.login()
    sim.set_faults(auth_fail=1.0)
    pushed = demo.push(make_bill("AUTH-1", SELLER, auto_invoice=False))
    assert pushed["errorCode"] == TOKEN_EXPIRED_ERROR_CODE
    assert sim.bills(billNo="AUTH-1") == []  # refused before anything was stored
    sim.set_faults()
    assert demo.push(make_bill("AUTH-1", SELLER, auto_invoice=False))["success"] is True


def test_token_statistics_per_tenant(sim: SimulatorHandle) -> None:
    with CloudSession(sim, "demo") as demo, CloudSession(sim, "shop") as shop:
        demo.login()
        demo.login()
        shop.login()
        demo.app_token_response(appSecuret="wrong-secret-123456")
    stats = sim.stats()
    assert stats["tokens"] == {"demo": {"app": 2, "access": 2}, "shop": {"app": 1, "access": 1}}
    assert stats["calls"]["getAppToken"] == {"success": 3, TOKEN_FAILURE_BAD_APP.code: 1}
    assert stats["calls"]["login"] == {"success": 3}
