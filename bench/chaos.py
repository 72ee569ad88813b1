"""Chaos run: documents through a faulty cloud while workers die, Redis empties, PG restarts.

    .venv/bin/python -m bench.chaos            # 5,000 documents
    .venv/bin/python -m bench.chaos --quick    # 300 documents, same disruptions
    .venv/bin/python -m bench.chaos --quick --dialect merge=when_asked --declare
    .venv/bin/python -m bench.chaos --dialects all   # every dialect value, one small run each

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

Beat must survive every disruption (``worker.beat.ResilientRedBeatScheduler`` takes its lock
and schedule back after the Redis flush; plain redbeat exited there with
``LockNotOwnedError``). If beat exits anyway the run FAILS (exit status 1, ``beat_restarts``
names when); it is started again, as compose's ``restart: unless-stopped`` would, so the run
still finishes and reports everything else.

Contract dialects (``schemas.cloud_contract.DIALECT_SWITCHES``):

| option | effect |
|---|---|
| ``--dialect NAME=VALUE`` (repeatable) | the simulator plays that reading (its ``--dialect``) |
| ``--declare`` / ``--no-declare`` | the tenants file declares every switch of the simulator's |
| | dialect under ``[tenants.cloud]`` / declares nothing (default: the harder case) |
| ``--dialects all`` | the sweep: one run with every default, then one per other value |
| | of every switch (the others default or ``--dialect``), each undeclared and declared |
| | (only one of them with ``--no-declare`` / ``--declare``); one table row per run |

Under ``merge=when_asked`` two of every three documents ask for ``autoMerge=1`` (the cloud
then issues one invoice for several waiting bills of one seller and buyer); elsewhere none
does. Two switches need more than the standard workload to be reached (``EXERCISES``): a run
of ``withdraw_refusal`` asks to withdraw one document in five as soon as it is ``pushed`` (the
cloud may be issuing it or have issued it: refused), a run of ``failed_in_query`` adds
``issue_fail`` 10 %; the sweep runs every value of these two, the default too.

The sweep's runs are small (``--documents`` default 40, disruptions every 2 s; ``--jobs 2``
runs two stacks at a time: about 25 minutes on two busy cores); its exit status is the worst
of its runs (1 over 2 over 0). Each run's work directory (logs, tenants file) is kept.
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
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func, insert, select

from bench.invariants import check_invariants, cloud_view
from bench.stack import BenchOptions, BenchStack, running_bench_stack
from bench.workload import SETTLED, bench_bills, status_counts
from schemas.cloud_contract import DIALECT_SWITCHES, Dialect, DialectError
from schemas.money import dumps_exact
from store.db import make_engine
from store.models import Document, Invoice, InvoiceDocument

__all__ = ["CHAOS_FAULTS", "PlannedRun", "main", "single_plan", "sweep_plan"]

CHAOS_FAULTS: dict[str, float] = {
    "push_5xx_before": 0.10,
    "drop_after_commit": 0.05,
    "callback_duplicate": 0.20,
    "callback_drop": 0.20,
    "callback_reorder": 0.05,
}
TOKEN_TTL_SECONDS = 20.0
SWEEP_DOCUMENTS = 40
SWEEP_DISRUPT_EVERY = 2.0
SWEEP_TIMEOUT = 240.0
DEFAULTS_ROW = "(all defaults)"
# Switches the standard workload never reaches, and what a run sweeping them adds so it
# does (their default value is then run too, with the same addition, for comparison).
EXERCISES: dict[str, str] = {
    "withdraw_refusal": "withdraw 1 in 5 documents once pushed",
    "failed_in_query": "issue_fail 10 %",
}
WITHDRAW_EVERY = 5


@dataclass(frozen=True)
class PlannedRun:
    """One chaos run: the dialect the simulator plays and whether the tenants declare it."""

    switch: str  # the switch this run varies; DEFAULTS_ROW for the run with none varied
    value: str
    declared: bool
    dialect: Dialect
    exercises: tuple[str, ...] = ()  # keys of EXERCISES this run adds

    def simulator_dialect(self) -> dict[str, str]:
        """What the simulator is given (``--dialect NAME=VALUE``): the non-default switches."""
        return self.dialect.differences()

    def simulator_args(self) -> list[str]:
        return [a for k, v in self.simulator_dialect().items() for a in ("--dialect", f"{k}={v}")]

    def tenants_cloud(self) -> dict[str, str]:
        """The ``[tenants.cloud]`` table of every tenant: the whole dialect, or nothing."""
        return self.dialect.as_dict() if self.declared else {}

    @property
    def auto_merge(self) -> bool:
        """Documents ask for ``autoMerge=1`` (only where the cloud may merge)."""
        return self.dialect.merge == "when_asked"


def single_plan(specs: list[str], declared: bool | None) -> PlannedRun:
    """The run of ``--dialect`` (``specs``) without a sweep; undeclared unless asked."""
    dialect = Dialect.parse(specs)
    changed = dialect.differences()
    switch = ",".join(changed) or DEFAULTS_ROW
    value = ",".join(changed.values()) or "-"
    exercises = tuple(name for name in changed if name in EXERCISES)
    return PlannedRun(switch, value, bool(declared), dialect, exercises)


def sweep_plan(specs: list[str], declared: bool | None, switches: str = "all") -> list[PlannedRun]:
    """``--dialects all``: every default once, then every other value of every switch (the
    rest as ``specs`` or default), undeclared then declared (or only ``declared``'s mode).
    A switch of ``EXERCISES`` runs every value, its default too, with its exercise.
    ``switches`` "NAME,NAME" sweeps only those (and no all-defaults run)."""
    base = Dialect.parse(specs)
    modes = (False, True) if declared is None else (declared,)
    chosen = list(DIALECT_SWITCHES) if switches == "all" else switches.split(",")
    for name in chosen:
        if name not in DIALECT_SWITCHES:
            raise DialectError(
                f"unknown dialect switch {name!r}; switches: {', '.join(DIALECT_SWITCHES)}"
            )
    plan = [PlannedRun(DEFAULTS_ROW, "-", mode, base) for mode in modes if switches == "all"]
    for switch in chosen:
        exercises = (switch,) if switch in EXERCISES else ()
        for value in DIALECT_SWITCHES[switch]:
            if value == getattr(base, switch) and not exercises:
                continue  # the all-defaults run is this one
            dialect = base.replace({switch: value})
            plan.extend(PlannedRun(switch, value, mode, dialect, exercises) for mode in modes)
    return plan


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


def _merged_invoices(engine: Engine) -> dict[str, int]:
    """Issued invoices that cover several documents, and how many documents they cover."""
    covering = (
        select(InvoiceDocument.invoice_id, func.count().label("documents"))
        .group_by(InvoiceDocument.invoice_id)
        .having(func.count() > 1)
        .subquery()
    )
    with engine.connect() as conn:
        invoices, documents = conn.execute(
            select(func.count(), func.coalesce(func.sum(covering.c.documents), 0)).select_from(
                covering
            )
        ).one()
    return {"invoices": int(invoices), "documents": int(documents)}


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


def _withdraw_some(
    stack: BenchStack, engine: Engine, bill_nos: list[str], answers: Counter[str], until: float
) -> None:
    """Ask to withdraw each of ``bill_nos`` once it is ``pushed`` (the cloud may be issuing
    it or have issued it already: its refusal is the withdraw_refusal switch's wire shape)."""
    waiting = set(bill_nos)
    with stack.api() as api:
        while waiting and time.monotonic() < until:
            time.sleep(0.2)
            try:
                with engine.connect() as conn:
                    rows = conn.execute(
                        select(Document.bill_no, Document.status).where(
                            Document.is_current.is_(True), Document.bill_no.in_(sorted(waiting))
                        )
                    ).all()
            except Exception:  # the database restart: look again
                continue
            for bill_no, status in rows:
                if status in SETTLED:
                    waiting.discard(bill_no)
                    answers["settled before asked"] += 1
                    continue
                if status != "pushed":
                    continue
                for _attempt in range(20):
                    try:
                        response = api.post(f"/v1/documents/{bill_no}/withdraw")
                    except httpx.HTTPError:
                        time.sleep(0.5)
                        continue
                    if response.status_code < 500:
                        answers[f"HTTP {response.status_code}"] += 1
                        break
                    time.sleep(0.5)
                else:
                    answers["gave up"] += 1
                waiting.discard(bill_no)
    answers["never pushed"] += len(waiting)


def _mark_auto_merge(bills: list[dict[str, Any]]) -> None:
    """Two of every three bills ask the cloud to merge (the third is issued alone)."""
    for index, bill in enumerate(bills):
        if index % 3 != 2:
            bill["autoMerge"] = "1"


def run(args: argparse.Namespace, planned: PlannedRun) -> tuple[int, dict[str, Any]]:
    """One chaos run; (exit status, figures)."""
    n = args.documents
    run_id = os.urandom(3).hex()
    prefix = f"B{run_id}-"
    workdir = Path(tempfile.mkdtemp(prefix="fapiao-chaos-", dir=args.workdir))
    faults = dict(CHAOS_FAULTS)
    if "failed_in_query" in planned.exercises:
        faults["issue_fail"] = 0.10
    for spec in args.fault:
        name, _, value = spec.partition("=")
        faults[name.strip()] = float(value or 1)
    options = BenchOptions(
        workdir=workdir,
        faults=faults,
        dialect=planned.simulator_dialect(),
        tenants_cloud=planned.tenants_cloud(),
        seed=args.seed,
        issue_delay=args.issue_delay,
        token_ttl=TOKEN_TTL_SECONDS,
        workers=1,
        concurrency=args.concurrency,
    )
    print(
        f"chaos run {run_id}: {n} documents, dialect {planned.simulator_dialect() or 'default'},"
        f" {'declared' if planned.declared else 'undeclared'}, work directory {workdir}",
        flush=True,
    )
    beat_restarts: list[str] = []
    tag = f"[{run_id}]" if args.jobs > 1 else ""  # runs overlap: say whose line it is
    begun = time.monotonic()
    with running_bench_stack(options) as stack:
        stack_up = time.monotonic() - begun
        bills = bench_bills(run_id, n, stack.specs)
        if planned.auto_merge:
            _mark_auto_merge(bills)
        submit_log: list[str] = []
        submitter = threading.Thread(
            target=_submit_all, args=(stack, bills, args.batch, args.submit_rate, submit_log)
        )
        engine = make_engine(stack.database_url, pool_pre_ping=True)
        started = time.monotonic()
        submitter.start()
        withdrawals: Counter[str] = Counter()
        withdrawer = None
        if "withdraw_refusal" in planned.exercises:
            withdrawer = threading.Thread(
                target=_withdraw_some,
                args=(stack, engine, [str(b["billNo"]) for b in bills[::WITHDRAW_EVERY]],
                      withdrawals, started + min(args.timeout, 120.0)),
            )  # fmt: skip
            withdrawer.start()
        pending = _disruptions(args.disrupt_every)
        deadline = started + args.timeout
        counts: dict[str, int] = {}
        last_print = 0.0
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            exit_code = stack.restart_beat_if_exited()
            if exit_code is not None:
                beat_restarts.append(f"{now - started:.1f} s (exit {exit_code})")
                print(f"{tag}  {now - started:6.1f} s  beat exited ({exit_code}), started again",
                      flush=True)  # fmt: skip
            with contextlib.suppress(Exception):
                counts = status_counts(engine, prefix)
            settled = sum(v for k, v in counts.items() if k in SETTLED)
            for item in pending:
                if item.done_at is None and (
                    settled >= item.at_share * n or now - started >= item.at_seconds
                ):
                    print(f"{tag}  {now - started:6.1f} s  {item.name} ({settled}/{n} settled)",
                          flush=True)  # fmt: skip
                    item.act(stack)
                    item.done_at = time.monotonic() - started
                    break
            if now - last_print >= 5:
                last_print = now
                print(f"{tag}  {now - started:6.1f} s  {dict(sorted(counts.items()))}", flush=True)
            if settled >= n and all(item.done_at is not None for item in pending):
                break
            if now >= deadline:
                break
        submitter.join(timeout=60)
        if withdrawer is not None:
            withdrawer.join(timeout=130)
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
        merged = _merged_invoices(engine)
        stats = stack.sim_stats()
        engine.dispose()
        stopping = time.monotonic()
    stack_down = time.monotonic() - stopping
    calls = {name: sum(v.values()) for name, v in stats.get("calls", {}).items()}
    figures: dict[str, Any] = {
        "switch": planned.switch,
        "value": planned.value,
        "dialect": planned.simulator_dialect(),
        "declared": planned.declared,
        "work_directory": str(workdir),
        "documents": n,
        "settled": all_settled,
        "seconds": round(elapsed, 1),
        "stack_start_seconds": round(stack_up, 1),
        "stack_stop_seconds": round(stack_down, 1),
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
        "beat_restarts": beat_restarts,
        "merged_invoices": merged,
        "exercises": [EXERCISES[name] for name in planned.exercises],
        "withdraw_requests": dict(withdrawals),
        "ok": report.ok and not beat_restarts,
    }
    if args.json:
        print(json.dumps(figures, ensure_ascii=False, default=str))
    else:
        lines = [
            f"\n{tag}{n} documents in {figures['seconds']} s; settled: {all_settled}"
            f" (stack up in {stack_up:.1f} s, down in {stack_down:.1f} s)",
            f"disruptions at (s): {figures['disruptions']}",
            f"cloud calls per document: {figures['cloud_calls_per_document']}",
            f"callbacks: {figures['callbacks']}",
            f"submit batches sent again: {len(submit_log)}",
            f"beat exited (a failure; started again): {beat_restarts or 'never'}",
            f"withdraw requests: {dict(withdrawals) or 'none'}",
            *report.summary_lines(),
        ]
        print("\n".join(lines), flush=True)  # one write: overlapping runs do not interleave
    if not report.ok or beat_restarts:
        return 1, figures
    return (0 if all_settled else 2), figures


TABLE_HEAD = (
    "| switch | value | declared | documents | invoiced | other terminal states"
    " | invariants | seconds |"
)


def table_row(figures: Mapping[str, Any]) -> str:
    """One Markdown row of the sweep table for a run's figures."""
    by_status: dict[str, int] = dict(figures.get("by_status") or {})
    invoiced: object = by_status.pop("invoiced", 0)
    merged = figures.get("merged_invoices") or {}
    if merged.get("invoices"):
        invoiced = f"{invoiced} ({merged['documents']} on {merged['invoices']} merged invoices)"
    other = ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()) if k in SETTLED)
    unsettled = {k: v for k, v in by_status.items() if k not in SETTLED}
    if "error" in figures:
        verdict = f"ERROR {figures['error']}"
    elif figures.get("violations"):
        verdict = "FAIL " + ", ".join(
            f"{check} ({len(found)})" for check, found in figures["violations"].items()
        )
    else:
        verdict = "OK"
    if unsettled:
        verdict += " (not settled: " + ", ".join(f"{k} {v}" for k, v in unsettled.items()) + ")"
    value = str(figures["value"])
    if figures.get("exercises"):
        value += " (" + "; ".join(figures["exercises"]) + ")"
    return (
        f"| {figures['switch']} | {value} | {'yes' if figures['declared'] else 'no'}"
        f" | {figures.get('documents', '-')} | {invoiced} | {other or '-'} | {verdict}"
        f" | {figures.get('seconds', '-')} |"
    )


