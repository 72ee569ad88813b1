"""CPU of one BILL.INVOICE.QUERY in the worker's own code, without the network or the ledger.

    .venv/bin/python -m bench.call_cost [--calls 2000] [--repeats 5] [--redis-url URL]

What a confirming query costs the worker apart from waiting: ``call_with_token`` (token cache
and rate gate on a real Redis), the request build, httpx, the answer's decoding and
``query_results`` — the path of ``worker.services.query.query_bill`` minus its ledger row.
The answer is a real one: a bill is pushed to an in-process simulator, issued, and its query
answer (base64 ``data``, one invoice with three lines) is then served by
``httpx.MockTransport``, so no socket or simulator CPU is counted. Prints the process CPU
(``time.process_time``) per call, median and best of ``--repeats`` rounds.

Run it from another checkout (``PYTHONPATH=<checkout> python -m bench.call_cost`` with this
file) to compare two versions of the worker.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from datetime import timedelta
from typing import Any

import httpx
import redis
from pydantic import SecretStr

from schemas.kingdee import decode_data, query_results
from schemas.tenants import TenantConfig
from simulator.testing import CloudSession, make_bill, running_simulator
from worker.kingdee import CallContext, HttpKingdeeClient
from worker.ratelimit import RedisRateGate
from worker.services.cloud_call import call_with_token
from worker.tokens import KEY_PREFIX, AccessToken, TokenCache

__all__ = ["main"]

SELLER = "91310000SIM0000001"  # the simulator's tenant "demo"


class _NoLedger:
    def begin(self, **_: Any) -> int | None:
        return None

    def finish(self, entry: int | None, **_: Any) -> None:
        return None


def captured_answer() -> bytes:
    """The simulator's BILL.INVOICE.QUERY answer for an issued three-line bill."""
    with running_simulator(issue_delay=0.0) as sim, CloudSession(sim, "demo") as cloud:
        cloud.push(make_bill("CALLCOST-1", SELLER, lines=3, auto_invoice=True))
        for _ in range(100):
            answer = cloud.gateway(
                "BILL.INVOICE.QUERY", {"sellerTaxpayerId": SELLER, "serialNo": "CALLCOST-1"}
            )
            data = answer.json().get("data")
            bills = decode_data(data) if data else []
            if any(item.get("invoiceNum") for b in bills for item in b.get("invoiceList", [])):
                return answer.content
            time.sleep(0.05)
    raise RuntimeError("the simulator did not issue the bench bill")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--redis-url", default=os.environ.get("FAPIAO_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args(argv)
    body = captured_answer()
    tenant = TenantConfig(
        name=f"bench-callcost-{os.getpid()}",
        base_url="http://kingdee.test/demo",  # type: ignore[arg-type]
        app_id="app",
        app_secret=SecretStr("secret"),
        account_id="account",
        user="user",
        business_system_code="ERP01",
        seller_tax_ids=[SELLER],
        rate_limit_per_second=1e9,  # the gate's round trip, never its wait
    )
    store = redis.Redis.from_url(args.redis_url)
    http = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, content=body)))
    client = HttpKingdeeClient(tenant, http, ledger=_NoLedger(), rate_gate=RedisRateGate(store))
    runtime: Any = types.SimpleNamespace(
        tokens=TokenCache(store, refresh_margin=timedelta(minutes=5))
    )
    now_ms = int(time.time() * 1000)
    token = AccessToken("bench-token", expires_ms=now_ms + 7_200_000, issued_ms=now_ms)
    runtime.tokens.get(tenant.name, lambda: token)

    def one() -> None:
        result = call_with_token(
            runtime,
            client,
            lambda t: client.query("CALLCOST-1", SELLER, access_token=t, context=CallContext()),
        )
        assert result.response is not None
        [bill] = query_results(result.response)
        assert bill.invoiceList

    try:
        for _ in range(min(200, args.calls)):
            one()
        rounds: list[float] = []
        for _ in range(args.repeats):
            started = time.process_time()
            for _ in range(args.calls):
                one()
            rounds.append((time.process_time() - started) * 1e6 / args.calls)
    finally:
        store.delete(KEY_PREFIX + tenant.name)
        http.close()
        store.close()
    rounds.sort()
    print(
        f"BILL.INVOICE.QUERY, worker code only: {rounds[len(rounds) // 2]:.0f} µs CPU per call"
        f" (median of {args.repeats} × {args.calls}; best {rounds[0]:.0f} µs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
