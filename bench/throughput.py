"""Throughput, side by side in one run: the bridge, raw Celery no-ops, a competent
non-durable loop, a naive sync loop.

    .venv/bin/python -m bench.throughput [--documents 2000] [--concurrency 4] [--strict]

One stack (``bench.stack``: private PostgreSQL and Redis, the simulator with a 20 ms latency
fault on every cloud call, callbacks on, one worker with ``--concurrency`` prefork processes):

| lane | measures | documents/s means |
|---|---|---|
| bridge | ``POST /v1/documents`` (batches of 500) until all are ``invoiced`` | end to end |
| raw Celery | ``bench.noop_app`` no-op tasks on the same Redis, same concurrency | tasks/s |
| competent | ``bench.competent``: one cached token, 32 threads, push, query until | end to end |
| | issued; no database, nothing durable (the simulator drops its callbacks) | |
| naive | ``bench.naive``: login before every push, one bill at a time, query | end to end |
| | until issued | |

Also printed: cloud calls per invoiced document (simulator counters), token calls
(getAppToken + login), and CPU milliseconds per invoiced document by process (user + system
from ``/proc``, sampled before and after the lane: ``BenchStack.cpu_by_process``), with the
sum over the bridge's own processes (worker incl. prefork children, API, PostgreSQL, Redis)
and, for the competent lane, its own process and the simulator.
Targets: bridge ≥ 0.5 × competent, ≥ 10 × naive and ≥ 0.5 × raw Celery; ``--strict``
exits 2 when one is missed (timings are ratios within this run, never absolute).
Exit 1 when the bridge lane does not invoice every document or the invariants break.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.competent import run_competent
from bench.invariants import check_invariants, quiet_cloud_view
from bench.naive import run_naive
from bench.noop_app import COUNTER_KEY, NOOP_QUEUE, NOOP_TASK, create_noop_app
from bench.stack import REPO_ROOT, BenchOptions, BenchStack, running_bench_stack
from bench.workload import bench_bills, cpu_seconds, post_batches, wait_settled
from demo.processes import wait_for_log
from schemas.settings import Settings
from store.db import make_engine

__all__ = ["main"]

NAIVE_TARGET = 10.0
RAW_TARGET = 0.5
COMPETENT_TARGET = 0.5
# The processes that are the bridge (what durability costs); the simulator is the cloud, the
# load generator the ERP, beat a scheduler listed on its own.
BRIDGE_PROCESSES = ("worker", "api", "postgres", "redis-server")


def _per_document(
    before: dict[str, float], after: dict[str, float], documents: int
) -> dict[str, float]:
    """CPU milliseconds per document by process between two ``cpu_by_process`` samples."""
    return {
        name: round((used - before.get(name, 0.0)) * 1000 / max(1, documents), 2)
        for name, used in sorted(after.items())
    }


def _call_counts(stats: dict[str, Any]) -> Counter[str]:
    return Counter({k: sum(v.values()) for k, v in stats.get("calls", {}).items()})


def server_counters(stack: BenchStack) -> Counter[str]:
    """Redis commands by name (``INFO commandstats``) and PostgreSQL transaction and row
    counters of the bridge's database (``pg_stat_database``), so far.

    The harness's own status polls are read-only transactions that end in a rollback, so
    ``pg xact_commit`` counts the bridge's commits (an autocommit statement is one).
    """
    counters: Counter[str] = Counter()
    client = stack.redis()
    try:
        for name, stats in client.info("commandstats").items():
            counters[f"redis {name.removeprefix('cmdstat_')}"] = int(stats["calls"])
    finally:
        client.close()
    engine = make_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_stat_force_next_flush()"))
                row = conn.execute(
                    text(
                        "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated,"
                        " tup_deleted FROM pg_stat_database WHERE datname = current_database()"
                    )
                ).one()
                for key, value in row._mapping.items():
                    counters[f"pg {key}"] = int(value)
    finally:
        engine.dispose()
    return counters


def _counters_per_document(
    before: Counter[str], after: Counter[str], documents: int
) -> dict[str, float]:
    changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    return {
        k: round(v / max(1, documents), 2)
        for k, v in sorted(changed.items(), key=lambda item: (-item[1], item[0]))
    }


def bridge_lane(stack: BenchStack, n: int, batch: int, timeout: float) -> dict[str, Any]:
    run_id = os.urandom(3).hex()
    prefix = f"B{run_id}-"
    bills = bench_bills(run_id, n, stack.specs)
    engine = make_engine(stack.database_url)
    calls0 = _call_counts(stack.sim_stats())
    pids = stack.worker_pids()
    cpu0 = cpu_seconds(pids)
    counters0 = server_counters(stack)
    by_process0 = stack.cpu_by_process()
    started = time.perf_counter()
    with stack.api() as api:
        accepted, refused = post_batches(api, bills, batch)
    submitted = time.perf_counter() - started
    done, counts = wait_settled(engine, prefix, n, {"invoiced"}, timeout=timeout, interval=0.2)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pids) - cpu0
    by_process = stack.cpu_by_process()
    calls = _call_counts(stack.sim_stats()) - calls0
    engine.dispose()
    invoiced = counts.get("invoiced", 0)
    counters = _counters_per_document(counters0, server_counters(stack), invoiced)
    shares = _per_document(by_process0, by_process, invoiced)
    return {
        "documents": n,
        "accepted": accepted,
        "refused": refused[:3],
        "invoiced": invoiced,
        "all_invoiced": done,
        "submit_seconds": round(submitted, 2),
        "seconds": round(elapsed, 2),
        "rate": round(invoiced / elapsed, 1),
        "cloud_calls": dict(calls),
        "cloud_calls_per_document": round(sum(calls.values()) / max(1, invoiced), 2),
        "token_calls": calls["getAppToken"] + calls["login"],
        "worker_cpu_ms_per_document": round(cpu * 1000 / max(1, invoiced), 2),
        "cpu_ms_per_document_by_process": shares,
        "bridge_cpu_ms_per_document": round(
            sum(ms for name, ms in shares.items() if name in BRIDGE_PROCESSES), 2
        ),
        "all_cpu_ms_per_document": round(sum(shares.values()), 2),
        "server_counters_per_document": counters,
    }


def raw_celery_lane(stack: BenchStack, n: int, timeout: float) -> dict[str, Any]:
    options = stack.options
    worker = stack.processes.start(
        "noop-worker",
        [options.python, "-m", "celery", "-A", "bench.noop_app", "worker", "--loglevel=INFO",
         f"--concurrency={options.concurrency}", f"--pool={options.pool}", "-Q", NOOP_QUEUE,
         "--hostname=noop@%h"],
        env=stack.env, log_path=stack.logs / "noop-worker.log", cwd=REPO_ROOT,
    )  # fmt: skip
    wait_for_log(worker, "ready", timeout=60)
    settings = Settings(
        broker_url=stack.redis_url,
        redis_url=stack.redis_url,
        database_url=stack.database_url,
        tenants_file=stack.tenants_file,
        environment="development",
    )
    app = create_noop_app(settings)
    client = stack.redis()
    client.delete(COUNTER_KEY)
    by_process0 = stack.cpu_by_process()
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(n):
            app.send_task(NOOP_TASK, args=(i,), queue=NOOP_QUEUE, producer=producer)
    sent = time.perf_counter() - started
    deadline = time.monotonic() + timeout
    while int(client.get(COUNTER_KEY) or 0) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    done = int(client.get(COUNTER_KEY) or 0)
    client.close()
    # What Celery itself costs per task (no-op body): the floor under every bridge task.
    shares = _per_document(by_process0, stack.cpu_by_process(), done)
    return {
        "tasks": n,
        "done": done,
        "send_seconds": round(sent, 2),
        "seconds": round(elapsed, 2),
        "rate": round(done / elapsed, 1),
        "cpu_ms_per_task_by_process": {k: v for k, v in shares.items() if v},
    }


def competent_lane(stack: BenchStack, n: int, threads: int) -> dict[str, Any]:
    spec = stack.specs[0]
    bills = bench_bills(os.urandom(3).hex(), n, [spec])
    # The competent loop polls and registers no callback receiver: the simulator drops its
    # bills' callbacks, so the bridge's API and worker stay idle during this lane.
    with stack.sim() as sim:
        body = {"dropCallbacks": [str(b["billNo"]) for b in bills]}
        sim.patch("/_sim/bill-rules", json=body).raise_for_status()
    base = stack.simulator_url + str(spec["path"])
    by_process0 = stack.cpu_by_process()
    result = run_competent(base, spec, bills, threads=threads)
    by_process = stack.cpu_by_process()
    shares = _per_document(by_process0, by_process, result.invoiced)
    return {
        "documents": n,
        "threads": threads,
        "invoiced": result.invoiced,
        "seconds": round(result.seconds, 2),
        "rate": round(result.rate, 1),
        "cloud_calls": dict(result.calls),
        "cloud_calls_per_document": round(sum(result.calls.values()) / max(1, result.invoiced), 2),
        "token_calls": result.calls["getAppToken"] + result.calls["login"],
        "own_cpu_ms_per_document": round(result.cpu_seconds * 1000 / max(1, result.invoiced), 2),
        "cpu_ms_per_document_by_process": shares,
        "errors": result.errors[:3],
    }


def naive_lane(stack: BenchStack, n: int) -> dict[str, Any]:
    spec = stack.specs[0]
    bills = bench_bills(os.urandom(3).hex(), n, [spec])
    base = stack.simulator_url + str(spec["path"])
    result = run_naive(base, spec, bills)
    return {
        "documents": n,
        "invoiced": result.invoiced,
        "seconds": round(result.seconds, 2),
        "rate": round(result.rate, 1),
        "cloud_calls": dict(result.calls),
        "cloud_calls_per_document": round(sum(result.calls.values()) / max(1, result.invoiced), 2),
        "token_calls": result.calls["getAppToken"] + result.calls["login"],
        "errors": result.errors[:3],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", "-n", type=int, default=2000)
    parser.add_argument("--raw-tasks", type=int, default=4000)
    parser.add_argument("--naive-documents", type=int, default=100)
    parser.add_argument("--competent-documents", type=int, default=1000)
    parser.add_argument("--competent-threads", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4, help="prefork processes")
    parser.add_argument("--pool", default="prefork", help="celery --pool of the bridge worker")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--issue-delay", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="fapiao-throughput-", dir=args.workdir))
    options = BenchOptions(
        workdir=workdir,
        faults={"latency_ms": args.latency_ms},
        issue_delay=args.issue_delay,
        concurrency=args.concurrency,
        pool=args.pool,
    )
    with running_bench_stack(options) as stack:
        warm = bridge_lane(stack, 20, 20, 60)  # tokens cached, connections open, code paged in
        if not warm["all_invoiced"]:
            print(f"warm-up failed: {warm}", file=sys.stderr)
            return 1
        bridge = bridge_lane(stack, args.documents, args.batch, args.timeout)
        engine = make_engine(stack.database_url)
        report = check_invariants(engine, cloud=quiet_cloud_view(stack.simulator_url, engine))
        engine.dispose()
        raw = raw_celery_lane(stack, args.raw_tasks, args.timeout)
        competent = competent_lane(stack, args.competent_documents, args.competent_threads)
        naive = naive_lane(stack, args.naive_documents)
    ratios = {
        "bridge_vs_competent": (
            round(bridge["rate"] / competent["rate"], 3) if competent["rate"] else None
        ),
        "bridge_vs_naive": round(bridge["rate"] / naive["rate"], 2) if naive["rate"] else None,
        "bridge_vs_raw_celery": round(bridge["rate"] / raw["rate"], 3) if raw["rate"] else None,
    }
    missed = []
    if ratios["bridge_vs_competent"] is None or ratios["bridge_vs_competent"] < COMPETENT_TARGET:
        missed.append(f"bridge/competent {ratios['bridge_vs_competent']} < {COMPETENT_TARGET}")
    if ratios["bridge_vs_naive"] is None or ratios["bridge_vs_naive"] < NAIVE_TARGET:
        missed.append(f"bridge/naive {ratios['bridge_vs_naive']} < {NAIVE_TARGET}")
    if ratios["bridge_vs_raw_celery"] is None or ratios["bridge_vs_raw_celery"] < RAW_TARGET:
        missed.append(f"bridge/raw Celery {ratios['bridge_vs_raw_celery']} < {RAW_TARGET}")
    figures = {
        "concurrency": args.concurrency,
        "pool": args.pool,
        "latency_ms": args.latency_ms,
        "bridge": bridge,
        "raw_celery": raw,
        "competent": competent,
        "naive": naive,
        "ratios": ratios,
        "targets_missed": missed,
        "invariants": report.as_json(),
    }
    if args.json:
        print(json.dumps(figures, ensure_ascii=False, default=str))
    else:
        print(
            f"cloud latency {args.latency_ms} ms per call,"
            f" worker --pool={args.pool} -c {args.concurrency}"
        )
        print(
            f"bridge     {bridge['rate']:>8} documents/s"
            f" ({bridge['invoiced']}/{bridge['documents']}"
            f" invoiced in {bridge['seconds']} s; submit took {bridge['submit_seconds']} s)"
        )
        print(
            f"raw Celery {raw['rate']:>8} no-op tasks/s ({raw['done']} in {raw['seconds']} s;"
            f" CPU ms per task: {raw['cpu_ms_per_task_by_process']})"
        )
        print(
            f"competent  {competent['rate']:>8} documents/s"
            f" ({competent['invoiced']}/{competent['documents']} in {competent['seconds']} s,"
            f" {competent['threads']} threads)"
        )
        print(
            f"naive      {naive['rate']:>8} documents/s ({naive['invoiced']}/{naive['documents']}"
            f" in {naive['seconds']} s)"
        )
        print(f"ratios: {ratios}")
        print(
            f"cloud calls per invoiced document: bridge {bridge['cloud_calls_per_document']}"
            f" {bridge['cloud_calls']}; competent {competent['cloud_calls_per_document']};"
            f" naive {naive['cloud_calls_per_document']}"
        )
        print(
            f"token calls: bridge {bridge['token_calls']}, competent {competent['token_calls']},"
            f" naive {naive['token_calls']}"
        )
        print(f"worker CPU per document: {bridge['worker_cpu_ms_per_document']} ms")
        counted = bridge["server_counters_per_document"]
        print(
            "Redis commands and PostgreSQL counters per invoiced document: "
            + ", ".join(f"{k} {v}" for k, v in counted.items() if v >= 0.05)
        )
        print("\n".join(cpu_table(bridge, competent)))
        print("\n".join(report.summary_lines()))
        for item in missed:
            print(f"TARGET MISSED: {item}")
    if args.results:
        args.results.write_text(json.dumps(figures, ensure_ascii=False, indent=1, default=str))
    if not bridge["all_invoiced"] or not report.ok:
        return 1
    return 2 if args.strict and missed else 0


def cpu_table(bridge: dict[str, Any], competent: dict[str, Any]) -> list[str]:
    """CPU ms per invoiced document by process, bridge lane beside competent lane."""
    ours = bridge["cpu_ms_per_document_by_process"]
    theirs = competent["cpu_ms_per_document_by_process"]
    cores = os.cpu_count() or 1
    names = [n for n in sorted(set(ours) | set(theirs)) if ours.get(n) or theirs.get(n)]
    names.sort(key=lambda n: n not in BRIDGE_PROCESSES)
    row = "  {:<40} {:>11} {:>14}"
    lines = [
        "CPU per invoiced document by process (ms, user+system from /proc):",
        row.format("process", "bridge lane", "competent lane"),
    ]
    lines += [row.format(n, f"{ours.get(n, 0.0):.2f}", f"{theirs.get(n, 0.0):.2f}") for n in names]
    whole = bridge["all_cpu_ms_per_document"]
    lines += [
        row.format(
            "bridge: " + "+".join(BRIDGE_PROCESSES),
            f"{bridge['bridge_cpu_ms_per_document']:.2f}",
            "",
        ),
        row.format("all processes", f"{whole:.2f}", f"{sum(theirs.values()):.2f}")
        + f"  → {cores} cores carry at most {cores * 1000 / max(whole, 0.001):.0f} bridge"
        " documents/s",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
