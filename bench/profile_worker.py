"""Where a worker's CPU goes: one solo worker under cProfile while N documents are invoiced.

    .venv/bin/python -m bench.profile_worker [--documents 500] [--top 30]

The stack of ``bench.throughput`` (20 ms cloud latency, callbacks on) without its worker;
instead ``python -m cProfile -m celery -A worker worker -P solo`` runs every task in one
process, is stopped with SIGTERM (warm shutdown, so the profile is written) once every
document is ``invoiced``, and the heaviest functions are printed (cumulative and own time)
with the CPU milliseconds per document. py-spy is not installed; cProfile's overhead
inflates absolute numbers (roughly 1.5–2×) but not the ranking.

``--cpu-clock`` profiles with the process's CPU clock (``bench.cprofile_cpu``) instead of the
wall clock, so waiting on the cloud or the database is not counted as a function's time; the
``tottime`` of every function is then summed by library (``categories``) and printed as CPU
milliseconds per document, largest first — optionally scaled (``--scale-to MS``) so that the
total matches a worker CPU per document measured without the profiler (``bench.throughput``).

Then the database traffic per document, counted from the profile's call counts:

| figure      | counted calls of                                              |
|-------------|---------------------------------------------------------------|
| tasks       | ``celery.app.trace.trace_task``                               |
| statements  | ``psycopg.Cursor.execute`` (pings included)                   |
| pings       | SQLAlchemy's psycopg ``do_ping`` (pre-ping / liveness check)  |
| commits     | ``psycopg.Connection.commit`` (a no-op in autocommit)         |
| BEGINs      | psycopg's ``_get_tx_start_command``: one per ``BEGIN`` sent,  |
|             | i.e. per transaction (autocommit statements send none)        |
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.stack import REPO_ROOT, BenchOptions, running_bench_stack
from bench.workload import bench_bills, cpu_seconds, post_batches, wait_settled
from demo.processes import wait_for_log
from store.db import make_engine

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", "-n", type=int, default=500)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--cpu-clock", action="store_true", help="time functions by CPU used")
    parser.add_argument(
        "--scale-to", type=float, default=0.0, help="worker CPU ms/document without profiler"
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fapiao-profile-", dir=args.workdir))
    profile = workdir / "worker.prof"
    options = BenchOptions(workdir=workdir, faults={"latency_ms": 20.0}, issue_delay=0.05,
                           workers=0)  # fmt: skip
    with running_bench_stack(options) as stack:
        worker = stack.processes.start(
            "profiled-worker",
            [options.python, "-m",
             *(["bench.cprofile_cpu", str(profile)] if args.cpu_clock
               else ["cProfile", "-o", str(profile)]),
             "-m", "celery", "-A", "worker", "worker", "-P", "solo", "--loglevel=INFO",
             "-Q", "push,poll,callbacks,erp,maintenance", "--hostname=profiled@%h"],
            env=stack.env, log_path=stack.logs / "profiled-worker.log", cwd=REPO_ROOT,
        )  # fmt: skip
        wait_for_log(worker, " ready.", timeout=60)
        if args.cpu_clock:
            os.kill(worker.pid, signal.SIGUSR2)  # start-up and imports out of the profile
        run_id = os.urandom(3).hex()
        engine = make_engine(stack.database_url)
        cpu0 = cpu_seconds([worker.pid])
        with stack.api() as api:
            post_batches(api, bench_bills(run_id, args.documents, stack.specs), 500)
        done, counts = wait_settled(
            engine, f"B{run_id}-", args.documents, {"invoiced"}, timeout=600
        )
        cpu = cpu_seconds([worker.pid]) - cpu0
        engine.dispose()
        os.kill(worker.pid, signal.SIGTERM)
        worker.popen.wait(timeout=60)
    print(f"{args.documents} documents, all invoiced: {done} {counts}")
    print(f"solo worker CPU under cProfile: {cpu * 1000 / args.documents:.1f} ms per document")
    counts = call_counts(pstats.Stats(str(profile)))
    print(
        "per document: "
        + ", ".join(f"{name} {n / args.documents:.2f}" for name, n in counts.items())
        + f"  (totals: {counts})"
    )
    groups = categories(pstats.Stats(str(profile)))
    total = sum(groups.values())
    scale = args.scale_to / (total * 1000 / args.documents) if args.scale_to and total else 1.0
    clock = "CPU" if args.cpu_clock else "wall-clock"
    print(
        f"\n== own ({clock}) time by library, ms per document"
        + (f", scaled ×{scale:.2f} to {args.scale_to} ms ==" if scale != 1.0 else " ==")
    )
    for name, seconds in sorted(groups.items(), key=lambda item: -item[1]):
        ms = seconds * 1000 / args.documents
        if ms >= 0.05:
            print(f"  {name:<44} {ms * scale:7.2f}  ({seconds / total:5.1%})")
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        stats = pstats.Stats(str(profile), stream=out)
        stats.strip_dirs().sort_stats(order).print_stats(args.top)
        print(f"\n== by {order} ==")
        print("\n".join(out.getvalue().splitlines()[6:]))
    return 0 if done else 1


_COUNTED = {
    "tasks": ("celery/app/trace.py", "trace_task"),
    "statements": ("psycopg/cursor.py", "execute"),
    "pings": ("postgresql/_psycopg_common.py", "do_ping"),
    "commits": ("psycopg/connection.py", "commit"),
    "BEGINs": ("psycopg/_connection_base.py", "_get_tx_start_command"),
}


def call_counts(stats: pstats.Stats) -> dict[str, int]:
    """How often the functions of ``_COUNTED`` were called (module docstring table)."""
    counts = dict.fromkeys(_COUNTED, 0)
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, ncalls, *_rest) in table.items():
        for name, (suffix, wanted) in _COUNTED.items():
            if function == wanted and filename.replace("\\", "/").endswith(suffix):
                counts[name] += ncalls
    return counts


# Own time of a function, by where it lives: (path fragment or builtin-name fragment, group).
# First match wins; builtins (``~``) are matched on their name.
_LIBRARIES: tuple[tuple[str, str], ...] = (
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/psycopg", "psycopg"),
    ("/httpx/", "httpx + httpcore + h11"),
    ("/httpcore/", "httpx + httpcore + h11"),
    ("/h11/", "httpx + httpcore + h11"),
    ("/pydantic", "pydantic"),
    ("/celery/", "Celery"),
    ("/kombu/", "kombu"),
    ("/billiard/", "Celery"),
    ("/vine/", "Celery"),
    ("/redis/", "redis-py"),
    ("/prometheus_client/", "prometheus_client (metrics)"),
    ("/logging/", "logging"),
    ("/json/", "json"),
    ("/worker/", "bridge code: worker/"),
    ("/store/", "bridge code: store/"),
    ("/schemas/", "bridge code: schemas/"),
    ("/producers/", "bridge code: producers/"),
)
_BUILTINS: tuple[tuple[str, str], ...] = (
    ("socket", "syscalls: sockets, poll, select"),
    ("select", "syscalls: sockets, poll, select"),
    ("poll", "syscalls: sockets, poll, select"),
    # cProfile follows the main thread only: the CPU of push_batch's call threads shows up
    # as the main thread waiting for them.
    ("_thread.lock", "threads not profiled (push_batch calls)"),
)


def _library(path: str) -> str:
    name = next((group for key, group in _LIBRARIES if key in path), "")
    if name:
        return name
    if "site-packages/" in path:
        return "site-packages: " + path.split("site-packages/", 1)[1].split("/", 1)[0]
    return "stdlib / other: " + Path(path).stem


def categories(stats: pstats.Stats) -> dict[str, float]:
    """Own time (seconds) of every profiled function, summed by ``_LIBRARIES`` group.

    A builtin (``len``, ``isinstance``, ``str.upper`` …) counts for the library that called
    it, in proportion to the time it spent for each caller; sockets, poll and lock waits are
    groups of their own (``_BUILTINS``).
    """
    groups: dict[str, float] = {}

    def add(name: str, seconds: float) -> None:
        groups[name] = groups.get(name, 0.0) + seconds

    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, tottime, _ct, callers) in table.items():
        path = filename.replace("\\", "/")
        if path != "~":
            add(_library(path), float(tottime))
            continue
        fixed = next((group for key, group in _BUILTINS if key in function), "")
        by_caller = {caller: float(row[2]) for caller, row in callers.items()}
        spent = sum(by_caller.values())
        if fixed or not spent:
            add(fixed or "builtins (caller unknown)", float(tottime))
            continue
        for (caller_file, _l, _function), seconds in by_caller.items():
            caller_path = caller_file.replace("\\", "/")
            name = _library(caller_path) if caller_path != "~" else "builtins (caller unknown)"
            add(name, float(tottime) * seconds / spent)
    return groups


if __name__ == "__main__":
    sys.exit(main())
