"""The naive integration the bridge is measured against: one process, one bill at a time.

What many first integrations do: for every bill, getAppToken + login (a fresh access_token),
one BILL.PUSH of that single bill, then BILL.INVOICE.QUERY every ``poll_interval`` until the
cloud shows an issued invoice. No queue, no token cache, no concurrency. It speaks the same
wire formats as the bridge (``schemas.kingdee``), so only the architecture differs.

``run_naive(base_url, spec, bills)`` → ``NaiveResult`` (documents, seconds, calls by interface).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from schemas.kingdee import (
    APP_TOKEN_PATH,
    LOGIN_PATH,
    OPENAPI_PATH,
    AppTokenRequest,
    GatewayRequest,
    GatewayResponse,
    InterfaceCode,
    LoginRequest,
    push_accepted,
    push_request,
    query_results,
)
from schemas.money import dumps_exact, loads_exact

__all__ = ["NaiveResult", "run_naive"]


@dataclass
class NaiveResult:
    documents: int = 0
    invoiced: int = 0
    seconds: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.invoiced / self.seconds if self.seconds else 0.0


def _login(client: httpx.Client, base: str, spec: Mapping[str, Any], result: NaiveResult) -> str:
    app = AppTokenRequest(
        appId=str(spec["app_id"]),
        appSecret=SecretStr(str(spec["app_secret"])),
        accountId=str(spec["account_id"]),
    )
    result.calls["getAppToken"] += 1
    answer = client.post(base + APP_TOKEN_PATH, json=app.to_wire()).json()
    login = LoginRequest(
        user=str(spec["user"]),
        apptoken=SecretStr(str(answer["data"]["app_token"])),
        accountId=str(spec["account_id"]),
        usertype=str(spec["usertype"]),
    )
    result.calls["login"] += 1
    answer = client.post(base + LOGIN_PATH, json=login.to_wire()).json()
    return str(answer["data"]["access_token"])


def _gateway(
    client: httpx.Client, base: str, token: str, request: GatewayRequest
) -> GatewayResponse:
    response = client.post(
        base + OPENAPI_PATH,
        params={"access_token": token},
        headers={"access_token": token, "content-type": "application/json"},
        content=dumps_exact(request.to_wire()).encode("utf-8"),
    )
    return GatewayResponse.model_validate(loads_exact(response.content))


def run_naive(
    base_url: str,
    spec: Mapping[str, Any],
    bills: Sequence[Mapping[str, Any]],
    *,
    poll_interval: float = 0.05,
    timeout_per_bill: float = 30.0,
) -> NaiveResult:
    """Push and wait for each bill in turn (module docstring)."""
    result = NaiveResult(documents=len(bills))
    code = str(spec["business_system_code"])
    started = time.perf_counter()
    with httpx.Client(timeout=10.0) as client:
        for bill in bills:
            token = _login(client, base_url, spec, result)
            result.calls["BILL.PUSH"] += 1
            answer = _gateway(client, base_url, token, push_request(code, [bill]))
            if not push_accepted(answer):
                result.errors.append(f"{bill['billNo']}: {answer.message}")
                continue
            query = GatewayRequest.build(
                code,
                InterfaceCode.BILL_INVOICE_QUERY,
                {"sellerTaxpayerId": bill["sellerTaxpayerId"], "serialNo": bill["billNo"]},
            )
            deadline = time.monotonic() + timeout_per_bill
            while time.monotonic() < deadline:
                time.sleep(poll_interval)
                result.calls["BILL.INVOICE.QUERY"] += 1
                answer = _gateway(client, base_url, token, query)
                if answer.ok and any(b.issued for b in query_results(answer)):
                    result.invoiced += 1
                    break
            else:
                result.errors.append(f"{bill['billNo']}: not issued within {timeout_per_bill} s")
    result.seconds = time.perf_counter() - started
    return result