def _one_of_sweep(
    args: argparse.Namespace, planned: PlannedRun, label: str
) -> tuple[int, dict[str, Any]]:
    print(f"\n=== sweep {label}: {planned.switch}={planned.value},"
          f" {'declared' if planned.declared else 'undeclared'}", flush=True)  # fmt: skip
    try:
        code, figures = run(args, planned)
    except Exception as exc:  # a stack that did not start is a row, not the sweep's end
        code = 1
        figures = {
            "switch": planned.switch,
            "value": planned.value,
            "declared": planned.declared,
            "error": f"{type(exc).__name__}: {exc}",
        }
    print(f"=== sweep {label} done\n{table_row(figures)}", flush=True)
    return code, figures


def run_sweep(args: argparse.Namespace, plan: list[PlannedRun]) -> tuple[int, list[str]]:
    """Every planned run (``--jobs`` at a time); (worst exit status, table rows in plan order)."""
    started = time.monotonic()
    labels = [f"{index}/{len(plan)}" for index in range(1, len(plan) + 1)]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(
            pool.map(lambda item: _one_of_sweep(args, *item), zip(plan, labels, strict=True))
        )
    codes = [code for code, _ in results]
    all_figures = [figures for _, figures in results]
    rows = [table_row(figures) for figures in all_figures]
    minutes = (time.monotonic() - started) / 60
    print(f"\nsweep: {len(plan)} runs in {minutes:.1f} min ({args.jobs} at a time)\n")
    print(TABLE_HEAD)
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.results:
        args.results.write_text(json.dumps(all_figures, ensure_ascii=False, indent=1, default=str))
    worst = 1 if 1 in codes else 2 if 2 in codes else 0
    return worst, rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--documents", "-n", type=int, default=None,
        help=f"documents per run (default 5000; 300 with --quick; {SWEEP_DOCUMENTS} a sweep run)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="300 documents")
    parser.add_argument(
        "--dialect",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="contract dialect the simulator plays (repeatable); see GET /_sim/dialect",
    )
    parser.add_argument(
        "--declare",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="declare the simulator's dialect under [tenants.cloud] (default: undeclared;"
        " a sweep runs both unless one is given)",
    )
    parser.add_argument(
        "--dialects",
        metavar="all|NAME[,NAME]",
        help="sweep: one small run per value of every dialect switch (or of the switches"
        " named), declared and undeclared",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="sweep runs at a time (each its own stack)"
    )
    parser.add_argument("--batch", type=int, default=100, help="documents per HTTP request")
    parser.add_argument("--submit-rate", type=float, default=150.0, help="documents/s offered")
    parser.add_argument("--concurrency", type=int, default=4, help="prefork processes")
    parser.add_argument("--issue-delay", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=None, help="seconds (default 900)")
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
        help="seconds between disruptions (default: the table's schedule; a sweep: 2)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[PlannedRun]]:
    """The options and the runs they plan (one, or the sweep's); sizes filled in."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.dialects:
            plan = sweep_plan(args.dialect, args.declare, args.dialects)
        else:
            plan = [single_plan(args.dialect, args.declare)]
    except DialectError as exc:
        parser.error(str(exc))
    if args.documents is None:
        args.documents = SWEEP_DOCUMENTS if args.dialects else 300 if args.quick else 5000
    if args.dialects and not args.disrupt_every:
        args.disrupt_every = SWEEP_DISRUPT_EVERY
    if args.timeout is None:
        args.timeout = SWEEP_TIMEOUT if args.dialects else 300.0 if args.quick else 900.0
    return args, plan


def main(argv: list[str] | None = None) -> int:
    args, plan = parse_args(argv)
    if args.dialects:
        worst, _rows = run_sweep(args, plan)
        return worst
    code, figures = run(args, plan[0])
    if args.results:
        args.results.write_text(json.dumps(figures, ensure_ascii=False, indent=1, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
