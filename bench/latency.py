"""Latency under a steady load: p50/p95/p99 from submit to ``pushed`` at 50 documents/s.

    .venv/bin/python -m bench.latency [--rate 50] [--seconds 30] [--concurrency 4]

The stack as in ``bench.throughput`` (simulator latency fault 20 ms per call, callbacks on).
One document per ``POST /v1/documents`` request, sent on a fixed schedule (``--rate`` per
second, open loop: a slow answer does not delay the next send). Latencies come from the
database's own clock: the ``submit`` event's ``created_at`` to the event that entered
``pushed`` (and to ``invoiced``), so the load generator's scheduling is not measured.

Prints p50/p90/p95/p99/max for submit→pushed and submit→invoiced, the achieved send rate, the
p50 submit→pushed of the first and of the last quarter of the documents (a queue that grows
shows as a later quarter slower than the first), and whether the rate was **held**: sent at
≥ 95 % of the offered rate, p99 submit→pushed ≤ ``--max-p99-ms`` (default 500 ms), and the
last quarter's p50 no more than twice the first's (+ 50 ms). Also the CPU milliseconds per
invoiced document by process (``BenchStack.cpu_by_process``, from the first send to the
last document invoiced).
Exit 1 if a document never reached ``pushed``; ``--strict`` exits 2 when the rate was not held.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.stack import BenchOptions, BenchStack, running_bench_stack
from bench.workload import bench_bills, percentile, post_batches, wait_settled
from store.db import make_engine
from store.models import Document, DocumentEvent

__all__ = ["main"]


HELD_SEND_SHARE = 0.95


def _latencies(stack: BenchStack, prefix: str) -> dict[str, list[float]]:
    """submit→pushed and submit→invoiced seconds, each list in the order of submission."""
    engine = make_engine(stack.database_url)
    query = (
        select(DocumentEvent.document_id, DocumentEvent.to_status, DocumentEvent.event,
               DocumentEvent.created_at)
        .join(Document, Document.id == DocumentEvent.document_id)
        .where(Document.bill_no.startswith(prefix), DocumentEvent.outcome == "applied")
        .order_by(DocumentEvent.id)
    )  # fmt: skip
    submitted: dict[int, Any] = {}
    pushed: dict[int, float] = {}
    invoiced: dict[int, float] = {}
    with engine.connect() as conn:
        for doc_id, to_status, event, at in conn.execute(query):
            if event == "submit":
                submitted[doc_id] = at
            elif to_status == "pushed" and doc_id in submitted and doc_id not in pushed:
                pushed[doc_id] = (at - submitted[doc_id]).total_seconds()
            elif to_status == "invoiced" and doc_id in submitted:
                invoiced[doc_id] = (at - submitted[doc_id]).total_seconds()
    engine.dispose()
    order = sorted(submitted, key=lambda doc: (submitted[doc], doc))
    return {
        "pushed": [pushed[doc] for doc in order if doc in pushed],
        "invoiced": [invoiced[doc] for doc in order if doc in invoiced],
    }


def _trend(values: list[float]) -> dict[str, float]:
    """p50 of the first and the last quarter (in submission order), milliseconds."""
    quarter = max(1, len(values) // 4)
    return {
        "first_quarter_p50_ms": round(percentile(values[:quarter], 0.5) * 1000, 1),
        "last_quarter_p50_ms": round(percentile(values[-quarter:], 0.5) * 1000, 1),
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 0.50) * 1000, 1),
        "p90_ms": round(percentile(values, 0.90) * 1000, 1),
        "p95_ms": round(percentile(values, 0.95) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "max_ms": round(max(values, default=0.0) * 1000, 1),
    }


def offer_load(stack: BenchStack, rate: float, seconds: float) -> tuple[str, int, float]:
    """Send one document per request at ``rate``/s for ``seconds``; (prefix, sent, real rate)."""
    run_id = os.urandom(3).hex()
    n = int(rate * seconds)
    bills = bench_bills(run_id, n, stack.specs)
    clients = [stack.api() for _ in range(8)]
    started = time.perf_counter()

    def send(index: int) -> int:
        due = started + index / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        accepted, _ = post_batches(clients[index % len(clients)], [bills[index]], 1)
        return accepted

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        sent = sum(pool.map(send, range(n)))
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    return f"B{run_id}-", sent, sent / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="documents per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--issue-delay", type=float, default=0.05)
    parser.add_argument("--max-p99-ms", type=float, default=500.0)
    parser.add_argument("--strict", action="store_true", help="exit 2 when the rate was not held")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fapiao-latency-", dir=args.workdir))
    options = BenchOptions(
        workdir=workdir,
        faults={"latency_ms": args.latency_ms},
        issue_delay=args.issue_delay,
        concurrency=args.concurrency,
    )
    with running_bench_stack(options) as stack:
        offer_load(stack, args.rate, 2.0)  # warm-up: tokens, connections
        engine = make_engine(stack.database_url)
        by_process0 = stack.cpu_by_process()
        prefix, sent, real_rate = offer_load(stack, args.rate, args.seconds)
        _done, counts = wait_settled(engine, prefix, sent, {"invoiced"}, timeout=120)
        by_process = stack.cpu_by_process()
        engine.dispose()
        found = _latencies(stack, prefix)
    invoiced = counts.get("invoiced", 0)
    shares = {
        name: round((used - by_process0.get(name, 0.0)) * 1000 / max(1, invoiced), 2)
        for name, used in sorted(by_process.items())
    }
    pushed = _summary(found["pushed"])
    trend = _trend(found["pushed"])
    held = (
        real_rate >= HELD_SEND_SHARE * args.rate
        and len(found["pushed"]) >= sent
        and pushed["p99_ms"] <= args.max_p99_ms
        and trend["last_quarter_p50_ms"] <= 2 * trend["first_quarter_p50_ms"] + 50
    )
    figures = {
        "offered_rate": args.rate,
        "achieved_send_rate": round(real_rate, 1),
        "documents": sent,
        "submit_to_pushed": pushed,
        "submit_to_pushed_trend": trend,
        "submit_to_invoiced": _summary(found["invoiced"]),
        "max_p99_ms": args.max_p99_ms,
        "rate_held": held,
        "cpu_ms_per_document_by_process": shares,
        "final": counts,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"{sent} documents at {figures['achieved_send_rate']}/s"
            f" (offered {args.rate}/s, one per request)"
        )
        print(f"submit → pushed:   {pushed}")
        print(f"submit → pushed p50, first / last quarter: {trend}")
        print(f"submit → invoiced: {figures['submit_to_invoiced']}")
        print(
            f"rate held: {'yes' if held else 'NO'} (sent ≥ {HELD_SEND_SHARE:.0%} of offered,"
            f" p99 pushed ≤ {args.max_p99_ms:.0f} ms, no growing queue)"
        )
        parts = ", ".join(f"{name} {ms}" for name, ms in shares.items())
        print(f"CPU per invoiced document by process (ms): {parts}")
    if args.results:
        args.results.write_text(json.dumps(figures, indent=1))
    if len(found["pushed"]) < sent:
        print(f"only {len(found['pushed'])}/{sent} documents reached pushed", file=sys.stderr)
        return 1
    if args.strict and not held:
        print(f"TARGET MISSED: {args.rate}/s not held (p99 pushed {pushed['p99_ms']} ms)")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
