"""Where the API's CPU goes, per one-document request and per Kingdee callback.

    .venv/bin/python -m bench.profile_api [-n 500] [--rate 50] [--top 25] [--no-profile]

The stack of ``bench.latency`` (``bench.stack``: private PostgreSQL and Redis, the simulator
with 20 ms per call and issuance 50 ms after a push, one worker, beat), with the API process
(``fapiao api``, uvicorn) run under ``bench.cprofile_threads``: every thread profiled by its
own CPU clock, the event loop and the threadpool alike. Polls are pushed out to 600 s
(``FAPIAO_POLL__*``) so that only callbacks invoice the documents.

| phase | what the API receives | profile |
|---|---|---|
| warm-up | 20 documents, one per request, and their callbacks | forgotten (``SIGUSR2``) |
| intake | ``-n`` one-document ``POST /v1/documents`` at ``--rate`` per second (a) | ``.prof.1`` |
| callbacks | the same bills' callback bodies, sent by the harness at ``--rate`` (b) | ``.prof.2`` |

(a) An array of one document, as ``bench.latency`` sends; open loop (a slow answer does not
delay the next). The simulator drops these bills' callbacks (``dropCallbacks``) and keeps
their bodies. (b) To ``POST /callbacks/kingdee/{secret}`` with the simulator's content type;
each must be ACKed; the worker reconciles them (the documents end ``invoiced``).

So each phase is one kind of request only. For each phase it prints the request rate, the CPU
per request of every process of the stack (from ``/proc``: the API's figure is inflated by the
profiler; ``--no-profile`` runs the API plainly for real figures; the worker's share is what it
did meanwhile: pushes in the intake phase, reconciles in the callback phase), and from the
profile: the API's SQL statements, commits, BEGINs and pings per request
(``bench.profile_worker.call_counts``), own CPU by library and the heaviest functions
(cumulative and own), in CPU milliseconds per request.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.profile_worker import call_counts, categories
from bench.stack import REPO_ROOT, BenchOptions, BenchStack, running_bench_stack
from bench.workload import bench_bills, post_batches, wait_settled
from demo.processes import ManagedProcess
from schemas.kingdee import is_ack
from store.db import make_engine

__all__ = ["main"]

WARM_UP = 20


def _at_rate(count: int, rate: float, workers: int, send: Callable[[int], bool]) -> float:
    """Call ``send(i)`` for i < count on a fixed schedule (open loop); the rate achieved."""
    started = time.perf_counter()

    def one(index: int) -> bool:
        pause = started + index / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        return send(index)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        answered = sum(pool.map(one, range(count)))
    elapsed = time.perf_counter() - started
    if answered != count:
        raise RuntimeError(f"{count - answered} of {count} requests were not answered as expected")
    return count / elapsed


def _send_documents(stack: BenchStack, bills: list[dict[str, Any]], rate: float) -> float:
    clients = [stack.api() for _ in range(8)]
    try:
        return _at_rate(
            len(bills),
            rate,
            len(clients),
            lambda i: post_batches(clients[i % len(clients)], [bills[i]], 1)[0] == 1,
        )
    finally:
        for client in clients:
            client.close()


def _send_callbacks(stack: BenchStack, bodies: list[bytes], rate: float) -> float:
    url = f"{stack.api_url}/callbacks/kingdee/{stack.callback_secret}"
    clients = [httpx.Client(timeout=60.0) for _ in range(8)]
    headers = {"content-type": "application/json; charset=utf-8"}

    def send(index: int) -> bool:
        answer = clients[index % len(clients)].post(url, content=bodies[index], headers=headers)
        return answer.status_code == 200 and is_ack(answer.content)

    try:
        return _at_rate(len(bodies), rate, len(clients), send)
    finally:
        for client in clients:
            client.close()


def _dropped_bodies(stack: BenchStack, prefix: str, n: int, timeout: float) -> list[bytes]:
    """The bodies of the callbacks the simulator dropped for this run's bills (one a bill)."""
    deadline = time.monotonic() + timeout
    while True:
        with stack.sim() as sim:
            rows = sim.get("/_sim/callbacks", params={"state": "dropped"}).json()
        found = {row["billNo"]: row["body"] for row in rows if row["billNo"].startswith(prefix)}
        if len(found) >= n:
            return [found[bill_no].encode("utf-8") for bill_no in sorted(found)]
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(found)}/{n} callbacks were produced")
        time.sleep(0.5)


class _Phase:
    """CPU by process (``BenchStack.cpu_by_process``) from the start of one phase."""

    def __init__(self, stack: BenchStack) -> None:
        self.stack = stack
        self.cpu0 = stack.cpu_by_process()

    def end(self, requests: int) -> dict[str, float]:
        """CPU milliseconds per request by process since the start."""
        cpu = self.stack.cpu_by_process()
        return {
            name: round((used - self.cpu0.get(name, 0.0)) * 1000 / requests, 2)
            for name, used in sorted(cpu.items())
        }


