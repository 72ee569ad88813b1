"""How long a push the cloud never received takes to reach ``invoiced``, at DEFAULT settings.

    .venv/bin/python -m bench.dropped_push [--documents 20] [--readings error,empty_list,empty_data]

Every run starts its own stack (``bench.stack``) but puts back the product's defaults for
every setting the benchmark stack speeds up (poll schedule, backoff, in-doubt queries, HTTP
timeouts, token margin): what a user runs. The simulator drops every ``BILL.PUSH`` before it
is stored (fault ``drop_before`` = 1) until each document of the run is ``in_doubt``; then the
fault is lifted and the clock runs until every document is ``invoiced`` (or ``--timeout``).
One run per ``unknown_bill`` reading the simulator plays (the switch in-doubt resolution
turns on), each with every switch undeclared and with the simulator's dialect declared.

Prints, per run: documents invoiced, and seconds from submit to ``invoiced`` (median, max).
The issue's target: declared, a dropped push is invoiced within 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select

from bench.stack import BenchOptions, running_bench_stack
from bench.workload import bench_bills, percentile, post_batches, status_counts
from schemas.cloud_contract import DIALECT_SWITCHES, Dialect
from schemas.settings import (
    HttpSettings,
    InDoubtSettings,
    PollSettings,
    PushSettings,
    TokenSettings,
)
from store.models import Document

__all__ = ["main", "product_defaults", "run_once"]


def product_defaults() -> dict[str, str]:
    """The shipped defaults of every setting ``bench.stack`` overrides for speed."""
    poll, push, http = PollSettings(), PushSettings(), HttpSettings()
    return {
        "FAPIAO_TOKENS__REFRESH_MARGIN_SECONDS": str(TokenSettings().refresh_margin_seconds),
        "FAPIAO_POLL__SCHEDULE_SECONDS": ",".join(str(s) for s in poll.schedule_seconds),
        "FAPIAO_POLL__CAP_SECONDS": str(poll.cap_seconds),
        "FAPIAO_POLL__ISSUE_OVERDUE_SECONDS": str(poll.issue_overdue_seconds),
        "FAPIAO_PUSH__BACKOFF_BASE_SECONDS": str(push.backoff_base_seconds),
        "FAPIAO_PUSH__BACKOFF_CAP_SECONDS": str(push.backoff_cap_seconds),
        "FAPIAO_PUSH__MAX_ATTEMPTS": str(push.max_attempts),
        "FAPIAO_HTTP__CONNECT_TIMEOUT_SECONDS": str(http.connect_timeout_seconds),
        "FAPIAO_HTTP__READ_TIMEOUT_SECONDS": str(http.read_timeout_seconds),
        "FAPIAO_IN_DOUBT__MAX_QUERIES": str(InDoubtSettings().max_queries),
    }


def run_once(
    workdir: Path, *, reading: str, declared: bool, documents: int, timeout: float
) -> dict[str, Any]:
    dialect = {"unknown_bill": reading}
    options = BenchOptions(
        workdir=workdir,
        dialect=dialect,
        tenants_cloud=Dialect.default().replace(dialect).as_dict() if declared else {},
        faults={"drop_before": 1.0},
        settings=product_defaults(),
    )
    run_id = secrets.token_hex(3)
    prefix = f"B{run_id}-"
    with running_bench_stack(options) as stack:
        engine = create_engine(stack.database_url)
        bills = bench_bills(run_id, documents, stack.specs)
        with stack.api() as api:
            accepted, refused = post_batches(api, bills, size=documents)
        if refused or accepted != documents:
            raise SystemExit(f"submit refused: {refused[:3]}")
        deadline = time.monotonic() + timeout
        while status_counts(engine, prefix).get("in_doubt", 0) < documents:
            if time.monotonic() > deadline:
                raise SystemExit(f"not every push went in doubt: {status_counts(engine, prefix)}")
            time.sleep(0.2)
        stack.set_faults({})  # the network is back
        while status_counts(engine, prefix).get("invoiced", 0) < documents:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        with engine.connect() as conn:
            rows = conn.execute(
                select(Document.created_at, Document.status_changed_at).where(
                    Document.bill_no.startswith(prefix),
                    Document.is_current.is_(True),
                    Document.status == "invoiced",
                )
            ).all()
        counts = status_counts(engine, prefix)
        engine.dispose()
    seconds = sorted((done - created).total_seconds() for created, done in rows)
    return {
        "unknown_bill": reading,
        "declared": declared,
        "documents": documents,
        "invoiced": len(rows),
        "states": counts,
        "median_seconds": round(percentile(seconds, 50), 1) if seconds else None,
        "max_seconds": round(seconds[-1], 1) if seconds else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", "-n", type=int, default=20)
    parser.add_argument(
        "--readings",
        default=",".join(DIALECT_SWITCHES["unknown_bill"]),
        help="unknown_bill readings to play (comma-separated)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for reading in args.readings.split(","):
        for declared in (False, True):
            with tempfile.TemporaryDirectory(prefix="fapiao-dropped-") as tmp:
                result = run_once(
                    Path(tmp),
                    reading=reading,
                    declared=declared,
                    documents=args.documents,
                    timeout=args.timeout,
                )
            results.append(result)
            if not args.json:
                print(
                    f"unknown_bill={reading:<10} {'declared' if declared else 'undeclared':<10}"
                    f" invoiced {result['invoiced']}/{result['documents']}"
                    f"  submit→invoiced median {result['median_seconds']} s,"
                    f" max {result['max_seconds']} s  {result['states']}",
                    flush=True,
                )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if all(r["invoiced"] == r["documents"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
