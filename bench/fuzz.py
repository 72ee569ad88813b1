"""Fuzz the running HTTP app: malformed ERP documents and callbacks by the thousand.

    .venv/bin/python -m bench.fuzz [--examples 2000] [--seed 7]

The stack (``bench.stack``) runs the HTTP app over real HTTP on a private PostgreSQL and
Redis (no worker). Hypothesis generates, per lane, ``--examples`` requests:

| lane | what is sent |
|---|---|
| documents | a valid bill with one mutation (field dropped, wrong type, float, huge or negative |
| | number, NUL / lone surrogate / 10 k-character text, unknown field, bad tax rate, …), |
| | arbitrary JSON, or bytes that are not JSON; single or in a batch |
| callbacks | a valid callback (per-invoice, ``INVOICE.OPEN``) with one mutation, arbitrary JSON, |
| | base64 that is not JSON, bytes; sometimes to a wrong secret path |

Checked for every request: the answer is never 5xx (a 503 is counted apart: the database
refused; it must not happen on a healthy stack either), and a refused request (4xx, or a
batch item answered 4xx) changes no row: the row counts and the newest ids of
``documents``, ``document_events``, ``callback_inbox``, ``erp_outbox`` are the same after it
(accepted input may add rows). Exit 1 on any 5xx or any state change from refused input.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from bench.stack import BenchOptions, BenchStack, running_bench_stack
from schemas.money import dumps_exact
from simulator.testing import make_bill
from store.db import make_engine
from store.models import CallbackInbox, Document, DocumentEvent, ErpOutbox

__all__ = ["main", "state_fingerprint"]

Fingerprint = tuple[int, ...]

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip
NASTY_TEXT = st.sampled_from(
    ["", " ", "\x00", "a\x00b", "\ud800", "x" * 10_000, "𝕏💥", "<script>", "' OR 1=1 --",
     "1e309", "NaN", "-0", "１００", "\u202e"]
)  # fmt: skip
NASTY_NUMBER = st.sampled_from(
    ["1e400", "-1e400", "0.001", "99999999999999999999.99", "-100.00", "abc", "", "1_000"]
)  # fmt: skip


def state_fingerprint(engine: Engine) -> Fingerprint:
    """Row counts and newest ids of the tables a request may write."""
    values: list[int] = []
    with engine.connect() as conn:
        for table in (Document, DocumentEvent, CallbackInbox, ErpOutbox):
            count, newest = conn.execute(select(func.count(), func.max(table.id))).one()
            values += [int(count), int(newest or 0)]
    return tuple(values)


def _mutate(base: dict[str, Any], data: st.DataObject) -> Any:
    doc = json.loads(dumps_exact(base))
    kind = data.draw(
        st.sampled_from(
            ["drop", "type", "text", "number", "unknown", "detail", "json", "float", "empty"]
        )
    )
    keys = sorted(doc)
    if kind == "drop":
        doc.pop(data.draw(st.sampled_from(keys)), None)
    elif kind == "type":
        doc[data.draw(st.sampled_from(keys))] = data.draw(JSON_VALUES)
    elif kind == "text":
        doc[data.draw(st.sampled_from(keys))] = data.draw(NASTY_TEXT)
    elif kind == "number":
        field = data.draw(st.sampled_from(["totalAmount", "taxRate", "amount", "quantity"]))
        target = doc if field == "totalAmount" else doc["billDetail"][0]
        target[field] = data.draw(NASTY_NUMBER | st.integers(-(10**20), 10**20))
    elif kind == "unknown":
        doc[data.draw(st.text(min_size=1, max_size=10))] = data.draw(JSON_VALUES)
    elif kind == "detail":
        line = doc["billDetail"][0]
        line[data.draw(st.sampled_from(sorted(line)))] = data.draw(JSON_VALUES | NASTY_TEXT)
    elif kind == "json":
        return data.draw(JSON_VALUES)
    elif kind == "float":
        doc["totalAmount"] = data.draw(st.floats(allow_nan=False, allow_infinity=False))
    else:
        doc["billDetail"] = data.draw(st.sampled_from([[], None, {}, "[]"]))
    return doc


def _callback_template(bill_no: str, seller: str) -> dict[str, Any]:
    item = {
        "billNo": bill_no,
        "serialNo": bill_no,
        "orderNo": f"ORD{bill_no}",
        "invoiceType": "10xdp",
        "invoiceStatus": "0",
        "invoiceCode": "",
        "invoiceNum": "25310000000000000001",
        "invoiceDate": "2025-11-24 10:00:00",
        "totalAmount": "100.00",
        "totalTaxAmount": "13.00",
        "includeTaxAmount": "113.00",
        "sellerTaxpayerId": seller,
    }
    return {"interfaceCode": "INVOICE.OPEN", "data": item}


def _encode_callback(body: dict[str, Any]) -> dict[str, Any]:
    data = body.get("data")
    if isinstance(data, dict | list):
        raw = json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return {**body, "data": base64.b64encode(raw).decode("ascii")}
    return body


class Fuzzer:
    def __init__(self, stack: BenchStack, engine: Engine) -> None:
        self.stack = stack
        self.engine = engine
        self.api = stack.api()
        self.plain = httpx.Client(base_url=stack.api_url, timeout=60.0)
        self.statuses: Counter[str] = Counter()
        self.failures: list[str] = []
        self.refused = 0
        self.accepted = 0

    def close(self) -> None:
        self.api.close()
        self.plain.close()

    def send(self, lane: str, call: Callable[[], httpx.Response], description: str) -> None:
        before = state_fingerprint(self.engine)
        response = call()
        after = state_fingerprint(self.engine)
        status = response.status_code
        self.statuses[f"{lane} {status}"] += 1
        if status >= 500:
            self.failures.append(f"{lane} HTTP {status} for {description[:200]}: "
                                 f"{response.text[:200]}")  # fmt: skip
            return
        items: list[int] = []
        if status in (202, 207) and lane == "documents":
            results = response.json().get("results")
            if isinstance(results, list):
                items = [int(r.get("status_code", 0)) for r in results]
        refused_all = status >= 400 or (items and all(code >= 400 for code in items))
        if refused_all:
            self.refused += 1
            if before != after:
                self.failures.append(
                    f"{lane} HTTP {status} (refused) changed state {before} → {after}:"
                    f" {description[:200]}"
                )
        else:
            self.accepted += 1


def run_lanes(stack: BenchStack, examples: int, seed_value: int) -> Fuzzer:
    engine = make_engine(stack.database_url)
    fuzzer = Fuzzer(stack, engine)
    seller = str(stack.specs[0]["seller_tax_ids"][0])
    counter = iter(range(10**9))
    common = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )

    @seed(seed_value)
    @common
    @given(st.data())
    def documents(data: st.DataObject) -> None:
        base = make_bill(f"FZ{os.getpid()}-{next(counter)}", seller)
        choice = data.draw(st.sampled_from(["single", "batch", "bytes"]))
        if choice == "bytes":
            raw = data.draw(st.binary(max_size=200))
        else:
            doc = _mutate(base, data)
            body: Any = [doc, make_bill(f"FZ{os.getpid()}-{next(counter)}", "bad")] if (
                choice == "batch") else doc  # fmt: skip
            try:
                raw = json.dumps(body, ensure_ascii=False, default=str).encode(
                    "utf-8", "surrogatepass"
                )
            except (TypeError, ValueError):
                raw = repr(body).encode("utf-8", "surrogatepass")
        fuzzer.send(
            "documents",
            lambda: fuzzer.api.post(
                "/v1/documents", content=raw, headers={"Content-Type": "application/json"}
            ),
            raw[:200].decode("utf-8", "replace"),
        )

    @seed(seed_value + 1)
    @common
    @given(st.data())
    def callbacks(data: st.DataObject) -> None:
        secret = stack.callback_secret
        if data.draw(st.integers(0, 9)) == 0:
            secret = data.draw(st.sampled_from(["wrong", secret + "x", secret[:-1], "%00"]))
        kind = data.draw(st.sampled_from(["mutated", "json", "bytes", "base64"]))
        template = _callback_template(f"FZCB-{next(counter)}", seller)
        if kind == "mutated":
            item = template["data"]
            key = data.draw(st.sampled_from([*sorted(item), "interfaceCode"]))
            value = data.draw(JSON_VALUES | NASTY_TEXT)
            if key == "interfaceCode":
                template["interfaceCode"] = value
            else:
                item[key] = value
            body: Any = _encode_callback(template)
            raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
        elif kind == "json":
            raw = json.dumps(data.draw(JSON_VALUES)).encode("utf-8", "surrogatepass")
        elif kind == "base64":
            junk = data.draw(st.binary(max_size=80))
            body = {"interfaceCode": "INVOICE.OPEN", "data": base64.b64encode(junk).decode()}
            raw = json.dumps(body).encode("utf-8")
        else:
            raw = data.draw(st.binary(max_size=200))
        fuzzer.send(
            "callbacks",
            lambda: fuzzer.plain.post(
                f"/callbacks/kingdee/{secret}",
                content=raw,
                headers={"Content-Type": "application/json"},
            ),
            raw[:200].decode("utf-8", "replace"),
        )

    try:
        documents()
        callbacks()
    finally:
        fuzzer.close()
        engine.dispose()
    return fuzzer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="requests per lane")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fapiao-fuzz-", dir=args.workdir))
    options = BenchOptions(workdir=workdir, workers=0, beat=False, callbacks=False)
    with running_bench_stack(options) as stack:
        fuzzer = run_lanes(stack, args.examples, args.seed)
    figures = {
        "requests": sum(fuzzer.statuses.values()),
        "refused": fuzzer.refused,
        "accepted": fuzzer.accepted,
        "by_status": dict(sorted(fuzzer.statuses.items())),
        "server_errors": sum(v for k, v in fuzzer.statuses.items() if k.split()[1] >= "500"),
        "failures": fuzzer.failures[:20],
    }
    if args.json:
        print(json.dumps(figures, ensure_ascii=False))
    else:
        print(
            f"{figures['requests']} requests: {fuzzer.refused} refused, {fuzzer.accepted} accepted,"
            f" {figures['server_errors']} answered 5xx"
        )
        print(f"by lane and status: {figures['by_status']}")
        print(f"state changes from refused input / 5xx: {len(fuzzer.failures)}")
        for failure in fuzzer.failures[:10]:
            print(f"  {failure}")
    if args.results:
        args.results.write_text(json.dumps(figures, ensure_ascii=False, indent=1))
    return 1 if fuzzer.failures else 0


if __name__ == "__main__":
    sys.exit(main())
