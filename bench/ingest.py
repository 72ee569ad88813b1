"""Ingestion: how fast ``POST /v1/documents`` stores and enqueues a 10,000-document load.

    .venv/bin/python -m bench.ingest [--documents 10000] [--batch 1000] [--clients 1]
                                     [--api-workers 1] [--strict]

The stack (``bench.stack``) runs the HTTP app (``fapiao api``, ``--api-workers`` uvicorn
processes: ``FAPIAO_API_WORKERS``) on a private PostgreSQL and Redis; no worker runs, so the
figure is intake alone: validation, one transaction per request, and the after-commit enqueue
of the pushes. The API accepts at most 1,000 documents per request (a 10,000 batch is
answered 413, which this harness checks and reports), so the load goes as ``--documents /
--batch`` requests from ``--clients`` concurrent connections (one keep-alive connection is
served by one API process: use as many clients as API workers). Every document must come back
202 and be in the database as a ``draft`` with its push owed on the ``push`` queue.

| figure | how |
|---|---|
| documents/s | accepted documents ÷ wall time from the first request to the last response |
| API CPU per document | user+system CPU of every API process (the process group) ÷ documents |
| stored | current ``draft`` documents of this run, counted in PostgreSQL |
| queued | documents owed by the ``push`` queue's messages, waited for until stable: |
| | ``fapiao.push`` counts 1, ``fapiao.push_batch`` its ``document_ids`` |

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
from bench.workload import (
    bench_bills,
    cpu_seconds,
    group_pids,
    post_batches,
    queued_documents,
    status_counts,
)
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
    api_pids = group_pids(api_pid)  # the API leads its own session: its workers are in it
    cpu0 = cpu_seconds(api_pids)
    started = time.perf_counter()

    def send(part: list[dict[str, Any]]) -> tuple[int, list[str]]:
        with stack.api() as api:
            return post_batches(api, part, batch)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(send, per_client))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(api_pids) - cpu0
    accepted = sum(r[0] for r in results)
    refused = [text for r in results for text in r[1]]
    engine = make_engine(stack.database_url)
    stored = status_counts(engine, f"B{run_id}-").get("draft", 0)
    engine.dispose()
    # The push messages are sent after each response (after the commit): let the last land.
    client = stack.redis()
    (queued, messages), deadline = (-1, 0), time.monotonic() + 15
    while time.monotonic() < deadline:
        now_queued, messages = queued_documents(client, "push")
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
        "api_processes": len(api_pids),
        "accepted": accepted,
        "stored_as_draft": stored,
        "push_documents_queued": queued,
        "push_messages": messages,
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
    parser.add_argument(
        "--api-workers", type=int, default=1, help="uvicorn processes of fapiao api (--workers)"
    )
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fapiao-ingest-", dir=args.workdir))
    options = BenchOptions(
        workdir=workdir,
        workers=0,
        beat=False,
        callbacks=False,
        settings={"FAPIAO_API_WORKERS": str(args.api_workers)},
    )
    with running_bench_stack(options) as stack:
        # Warm-up: a batch per client, so every API process a connection lands on has served
        # one before the measured run.
        warm_clients = max(args.clients, args.api_workers)
        warm = min(args.documents, args.batch) * warm_clients
        measure(stack, warm, args.batch, warm_clients)
        stack.flush_redis()
        whole = _one_request_of(stack, args.documents) if args.documents > 1000 else None
        stack.flush_redis()
        result = measure(stack, args.documents, args.batch, args.clients)
    result["single_request_of_all_documents"] = whole
    result["api_workers"] = args.api_workers
    complete = result["accepted"] == args.documents == result["stored_as_draft"]
    complete = complete and result["push_documents_queued"] == args.documents
    missed = result["rate"] < TARGET
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(
            f"ingested {result['accepted']}/{args.documents} documents in {result['seconds']} s:"
            f" {result['rate']} documents/s (batches of {args.batch}, {args.clients} client(s),"
            f" {result['api_workers']} API process(es))"
        )
        print(
            f"stored as draft {result['stored_as_draft']}, pushes queued for"
            f" {result['push_documents_queued']} documents in {result['push_messages']}"
            f" message(s), API CPU {result['api_cpu_ms_per_document']} ms per document"
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