def _signal_and_wait(process: ManagedProcess, path: Path, timeout: float = 60.0) -> None:
    """SIGUSR1 the profiled API and wait until it wrote ``path``."""
    os.kill(process.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    size = -1
    while True:
        if path.exists() and path.stat().st_size == size and size > 0:
            return
        size = path.stat().st_size if path.exists() else -1
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API wrote no profile to {path}")
        time.sleep(0.3)


def _where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    path = filename.replace("\\", "/")
    for marker in ("site-packages/", f"{REPO_ROOT.as_posix()}/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{line}({name})"


def _report(title: str, profile: Path | None, requests: int, top: int, **figures: Any) -> None:
    print(f"\n=== {title} ===")
    for name, value in figures.items():
        print(f"{name}: {value}")
    if profile is None:
        return
    stats = pstats.Stats(str(profile))
    counts = call_counts(stats)
    print(
        "per request, from the profile: "
        + ", ".join(f"{name} {n / requests:.2f}" for name, n in counts.items())
    )
    groups = categories(stats)
    total = sum(groups.values())
    print(f"profiled CPU (every thread): {total * 1000 / requests:.2f} ms per request")
    print("own CPU by library, ms per request:")
    for name, seconds in sorted(groups.items(), key=lambda item: -item[1]):
        ms = seconds * 1000 / requests
        if ms >= 0.01:
            print(f"  {name:<46} {ms:7.3f}  ({seconds / total:5.1%})")
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for label, column in (("cumulative", 3), ("own", 2)):
        rows = sorted(table.items(), key=lambda item: -item[1][column])[:top]
        print(f"heaviest by {label} CPU (ms per request: cumulative, own; calls per request):")
        for func, (_cc, ncalls, tottime, cumtime, _callers) in rows:
            print(
                f"  {cumtime * 1000 / requests:7.3f} {tottime * 1000 / requests:7.3f}"
                f" {ncalls / requests:7.2f}  {_where(func)}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", "-n", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-profile", action="store_true", help="run the API plainly")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fapiao-profile-api-", dir=args.workdir))
    profile = workdir / "api.prof"
    options = BenchOptions(
        workdir=workdir,
        faults={"latency_ms": 20.0},
        issue_delay=0.05,
        concurrency=4,
        api_wrapper=() if args.no_profile else ("-m", "bench.cprofile_threads", str(profile)),
        settings={"FAPIAO_POLL__SCHEDULE_SECONDS": "600", "FAPIAO_POLL__CAP_SECONDS": "600"},
    )
    n = args.documents
    with running_bench_stack(options) as stack:
        api = next(p for p in stack.processes.processes if p.name == "api")
        engine = make_engine(stack.database_url)
        warm_id = os.urandom(3).hex()
        _send_documents(stack, bench_bills(warm_id, WARM_UP, stack.specs), args.rate)
        wait_settled(engine, f"B{warm_id}-", WARM_UP, {"invoiced"}, timeout=120)

        run_id = os.urandom(3).hex()
        prefix = f"B{run_id}-"
        bills = bench_bills(run_id, n, stack.specs)
        with stack.sim() as sim:
            rule = {"dropCallbacks": [str(bill["billNo"]) for bill in bills]}
            sim.put("/_sim/bill-rules", json=rule).raise_for_status()
        if not args.no_profile:
            os.kill(api.pid, signal.SIGUSR2)  # start-up and warm-up out of the profile
        phase = _Phase(stack)
        intake_rate = _send_documents(stack, bills, args.rate)
        time.sleep(0.5)  # the last responses' background tasks (the pushes' enqueue)
        intake_cpu = phase.end(n)
        if not args.no_profile:
            _signal_and_wait(api, Path(f"{profile}.1"))
        bodies = _dropped_bodies(stack, prefix, n, timeout=300)
        wait_settled(engine, prefix, n, {"pushed"}, timeout=300)

        phase = _Phase(stack)
        callback_rate = _send_callbacks(stack, bodies, args.rate)
        done, counts = wait_settled(engine, prefix, n, {"invoiced"}, timeout=300)
        callback_cpu = phase.end(n)
        if not args.no_profile:
            _signal_and_wait(api, Path(f"{profile}.2"))
        engine.dispose()
    _report(
        f"intake: {n} one-document POST /v1/documents",
        None if args.no_profile else Path(f"{profile}.1"),
        n,
        args.top,
        rate=f"{intake_rate:.1f}/s (offered {args.rate}/s)",
        cpu_ms_per_request_by_process=intake_cpu,
    )
    _report(
        f"callbacks: {n} POST /callbacks/kingdee/{{secret}}",
        None if args.no_profile else Path(f"{profile}.2"),
        n,
        args.top,
        rate=f"{callback_rate:.1f}/s (offered {args.rate}/s)",
        cpu_ms_per_request_by_process=callback_cpu,
        final=counts,
    )
    print(f"\nprofiles and logs: {workdir}")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
