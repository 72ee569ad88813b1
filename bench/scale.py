"""Scale: sweep and poll selection at 10,000 and at 1,000,000 stored documents; worker RSS.

    .venv/bin/python -m bench.scale [--large 1000000] [--small 10000] [--rss-documents 3000]

Database part — a private PostgreSQL cluster (``bench.pgcluster``) and a database created for
the run and dropped after it; the schema is the migrations' (``store.migrate.upgrade``).
Documents are loaded with ``COPY`` in the shape a long-running bridge accumulates:

| share | state | due column |
|---|---|---|
| 96 % | ``invoiced`` (terminal) | none |
| 1 % | ``draft`` | ``next_attempt_at``: half due, half in the future |
| 1 % | ``pushed`` | ``next_poll_at``: half due |
| 0.5 % | ``in_doubt`` | ``next_poll_at``: half due |
| 0.5 % | ``pushing`` | ``lease_expires_at``: half expired |
| 1 % | ``failed`` / ``rejected`` | none |

The same claim queries the worker runs (``store.queries.due_drafts``, ``due_for_poll``,
``expired_leases``, ``due_withdrawals``; LIMIT 100) are timed at ``--small`` documents and
again at ``--large`` (each run in a transaction that is rolled back, median of
``--repeat``), the ratio printed, and each statement's ``EXPLAIN (ANALYZE, BUFFERS)`` plan
printed at the large size (are the partial indexes used?).

Worker part — ``--rss-documents`` documents through a real stack (``bench.stack``); the
resident memory of the worker and its prefork children after the warm-up, after N and
after 2N documents (growth would show a leak). ``--rss-documents 0`` skips it.
Exit 1 when a plan scans ``documents`` sequentially at the large size; ``--strict`` exits 2
when a query is more than ``--max-ratio`` times slower at the large size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from bench.pgcluster import PgCluster, private_postgres
from bench.stack import BenchOptions, running_bench_stack
from bench.workload import bench_bills, post_batches, rss_bytes, wait_settled
from store.db import make_engine, make_session_factory
from store.migrate import upgrade
from store.queries import due_drafts, due_for_poll, due_withdrawals, expired_leases

__all__ = ["main"]

COLUMNS = (
    "tenant", "seller_tax_id", "bill_no", "revision", "is_current", "content_hash", "status",
    "version", "push_attempt", "lease_expires_at", "next_attempt_at", "next_poll_at",
    "poll_count", "in_doubt_since", "invoice_type", "total_amount", "total_incl_tax",
    "total_tax", "issued_amount", "payload", "created_at", "updated_at", "status_changed_at",
)  # fmt: skip

QUERIES: dict[str, Callable[[Session], Any]] = {
    "due_drafts": lambda s: due_drafts(s, limit=100),
    "due_for_poll": lambda s: due_for_poll(s, limit=100),
    "expired_leases": lambda s: expired_leases(s, limit=100),
    "due_withdrawals": lambda s: due_withdrawals(s, limit=100),
}


def _state_for(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.96:
        return "invoiced"
    if roll < 0.97:
        return "draft"
    if roll < 0.98:
        return "pushed"
    if roll < 0.985:
        return "in_doubt"
    if roll < 0.99:
        return "pushing"
    return "failed" if roll < 0.995 else "rejected"


def load_documents(dsn: str, start: int, count: int, seed: int = 7) -> float:
    """COPY ``count`` documents numbered from ``start``; returns rows per second."""
    rng = random.Random(seed + start)
    now = datetime.now(UTC)
    past, future = now - timedelta(minutes=5), now + timedelta(hours=1)
    payload_template = (
        '{"billNo": "%s", "billDate": "2025-11-24", "invoiceType": "10xdp", "includeTaxFlag":'
        ' "0", "totalAmount": "100.00", "buyerName": "上海示例贸易有限公司", "sellerTaxpayerId":'
        ' "91310000SIM0000001", "billDetail": [{"detailId": "1", "lineProperty": 2, "goodsName":'
        ' "软件开发服务", "taxRate": "0.13", "amount": "100.00", "taxAmount": "13.00"}]}'
    )
    started = time.perf_counter()
    sql = f"COPY documents ({', '.join(COLUMNS)}) FROM STDIN"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(sql) as copy:
        for i in range(start, start + count):
            status = _state_for(rng)
            due = past if rng.random() < 0.5 else future
            bill_no = f"S{i:09d}"
            copy.write_row(
                (
                    "demo", "91310000SIM0000001", bill_no, 1, True, f"h{i}", status, 3,
                    1 if status != "draft" else 0,
                    due if status == "pushing" else None,
                    due if status == "draft" else None,
                    due if status in ("pushed", "in_doubt") else None,
                    0, now if status == "in_doubt" else None, "10xdp",
                    "100.00", "113.00", "13.00",
                    "100.00" if status == "invoiced" else "0.00",
                    payload_template % bill_no, now, now, now,
                )
            )  # fmt: skip
    elapsed = time.perf_counter() - started
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE documents")
    return count / elapsed


def _capture_sql(engine: Engine) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    return seen


def time_queries(engine: Engine, repeat: int) -> dict[str, float]:
    """Median milliseconds of each claim query (rolled back, so every run sees the same rows)."""
    sessions = make_session_factory(engine)
    result: dict[str, float] = {}
    for name, query in QUERIES.items():
        samples = []
        for _ in range(repeat):
            with sessions() as session:
                started = time.perf_counter()
                query(session)
                samples.append(time.perf_counter() - started)
                session.rollback()
        result[name] = round(statistics.median(samples) * 1000, 3)
    return result


def explain_queries(engine: Engine) -> dict[str, str]:
    sessions = make_session_factory(engine)
    seen = _capture_sql(engine)
    plans: dict[str, str] = {}
    for name, query in QUERIES.items():
        with sessions() as session:
            seen.clear()
            query(session)
            session.rollback()
        statement, parameters = next((s, p) for s, p in seen if s.lstrip().startswith("UPDATE"))
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            cursor = raw.cursor()
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters)
            plans[name] = "\n".join(row[0] for row in cursor.fetchall())
            raw.rollback()
    return plans


def database_part(cluster: PgCluster, small: int, large: int, repeat: int) -> dict[str, Any]:
    name = "scale_" + os.urandom(3).hex()
    url = cluster.create_database(name)
    try:
        upgrade(url)
        dsn = cluster.dsn(name)
        rate_small = load_documents(dsn, 0, small)
        engine = make_engine(url)
        time_queries(engine, 3)  # warm the caches
        at_small = time_queries(engine, repeat)
        rate_large = load_documents(dsn, small, large - small)
        engine.dispose()
        engine = make_engine(url)
        time_queries(engine, 3)
        at_large = time_queries(engine, repeat)
        plans = explain_queries(engine)
        with engine.connect() as conn:
            size = conn.exec_driver_sql(
                "SELECT pg_size_pretty(pg_total_relation_size('documents'))"
            ).scalar_one()
        engine.dispose()
    finally:
        cluster.drop_database(name)
    return {
        "small": small,
        "large": large,
        "copy_rows_per_second": {"small": round(rate_small), "large": round(rate_large)},
        "documents_table_size": size,
        "ms_at_small": at_small,
        "ms_at_large": at_large,
        "ratio": {
            k: round(at_large[k] / at_small[k], 2) if at_small[k] else None for k in at_small
        },
        "plans": plans,
        "seq_scans": [k for k, plan in plans.items() if "Seq Scan on documents" in plan],
    }


def worker_part(n: int, workdir: Path) -> dict[str, Any]:
    options = BenchOptions(workdir=workdir, faults={"latency_ms": 5.0}, issue_delay=0.05)
    samples: dict[str, int] = {}
    with running_bench_stack(options) as stack:
        engine = make_engine(stack.database_url)
        rounds = (("after warm-up (200)", 200), (f"after {n}", n), (f"after {2 * n}", n))
        for label, count in rounds:
            run_id = os.urandom(3).hex()
            with stack.api() as api:
                post_batches(api, bench_bills(run_id, count, stack.specs), 500)
            wait_settled(engine, f"B{run_id}-", count, {"invoiced"}, timeout=600)
            samples[label] = sum(rss_bytes(stack.worker_pids()).values())
        processes = len(stack.worker_pids())
        engine.dispose()
    return {
        "processes": processes,
        "rss_mib": {k: round(v / 2**20, 1) for k, v in samples.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rss-documents", type=int, default=3000)
    parser.add_argument("--max-ratio", type=float, default=3.0)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fapiao-scale-", dir=args.workdir))
    with private_postgres() as cluster:
        db = database_part(cluster, args.small, args.large, args.repeat)
    worker = worker_part(args.rss_documents, workdir) if args.rss_documents else None
    figures = {"database": db, "worker": worker}
    if args.json:
        print(json.dumps(figures, ensure_ascii=False))
    else:
        print(
            f"documents: {db['small']} then {db['large']} (table {db['documents_table_size']},"
            f" COPY {db['copy_rows_per_second']['large']} rows/s)"
        )
        print(f"{'query':<16} {'ms @small':>10} {'ms @large':>10} {'ratio':>7}")
        for name in QUERIES:
            print(
                f"{name:<16} {db['ms_at_small'][name]:>10} {db['ms_at_large'][name]:>10}"
                f" {db['ratio'][name]!s:>7}"
            )
        for name, plan in db["plans"].items():
            print(f"\n-- EXPLAIN {name} at {db['large']} documents\n{plan}")
        if worker is not None:
            print(f"\nworker RSS ({worker['processes']} processes): {worker['rss_mib']} MiB")
    if args.results:
        args.results.write_text(json.dumps(figures, ensure_ascii=False, indent=1))
    if db["seq_scans"]:
        print(f"SEQUENTIAL SCAN in {db['seq_scans']}")
        return 1
    slow = [k for k, v in db["ratio"].items() if v is not None and v > args.max_ratio]
    if args.strict and slow:
        print(f"TARGET MISSED: {slow} more than {args.max_ratio}× slower")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
