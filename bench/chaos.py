"""Chaos run: documents through a faulty cloud while workers die, Redis empties, PG restarts.

    .venv/bin/python -m bench.chaos            # 5,000 documents
    .venv/bin/python -m bench.chaos --quick    # 300 documents, same disruptions

Everything runs on a private PostgreSQL cluster and a private redis-server (``bench.stack``),
so restarting and flushing them disturbs nothing else on the machine.

| simulator fault (``bench.stack`` → ``--faults``) | value |
|---|---|
| ``push_5xx_before`` (HTTP 502, nothing stored) | 10 % of BILL.PUSH |
| ``drop_after_commit`` (bill stored, connection dropped: timeout) | 5 % of BILL.PUSH |
| token lifetime (``--token-ttl``) | 20 s: every token expires under the run |
| ``callback_duplicate`` / ``callback_drop`` / ``callback_reorder`` | 20 % / 20 % / 5 % |

| disruption | when (first of: share of documents settled, seconds since the first submit) |
|---|---|
| worker SIGKILLed (whole process group), restarted 1 s later | 10 % / 6 s |
| Redis ``FLUSHALL`` (queues, token cache, locks, rate windows gone) | 25 % / 12 s |
| worker SIGKILLed | 40 % / 18 s |
| PostgreSQL ``pg_ctl restart -m fast`` | 55 % / 24 s |
| worker SIGKILLed | 70 % / 30 s |

Documents are submitted over HTTP in batches while this happens (a batch refused with 503
during the database restart is sent again: identical content is idempotent). At the end
``bench.invariants`` checks the database and the simulator. Exit status: 0 all invariants
hold, 1 an invariant broke, 2 not every document settled before ``--timeout``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, insert, select

from bench.invariants import check_invariants, cloud_view
from bench.stack import BenchOptions, BenchStack, running_bench_stack
from bench.workload import SETTLED, bench_bills, status_counts
from schemas.money import dumps_exact
from store.db import make_engine
from store.models import Document, Invoice

__all__ = ["CHAOS_FAULTS", "main"]

CHAOS_FAULTS: dict[str, float] = {
    "push_5xx_before": 0.10,
    "drop_after_commit": 0.05,
    "callback_duplicate": 0.20,
    "callback_drop": 0.20,
    "callback_reorder": 0.05,
}
TOKEN_TTL_SECONDS = 20.0


@dataclass
class Disruption:
    name: str
    at_share: float
    at_seconds: float
    act: Callable[[BenchStack], None]
    done_at: float | None = None


def _kill_and_restart(stack: BenchStack) -> None:
    stack.kill_worker(0)
    time.sleep(1.0)
    stack.start_worker(0)


def _disruptions(every: float = 0.0) -> list[Disruption]:
    step = every or 6.0
    return [
        Disruption("worker SIGKILL #1", 0.10, 1 * step, _kill_and_restart),
        Disruption("Redis FLUSHALL", 0.25, 2 * step, lambda s: s.flush_redis()),
        Disruption("worker SIGKILL #2", 0.40, 3 * step, _kill_and_restart),
        Disruption("PostgreSQL restart", 0.55, 4 * step, lambda s: s.restart_postgres()),
        Disruption("worker SIGKILL #3", 0.70, 5 * step, _kill_and_restart),
    ]


def _submit_all(
    stack: BenchStack, bills: list[dict[str, Any]], batch: int, rate: float, log: list[str]
) -> None:
    """Submit every bill, retrying a batch until each item is accepted or unchanged."""
    with stack.api() as api:
        started = time.monotonic()
        for index, start in enumerate(range(0, len(bills), batch)):
            pause = started + index * batch / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            body = dumps_exact(bills[start : start + batch]).encode("utf-8")
            for _attempt in range(120):
                try:
                    response = api.post(
                        "/v1/documents",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                except httpx.HTTPError as exc:
                    log.append(f"batch {index}: {type(exc).__name__}, sent again")
                    time.sleep(0.5)
                    continue
                results = response.json().get("results", []) if response.status_code < 500 else []
                if response.status_code in (202, 207) and all(
                    r.get("status_code") in (200, 202) for r in results
                ):
                    break
                log.append(f"batch {index}: HTTP {response.status_code}, sent again")
                time.sleep(0.5)
            else:
                log.append(f"batch {index}: gave up after 120 attempts")


def _issue_one_document_twice(engine: Engine, prefix: str) -> None:
    """``--sabotage``: a second issued invoice from another push attempt (the checker's test)."""
    with engine.begin() as conn:
        doc = conn.execute(
            select(Document.id, Document.total_amount, Document.total_incl_tax)
            .where(Document.bill_no.startswith(prefix), Document.status == "invoiced")
            .limit(1)
        ).one()
        conn.execute(
            insert(Invoice).values(
                document_id=doc.id, push_attempt=99, order_no="SABOTAGE", invoice_code="",
                invoice_num="SABOTAGE-1", total_amount=doc.total_amount,
                include_tax_amount=doc.total_incl_tax,
            )
        )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    n = args.documents
    run_id = os.urandom(3).hex()
    prefix = f"B{run_id}-"
    workdir = Path(tempfile.mkdtemp(prefix="fapiao-chaos-", dir=args.workdir))
    faults = dict(CHAOS_FAULTS)
    for spec in args.fault:
        name, _, value = spec.partition("=")
        faults[name.strip()] = float(value or 1)
    options = BenchOptions(
        workdir=workdir,
        faults=faults,
        seed=args.seed,
        issue_delay=args.issue_delay,
        token_ttl=TOKEN_TTL_SECONDS,
        workers=1,
        concurrency=args.concurrency,
    )
    print(f"chaos run {run_id}: {n} documents, work directory {workdir}", flush=True)
    with running_bench_stack(options) as stack:
        bills = bench_bills(run_id, n, stack.specs)
        submit_log: list[str] = []
        submitter = threading.Thread(
            target=_submit_all, args=(stack, bills, args.batch, args.submit_rate, submit_log)
        )
        engine = make_engine(stack.database_url, pool_pre_ping=True)
        started = time.monotonic()
        submitter.start()
        pending = _disruptions(args.disrupt_every)
        deadline = started + args.timeout
        counts: dict[str, int] = {}
        last_print = 0.0
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            with contextlib.suppress(Exception):
                counts = status_counts(engine, prefix)
            settled = sum(v for k, v in counts.items() if k in SETTLED)
            for item in pending:
                if item.done_at is None and (
                    settled >= item.at_share * n or now - started >= item.at_seconds
                ):
                    print(f"  {now - started:6.1f} s  {item.name} ({settled}/{n} settled)",
                          flush=True)  # fmt: skip
                    item.act(stack)
                    item.done_at = time.monotonic() - started
                    break
            if now - last_print >= 5:
                last_print = now
                print(f"  {now - started:6.1f} s  {dict(sorted(counts.items()))}", flush=True)
            if settled >= n and all(item.done_at is not None for item in pending):
                break
            if now >= deadline:
                break
        submitter.join(timeout=60)
        elapsed = time.monotonic() - started
        all_settled = sum(v for k, v in counts.items() if k in SETTLED) >= n
        time.sleep(args.quiet_seconds)  # late callbacks and polls land before judging
        kills = sum(1 for item in pending if "SIGKILL" in item.name and item.done_at)
        if args.sabotage:
            _issue_one_document_twice(engine, prefix)
        report = check_invariants(
            engine,
            expected=[str(b["billNo"]) for b in bills],
            cloud=cloud_view(stack.simulator_url),
            ledger_slack=kills * args.concurrency,
        )
        stats = stack.sim_stats()
        engine.dispose()
    calls = {name: sum(v.values()) for name, v in stats.get("calls", {}).items()}
    figures: dict[str, Any] = {
        "documents": n,
        "settled": all_settled,
        "seconds": round(elapsed, 1),
        "documents_per_second": round(n / elapsed, 1) if elapsed else 0.0,
        "by_status": report.by_status,
        "disruptions": {item.name: item.done_at and round(item.done_at, 1) for item in pending},
        "cloud_calls": stats.get("calls", {}),
        "cloud_calls_per_document": {k: round(v / n, 2) for k, v in calls.items()},
        "callbacks": stats.get("callbacks", {}),
        "double_issue": stats.get("doubleIssue", {}),
        "ledger": report.ledger,
        "violations": {k: v for k, v in report.violations.items() if v},
        "submit_retries": len(submit_log),
    }
    if args.json:
        print(json.dumps(figures, ensure_ascii=False, default=str))
    else:
        print(f"\n{n} documents in {figures['seconds']} s; settled: {all_settled}")
        print(f"disruptions at (s): {figures['disruptions']}")
        print(f"cloud calls per document: {figures['cloud_calls_per_document']}")
        print(f"callbacks: {figures['callbacks']}")
        print(f"submit batches sent again: {len(submit_log)}")
        print("\n".join(report.summary_lines()))
    if args.results:
        args.results.write_text(json.dumps(figures, ensure_ascii=False, indent=1, default=str))
    if not report.ok:
        return 1
    return 0 if all_settled else 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", "-n", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="300 documents")
    parser.add_argument("--batch", type=int, default=100, help="documents per HTTP request")
    parser.add_argument("--submit-rate", type=float, default=150.0, help="documents/s offered")
    parser.add_argument("--concurrency", type=int, default=4, help="prefork processes")
    parser.add_argument("--issue-delay", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--quiet-seconds", type=float, default=3.0)
    parser.add_argument("--workdir", default=None, help="parent of the run's temp directory")
    parser.add_argument("--results", type=Path, help="write the figures as JSON here")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra or changed simulator fault (repeatable), e.g. issue_fail=0.05",
    )
    parser.add_argument(
        "--sabotage",
        action="store_true",
        help="(tests) issue one document twice in the database before checking: must exit 1",
    )
    parser.add_argument(
        "--disrupt-every",
        type=float,
        default=0.0,
        help="seconds between disruptions (default: the table's schedule)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.documents = 300
        args.timeout = min(args.timeout, 300.0)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
