"""What a benchmark submits and how it watches: bills, HTTP batches, status counts, CPU.

| name | what |
|---|---|
| ``bench_bills(run_id, n, specs)`` | ``n`` valid bills (wire dicts), sellers taken in turn |
| ``post_batches(api, bills, size)`` | ``POST /v1/documents`` in batches → (accepted, refusals) |
| ``status_counts(engine, prefix)`` | current documents by status (billNo prefix of this run) |
| ``wait_settled(engine, prefix, n, ...)`` | poll until ``n`` documents are in ``states`` |
| ``cpu_seconds(pids)`` | user+system CPU of processes, from ``/proc/<pid>/stat`` |
| ``group_pids(pgid)`` | live processes of a process group (a server and its forked workers) |
| ``queued_documents(client, queue)`` | (documents owed, messages) of the waiting push messages |
| ``rss_bytes(pids)`` | resident memory of processes, from ``/proc/<pid>/status`` |
| ``percentile(values, q)`` | nearest-rank percentile |
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx
import redis
from sqlalchemy import Engine, func, select

from schemas.money import dumps_exact
from simulator.testing import make_bill
from store.models import Document
from store.states import ISSUE_OVERDUE

__all__ = [
    "OVERDUE",
    "SETTLED",
    "bench_bills",
    "cpu_seconds",
    "group_pids",
    "percentile",
    "post_batches",
    "queued_documents",
    "rss_bytes",
    "status_counts",
    "wait_settled",
]

# "pushed (overdue)": pushed, flagged ISSUE_OVERDUE with its reason (status_counts' own key).
OVERDUE = "pushed (overdue)"
SETTLED = frozenset(
    {"invoiced", "withdrawn", "rejected", "failed", "invoice_failed", "returned", OVERDUE}
)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def bench_bills(
    run_id: str, n: int, specs: Sequence[Mapping[str, Any]], *, lines: int = 1
) -> list[dict[str, Any]]:
    """``n`` one-line 数电普票 bills, billNo ``B<run_id>-<i>``, sellers taken in turn."""
    sellers = [str(s) for spec in specs for s in spec["seller_tax_ids"]]
    return [
        make_bill(
            f"B{run_id}-{i:06d}",
            sellers[i % len(sellers)],
            lines=lines,
            amount="100.00",
            auto_invoice=True,
        )
        for i in range(n)
    ]


def post_batches(
    api: httpx.Client, bills: Sequence[Mapping[str, Any]], size: int
) -> tuple[int, list[str]]:
    """Submit ``bills`` in batches of ``size``; returns (accepted count, refusal texts)."""
    accepted = 0
    refused: list[str] = []
    for start in range(0, len(bills), size):
        chunk = [dict(b) for b in bills[start : start + size]]
        response = api.post(
            "/v1/documents",
            content=dumps_exact(chunk).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        if response.status_code not in (202, 207):
            refused.append(f"HTTP {response.status_code}: {response.text[:300]}")
            continue
        for result in response.json().get("results", []):
            if result.get("status_code") in (200, 202):
                accepted += 1
            else:
                refused.append(str(result)[:300])
    return accepted, refused


def status_counts(engine: Engine, prefix: str) -> dict[str, int]:
    """Current documents by status; flagged overdue ones apart, under ``OVERDUE``."""
    overdue = Document.last_error_code == ISSUE_OVERDUE
    query = (
        select(Document.status, overdue, func.count())
        .where(Document.is_current.is_(True), Document.bill_no.startswith(prefix))
        .group_by(Document.status, overdue)
    )
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for status, flagged, n in conn.execute(query):
            key = OVERDUE if flagged and status == "pushed" else str(status)
            counts[key] = counts.get(key, 0) + int(n)
    return counts


def wait_settled(
    engine: Engine,
    prefix: str,
    n: int,
    states: Iterable[str] = SETTLED,
    *,
    timeout: float,
    interval: float = 0.5,
    on_poll: Callable[[dict[str, int]], None] | None = None,
) -> tuple[bool, dict[str, int]]:
    """Poll until ``n`` current documents of the run are in ``states`` (or the timeout)."""
    wanted = frozenset(states)
    deadline = time.monotonic() + timeout
    while True:
        try:
            counts = status_counts(engine, prefix)
        except Exception:
            counts = {}
        if on_poll is not None:
            on_poll(counts)
        if counts and sum(v for k, v in counts.items() if k in wanted) >= n:
            return True, counts
        if time.monotonic() >= deadline:
            return False, counts
        time.sleep(interval)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = open(f"/proc/{pid}/stat", encoding="ascii").read()  # noqa: SIM115
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def cpu_seconds(pids: Iterable[int]) -> float:
    """user + system CPU seconds of ``pids`` (fields 14 and 15 of ``/proc/<pid>/stat``)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def group_pids(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (field 5 of ``/proc/<pid>/stat``): a
    process started in its own session and every child it forked or spawned."""
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[2]) == pgid:
                pids.append(int(entry))
    return pids


# What one message on the push queue owes: a document, or the documents it lists.
_PUSH_ONE = "fapiao.push"
_PUSH_BATCH = "fapiao.push_batch"


def queued_documents(client: redis.Redis, queue: str = "push") -> tuple[int, int]:
    """(documents, messages) of the Celery messages waiting in ``queue``: ``fapiao.push``
    counts 1, ``fapiao.push_batch`` the length of its ``document_ids``, other tasks 0."""
    raw: list[bytes] = client.lrange(queue, 0, -1)  # type: ignore[assignment]
    documents = 0
    for item in raw:
        message = json.loads(item)
        task = message.get("headers", {}).get("task")
        if task == _PUSH_ONE:
            documents += 1
        elif task == _PUSH_BATCH:
            body = message["body"]
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            _args, kwargs, _embed = json.loads(body)
            documents += len(kwargs["document_ids"])
    return documents, len(raw)


def rss_bytes(pids: Iterable[int]) -> dict[int, int]:
    """``VmRSS`` of each live process in ``pids``."""
    found: dict[int, int] = {}
    for pid in pids:
        try:
            lines = open(f"/proc/{pid}/status", encoding="ascii").read().splitlines()  # noqa: SIM115
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmRSS:"):
                found[pid] = int(line.split()[1]) * 1024
    return found


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
