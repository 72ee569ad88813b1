"""How many BILL.PUSH calls per second the simulator sustains (faults off).

The simulator runs in its own process (``python -m simulator``, uvloop + httptools) on a free
loopback port; this process is the load generator: ``--concurrency`` keep-alive connections,
each sending BILL.PUSH calls back to back with a unique billNo, through a minimal asyncio
HTTP/1.1 client (an httpx client would cost more CPU than the server it measures on a 2-core
machine). Every answer must be HTTP 200 with ``开票申请单推送成功``; anything else counts as
an error and makes the exit status non-zero.

    .venv/bin/python -m bench.simulator_push --seconds 10 --concurrency 32

Prints calls/s, p50/p90/p99 latency and the error count; ``--json`` for machine output.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from simulator.testing import sim_tenant_specs, write_tenants_toml

OPENAPI_PATH = "/kapi/app/sim/openApi"
SUCCESS_MESSAGE = "开票申请单推送成功"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bill_template(seller: str, auto_invoice: bool) -> str:
    """A realistic one-line 数电普票 bill as JSON text with a ``{bill_no}`` slot."""
    bill = {
        "billNo": "__BILLNO__",
        "billDate": "2025-11-24",
        "invoiceType": "10xdp",
        "includeTaxFlag": "0",
        "totalAmount": "1000.00",
        "autoInvoice": "1" if auto_invoice else "0",
        "buyerName": "上海示例贸易有限公司",
        "buyerTaxpayerId": "91310000MA1FL0BENC",
        "sellerTaxpayerId": seller,
        "sellerName": "上海模拟科技有限公司",
        "drawer": "张三",
        "billDetail": [
            {
                "detailId": "1",
                "lineProperty": 2,
                "goodsName": "软件开发服务",
                "revenueCode": "3040201990000000000",
                "taxRate": "0.06",
                "amount": "1000.00",
                "taxAmount": "60.00",
                "quantity": "1",
                "price": "1000.00",
                "units": "项",
            }
        ],
    }
    return json.dumps([bill], ensure_ascii=False)


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    completed: int = 0


async def _push_loop(
    host: str,
    port: int,
    path: str,
    token: str,
    make_body: Callable[[], bytes],
    deadline: float,
    results: Results,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST {path}?access_token={token} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"access_token: {token}\r\n"
    ).encode("ascii")
    try:
        while time.perf_counter() < deadline:
            body = make_body()
            request = head + f"Content-Length: {len(body)}\r\n\r\n".encode("ascii") + body
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            if not status_line:
                results.errors.append("connection closed by the server")
                return
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            payload = await reader.readexactly(length)
            results.latencies.append(time.perf_counter() - started)
            results.completed += 1
            status = int(status_line.split()[1])
            if status != 200:
                results.errors.append(f"HTTP {status}: {payload[:120]!r}")
                continue
            answer = json.loads(payload)
            if answer.get("success") is not True or answer.get("message") != SUCCESS_MESSAGE:
                results.errors.append(f"refused: {answer.get('errorCode')} {answer.get('message')}")
    finally:
        writer.close()


def _access_token(base: str, spec: dict[str, Any]) -> str:
    with httpx.Client(timeout=10) as client:
        app = client.post(
            base + "/api/getAppToken.do",
            json={
                "appId": spec["app_id"],
                "appSecret": spec["app_secret"],
                "appSecuret": spec["app_secret"],
                "accountId": spec["account_id"],
            },
        ).json()
        login = client.post(
            base + "/api/login.do",
            json={
                "user": spec["user"],
                "apptoken": app["data"]["app_token"],
                "accountId": spec["account_id"],
                "usertype": spec["usertype"],
            },
        ).json()
    return str(login["data"]["access_token"])


def _start_server(port: int, tenants_file: Path, issue_delay: float) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "simulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--tenants-file",
        str(tenants_file),
        "--issue-delay",
        str(issue_delay),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"simulator exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_sim/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.terminate()
    raise RuntimeError("simulator did not start within 20 s")


async def _run_load(
    port: int,
    path: str,
    token: str,
    body_maker: Callable[[], bytes],
    seconds: float,
    concurrency: int,
) -> tuple[Results, float]:
    results = Results()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _push_loop("127.0.0.1", port, path, token, body_maker, deadline, results)
            for _ in range(concurrency)
        )
    )
    return results, time.perf_counter() - started


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument(
        "--auto-invoice",
        action="store_true",
        help="bills ask for automatic issuance (issued --issue-delay after acceptance)",
    )
    parser.add_argument("--issue-delay", type=float, default=0.5)
    parser.add_argument("--min-rate", type=float, default=0.0, help="exit 2 below this calls/s")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    specs = sim_tenant_specs()
    spec = specs[1]  # per-invoice tenant "shop"
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        tenants_file = write_tenants_toml(
            Path(workdir) / "tenants.toml", f"http://127.0.0.1:{port}", specs
        )
        server = _start_server(port, tenants_file, args.issue_delay)
        try:
            base = f"http://127.0.0.1:{port}{spec['path']}"
            token = _access_token(base, spec)
            template = _bill_template(spec["seller_tax_ids"][0], args.auto_invoice)
            run_id = os.urandom(4).hex()
            counter = iter(range(10**9))
            code = spec["business_system_code"]

            def body_maker() -> bytes:
                bill_no = f"BENCH-{run_id}-{next(counter)}"
                data = base64.b64encode(template.replace("__BILLNO__", bill_no).encode()).decode()
                envelope = {
                    "requestId": bill_no,
                    "businessSystemCode": code,
                    "interfaceCode": "BILL.PUSH",
                    "data": data,
                }
                return json.dumps(envelope).encode()

            path = spec["path"] + OPENAPI_PATH
            try:
                import uvloop

                runner: Callable[[Any], Any] = uvloop.run
            except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
                runner = asyncio.run
            if args.warmup > 0:
                runner(_run_load(port, path, token, body_maker, args.warmup, args.concurrency))
            results, elapsed = runner(
                _run_load(port, path, token, body_maker, args.seconds, args.concurrency)
            )
            stats = httpx.get(f"http://127.0.0.1:{port}/_sim/stats", timeout=10).json()
        finally:
            server.terminate()
            server.wait(timeout=10)

    rate = results.completed / elapsed if elapsed else 0.0
    report = {
        "seconds": round(elapsed, 2),
        "concurrency": args.concurrency,
        "calls": results.completed,
        "calls_per_second": round(rate, 1),
        "latency_ms_p50": round(_percentile(results.latencies, 0.50) * 1000, 2),
        "latency_ms_p90": round(_percentile(results.latencies, 0.90) * 1000, 2),
        "latency_ms_p99": round(_percentile(results.latencies, 0.99) * 1000, 2),
        "latency_ms_mean": round(statistics.fmean(results.latencies) * 1000, 2)
        if results.latencies
        else 0.0,
        "errors": len(results.errors),
        "server_push_outcomes": stats.get("calls", {}).get("BILL.PUSH", {}),
        "double_issue": stats.get("doubleIssue"),
        "auto_invoice": args.auto_invoice,
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(
            f"BILL.PUSH {report['calls_per_second']} calls/s over {report['seconds']} s"
            f" ({report['calls']} calls, {args.concurrency} connections,"
            f" autoInvoice={'1' if args.auto_invoice else '0'})"
        )
        print(
            f"latency p50 {report['latency_ms_p50']} ms, p90 {report['latency_ms_p90']} ms,"
            f" p99 {report['latency_ms_p99']} ms, mean {report['latency_ms_mean']} ms"
        )
        print(f"errors {report['errors']}; server counted {report['server_push_outcomes']}")
        for error in results.errors[:5]:
            print(f"  error: {error}")
    if results.errors:
        return 1
    if args.min_rate and rate < args.min_rate:
        print(f"below the required {args.min_rate} calls/s", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
