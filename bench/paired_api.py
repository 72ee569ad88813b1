"""Two versions of the API side by side, requests alternated: CPU per request of each.

    git archive main | tar -x -C /tmp/base        # the version to compare against
    .venv/bin/python -m bench.paired_api /tmp/base . [-n 500] [--rounds 3]

On a shared machine the CPU a request costs moves by ±30 % from one minute to the next, more
than most changes save, so two runs one after the other compare badly. Here both versions run
at once (``fapiao api`` from each source tree, both with this interpreter and its packages,
``PYTHONPATH`` = the tree), each on its own fresh database (``bench.pgcluster``) and its own
Redis database (one private ``redis-server``), and every request goes to A, then the same to
B: both see the same machine. No worker runs.

| phase | what each API receives, one request at a time |
|---|---|
| warm-up | 50 documents and their callbacks |
| intake (per round) | ``-n`` one-document ``POST /v1/documents`` (a) |
| callbacks (per round) | those documents set ``pushed``, then one callback each (b) |

(a) An array of one document, as ``bench.latency`` sends. (b) A per-bill ``INVOICE.OPEN``
with ``data`` in BASE64 (``producers.testing.callback_body``).

Prints, per round and as a mean, the API process's CPU (``/proc``: user + system, every
thread) per request of A and B and B's difference.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import text

from bench.pgcluster import private_postgres
from bench.stack import base_env
from bench.workload import cpu_seconds
from demo.processes import free_port
from producers.testing import (
    SELLER_DEMO,
    bill_json,
    bridge_tenants,
    callback_body,
    make_bill,
    write_tenants_toml,
)
from store.db import make_engine

__all__ = ["main"]

WARM_UP = 50


def _item(bill_no: str, number: int) -> dict[str, Any]:
    invoice = f"2533{number:016d}"
    return {
        "billNo": bill_no,
        "sellerTaxpayerId": SELLER_DEMO,
        "orderNo": f"ORD-{invoice}",
        "invoiceCode": "",
        "invoiceNum": invoice,
        "invoiceDate": "2025-09-06",
        "invoiceStatus": "0",
        "invoiceType": "10xdp",
        "totalAmount": "100.00",
        "totalTaxAmount": "6.00",
        "includeTaxAmount": "106.00",
        "invoicePdfFileUrl": f"https://files.example/{invoice}.pdf",
    }


class _Api:
    """``fapiao api`` from one source tree, on its own database and Redis database."""

    def __init__(self, tree: Path, database_url: str, redis_url: str, workdir: Path) -> None:
        self.database_url = database_url
        self.key, self.secret = "k-" + secrets.token_hex(8), "cb-" + secrets.token_hex(8)
        tenants = write_tenants_toml(workdir / "tenants.toml", bridge_tenants())
        env = base_env(database_url, redis_url, tenants, self.key, self.secret)
        env.update({"PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"})
        subprocess.run(
            [sys.executable, "-m", "producers.cli", "db", "upgrade"],
            env=env, cwd=tree, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        port = free_port()
        self.log = (workdir / "api.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "producers.cli", "api", "--host", "127.0.0.1", "--port",
             str(port), "--log-level", "warning"],
            env=env, cwd=tree, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the API of {tree} did not start (see {workdir}/api.log)")
            time.sleep(0.1)
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {self.key}"})

    def cpu(self) -> float:
        return cpu_seconds([self.process.pid])

    def document(self, body: bytes) -> None:
        answer = self.client.post(
            "/v1/documents", content=body, headers={"Content-Type": "application/json"}
        )
        if answer.status_code != 202:
            raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:300]}")

    def callback(self, body: bytes) -> None:
        answer = self.client.post(
            f"/callbacks/kingdee/{self.secret}",
            content=body,
            headers={"content-type": "application/json; charset=utf-8"},
        )
        if answer.status_code != 200:
            raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:300]}")

    def set_pushed(self, prefix: str) -> None:
        engine = make_engine(self.database_url)
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE documents SET status = 'pushed' WHERE bill_no LIKE :p"),
                {"p": prefix + "%"},
            )
        engine.dispose()

    def close(self) -> None:
        self.client.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _round(apis: list[_Api], prefix: str, n: int, start: int) -> tuple[list[float], list[float]]:
    """n documents, then n callbacks, alternated between the APIs; CPU ms per request each."""
    documents = [b"[" + bill_json(make_bill(f"{prefix}-{i:05d}", seller=SELLER_DEMO)) + b"]"
                 for i in range(n)]  # fmt: skip
    before = [api.cpu() for api in apis]
    for body in documents:
        for api in apis:
            api.document(body)
    time.sleep(0.3)  # the last responses' background tasks
    intake = [(api.cpu() - t) * 1000 / n for api, t in zip(apis, before, strict=True)]
    for api in apis:
        api.set_pushed(prefix)
    bodies = [callback_body([_item(f"{prefix}-{i:05d}", start + i)]) for i in range(n)]
    before = [api.cpu() for api in apis]
    for body in bodies:
        for api in apis:
            api.callback(body)
    time.sleep(0.3)
    callbacks = [(api.cpu() - t) * 1000 / n for api, t in zip(apis, before, strict=True)]
    return intake, callbacks


def _line(label: str, intake: list[float], callbacks: list[float]) -> str:
    return (
        f"{label}: intake A {intake[0]:.3f} B {intake[1]:.3f} ({intake[1] / intake[0] - 1:+.1%})"
        f" | callbacks A {callbacks[0]:.3f} B {callbacks[1]:.3f}"
        f" ({callbacks[1] / callbacks[0] - 1:+.1%}) ms CPU per request"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="source tree of version A (the reference)")
    parser.add_argument("b", type=Path, help="source tree of version B")
    parser.add_argument("--documents", "-n", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is not installed / 未安装redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="fapiao-paired-api-"))
    with ExitStack() as exits:
        postgres = exits.enter_context(private_postgres())
        port = free_port()
        server = subprocess.Popen(
            [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        exits.callback(server.wait, 10)
        exits.callback(server.terminate)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        apis: list[_Api] = []
        for index, tree in enumerate((args.a, args.b)):
            name = "ab"[index]
            (workdir / name).mkdir()
            api = _Api(
                tree.resolve(),
                postgres.create_database(f"paired_{name}"),
                f"redis://127.0.0.1:{port}/{index}",
                workdir / name,
            )
            exits.callback(api.close)
            apis.append(api)
        _round(apis, "W" + secrets.token_hex(2), WARM_UP, 0)
        totals = [[0.0, 0.0], [0.0, 0.0]]
        for number in range(args.rounds):
            intake, callbacks = _round(
                apis, "M" + secrets.token_hex(2), args.documents, (number + 1) * 10**6
            )
            print(_line(f"round {number + 1}", intake, callbacks), flush=True)
            for k in range(2):
                totals[0][k] += intake[k] / args.rounds
                totals[1][k] += callbacks[k] / args.rounds
        print(_line(f"mean of {args.rounds}", totals[0], totals[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
