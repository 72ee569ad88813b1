"""A competent but non-durable integration: the baseline the bridge's price of durability is
measured against.

What a careful script does when it does not need to survive a crash: getAppToken + login once
and keep the access_token (log in again only when the gateway says it expired), ``threads``
bills in flight at once (one shared keep-alive HTTP client), each bill pushed alone with
BILL.PUSH and then BILL.INVOICE.QUERY every ``poll_interval`` until the cloud shows an issued
invoice. Nothing is stored: no database, no queue, no ledger, no callback handling — a crash
loses what was in flight and cannot tell whether a bill left. Same wire formats as the bridge
(``schemas.kingdee``) and as ``bench.naive``; only the architecture differs.

``run_competent(base_url, spec, bills, threads=32)`` → ``CompetentResult`` (documents, seconds,
calls by interface, CPU seconds of this process while it ran).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from schemas.cloud_contract import OutcomeClass
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

__all__ = ["CompetentResult", "run_competent"]


@dataclass
class CompetentResult:
    documents: int = 0
    invoiced: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # user + system of this process (all its threads) during the run
    calls: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.invoiced / self.seconds if self.seconds else 0.0


class _Session:
    """One shared client, one cached access_token, call counters; safe across threads."""

    def __init__(self, base: str, spec: Mapping[str, Any], threads: int) -> None:
        self.base = base
        self.spec = spec
        limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
        self.client = httpx.Client(timeout=10.0, limits=limits)
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._token: str | None = None

    def count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def token(self, stale: str | None = None) -> str:
        """The cached token; a new one only if none yet or ``stale`` is still the cached one
        (so N threads that saw the same expiry log in once)."""
        with self._lock:
            if self._token is None or self._token == stale:
                self._token = self._login()
            return self._token

    def _login(self) -> str:
        spec = self.spec
        app = AppTokenRequest(
            appId=str(spec["app_id"]),
            appSecret=SecretStr(str(spec["app_secret"])),
            accountId=str(spec["account_id"]),
        )
        self.calls["getAppToken"] += 1  # under self._lock (token())
        answer = self.client.post(self.base + APP_TOKEN_PATH, json=app.to_wire()).json()
        login = LoginRequest(
            user=str(spec["user"]),
            apptoken=SecretStr(str(answer["data"]["app_token"])),
            accountId=str(spec["account_id"]),
            usertype=str(spec["usertype"]),
        )
        self.calls["login"] += 1
        answer = self.client.post(self.base + LOGIN_PATH, json=login.to_wire()).json()
        return str(answer["data"]["access_token"])

    def gateway(self, name: str, request: GatewayRequest) -> GatewayResponse:
        """One gateway call; on an expired token: log in again (once) and repeat it."""
        token = self.token()
        body = dumps_exact(request.to_wire()).encode("utf-8")
        for attempt in range(2):
            self.count(name)
            response = self.client.post(
                self.base + OPENAPI_PATH,
                params={"access_token": token},
                headers={"access_token": token, "content-type": "application/json"},
                content=body,
            )
            answer = GatewayResponse.model_validate(loads_exact(response.content))
            if attempt or answer.ok or answer.outcome is not OutcomeClass.AUTH_EXPIRED:
                return answer
            token = self.token(stale=token)
        raise AssertionError("unreachable")


def run_competent(
    base_url: str,
    spec: Mapping[str, Any],
    bills: Sequence[Mapping[str, Any]],
    *,
    threads: int = 32,
    poll_interval: float = 0.05,
    timeout_per_bill: float = 30.0,
) -> CompetentResult:
    """Push and wait for every bill, ``threads`` at a time (module docstring)."""
    result = CompetentResult(documents=len(bills))
    code = str(spec["business_system_code"])
    session = _Session(base_url, spec, threads)
    errors_lock = threading.Lock()

    def one(bill: Mapping[str, Any]) -> bool:
        answer = session.gateway("BILL.PUSH", push_request(code, [bill]))
        if not push_accepted(answer):
            with errors_lock:
                result.errors.append(f"{bill['billNo']}: {answer.message}")
            return False
        query = GatewayRequest.build(
            code,
            InterfaceCode.BILL_INVOICE_QUERY,
            {"sellerTaxpayerId": bill["sellerTaxpayerId"], "serialNo": bill["billNo"]},
        )
        deadline = time.monotonic() + timeout_per_bill
        while time.monotonic() < deadline:
            time.sleep(poll_interval)
            answer = session.gateway("BILL.INVOICE.QUERY", query)
            if answer.ok and any(b.issued for b in query_results(answer)):
                return True
        with errors_lock:
            result.errors.append(f"{bill['billNo']}: not issued within {timeout_per_bill} s")
        return False

    cpu0 = os.times()
    started = time.perf_counter()
    try:
        session.token()  # the one login, as any long-running integration has done already
        with ThreadPoolExecutor(max_workers=threads) as pool:
            result.invoiced = sum(pool.map(one, bills))
    finally:
        result.seconds = time.perf_counter() - started
        cpu1 = os.times()
        result.cpu_seconds = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        session.client.close()
    result.calls = session.calls
    return result
