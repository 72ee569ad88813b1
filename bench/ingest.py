"""Ingestion: how fast ``POST /v1/documents`` stores and enqueues a 10,000-document load.

    .venv/bin/python -m bench.ingest [--documents 10000] [--batch 1000] [--clients 1] [--strict]

The stack (``bench.stack``) runs the HTTP app (one uvicorn process, as ``fapiao api``) on a
private PostgreSQL and Redis; no worker runs, so the figure is intake alone: validation,
one transaction per request with a SAVEPOINT per document, and the after-commit enqueue of
``fapiao.push``. The API accepts at most 1,000 documents per request (a 10,000 batch is
answered 413, which this harness checks and reports), so the load goes as ``--documents /
--batch`` requests from ``--clients`` concurrent connections. Every document must come back
202 and be in the database as a ``draft`` with its push message on the ``push`` queue.

Target: ≥ 2,000 documents/s; ``--strict`` exits 2 below it. Exit 1 if a document is missing.
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

from bench.stack import BenchOptions, BenchStack, running_bench_stack
from bench.workload import bench_bills, cpu_seconds, post_batches, status_counts
from schemas.money import dumps_exact
from store.db import make_engine

__all__ = ["main"]

TARGET = 2000.0


def _one_request_of(stack: BenchStack, n: int) -> int:
    """Status code of a single request carrying ``n`` documents (expect 413 above 1,000)."""
    bills = bench_bills(os.urandom(3).hex(), n, stack.specs)
    with stack.api() as api:
        response = api.post(
            "/v1/documents",
            content=dumps_exact(bills).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
    return response.status_code


def measure(stack: BenchStack, n: int, batch: int, clients: int) -> dict[str, Any]:
    run_id = os.urandom(3).hex()
    bills = bench_bills(run_id, n, stack.specs)
    # Whole batches dealt to the clients in turn.
    per_client: list[list[dict[str, Any]]] = [[] for _ in range(clients)]
    for index, start in enumerate(range(0, n, batch)):
        per_client[index % clients].extend(bills[start : start + batch])
    api_pid = next(p.pid for p in stack.processes.processes if p.name == "api")
    cpu0 = cpu_seconds([api_pid])
    started = time.perf_counter()

    def send(part: list[dict[str, Any]]) -> tuple[int, list[str]]:
        with stack.api() as api:
            return post_batches(api, part, batch)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(send, per_client))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds([api_pid]) - cpu0
    accepted = sum(r[0] for r in results)
    refused = [text for r in results for text in r[1]]
    engine = make_engine(stack.database_url)
    stored = status_counts(engine, f"B{run_id}-").get("draft", 0)
    engine.dispose()
    # The push messages are sent after each response (after the commit): let the last land.
    client = stack.redis()
    queued, deadline = -1, time.monotonic() + 15
    while time.monotonic() < deadline:
        now_queued = int(client.llen("push"))
        if now_queued == queued or now_queued >= n:
            queued = now_queued
            break
        queued = now_queued
        time.sleep(0.5)
    client.close()
    return {
        "documents": n,
        "batch": batch,
        "clients": clients,
        "accepted": accepted,
        "stored_as_draft": stored,
        "push_messages_queued": queued,
        "refused": refused[:3],
        "seconds": round(elapsed, 2),
        "rate": round(accepted / elapsed, 1) if elapsed else 0.0,
        "api_cpu_ms_per_document": round(cpu * 1000 / max(1, accepted), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", "-n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fapiao-ingest-", dir=args.workdir))
    options = BenchOptions(workdir=workdir, workers=0, beat=False, callbacks=False)
    with running_bench_stack(options) as stack:
        measure(stack, min(1000, args.documents), args.batch, 1)  # warm-up
        stack.flush_redis()
        whole = _one_request_of(stack, args.documents) if args.documents > 1000 else None
        stack.flush_redis()
        result = measure(stack, args.documents, args.batch, args.clients)
    result["single_request_of_all_documents"] = whole
    complete = result["accepted"] == args.documents == result["stored_as_draft"]
    complete = complete and result["push_messages_queued"] == args.documents
    missed = result["rate"] < TARGET
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(
            f"ingested {result['accepted']}/{args.documents} documents in {result['seconds']} s:"
            f" {result['rate']} documents/s (batches of {args.batch}, {args.clients} client(s))"
        )
        print(
            f"stored as draft {result['stored_as_draft']}, push messages queued"
            f" {result['push_messages_queued']}, API CPU {result['api_cpu_ms_per_document']} ms"
            " per document"
        )
        if whole is not None:
            print(f"one request of {args.documents} documents: HTTP {whole}")
        if missed:
            print(f"TARGET MISSED: {result['rate']} < {TARGET} documents/s")
    if args.results:
        args.results.write_text(json.dumps(result, ensure_ascii=False, indent=1))
    if not complete:
        print(f"INCOMPLETE: {result}", file=sys.stderr)
        return 1
    return 2 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
