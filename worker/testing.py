"""Test support for the worker: fast settings, running follow-ups inline, stored bills.

| name                                | what                                                      |
|-------------------------------------|-----------------------------------------------------------|
| ``fast_settings(...)``              | ``Settings`` with compressed timeouts, backoffs, polls     |
| ``drain(rt, enqueuer, ...)``        | run what a ``worker.enqueue.RecordingEnqueuer`` recorded   |
|                                     | through ``worker.tasks.run`` until                        |
|                                     | none is left (countdowns ignored): eager, but through the |
|                                     | same dispatcher the Celery tasks use                      |
| ``store_bill(sessions, tenant, b)`` | validate a bill and store it as a draft document; its id  |
| ``wait_until(predicate, timeout)``  | poll a condition (for tests with real worker processes)   |

Used by ``tests/integration/test_worker_*.py``; nothing here runs in production.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from schemas.erp import validate_bill
from schemas.settings import Settings
from store.acceptance import Acceptance, BillToAccept, accept_documents
from store.db import unit_of_work
from worker.enqueue import Followup, RecordingEnqueuer
from worker.runtime import Runtime

__all__ = [
    "Step",
    "drain",
    "fast_settings",
    "store_bill",
    "wait_until",
]

T = TypeVar("T")


def fast_settings(
    *,
    database_url: str,
    redis_url: str,
    tenants_file: str | Path,
    **overrides: Any,
) -> Settings:
    """Settings for tests: seconds become fractions, schedules shrink, nothing waits long."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "broker_url": redis_url,
        "tenants_file": Path(tenants_file),
        "environment": "test",
        "tokens": {"refresh_margin_seconds": 0, "lock_timeout_seconds": 10,
                   "lock_wait_seconds": 15},
        "http": {"connect_timeout_seconds": 2.0, "read_timeout_seconds": 3.0},
        "push": {"max_attempts": 4, "backoff_base_seconds": 0.05, "backoff_cap_seconds": 0.2},
        "broker": {"visibility_timeout_seconds": 60},
        "poll": {"schedule_seconds": [1, 1, 2], "cap_seconds": 2, "alert_after_seconds": 3600},
        "in_doubt": {"max_age_seconds": 3600, "max_queries": 20},
        "erp_webhook": {"max_attempts": 3, "backoff_cap_seconds": 0.2},
    }  # fmt: skip
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings(**values)


@dataclass(frozen=True, slots=True)
class Step:
    task: str
    kwargs: Mapping[str, Any]
    status: str


def drain(
    rt: Runtime,
    enqueuer: RecordingEnqueuer,
    *,
    max_steps: int = 200,
    skip: Callable[[Followup], bool] | None = None,
) -> list[Step]:
    """Run every recorded message (and what they send) in order; returns the steps taken."""
    from worker.tasks import run

    steps: list[Step] = []
    while len(steps) < max_steps:
        pending = enqueuer.take()
        if not pending:
            return steps
        for followup in pending:
            if skip is not None and skip(followup):
                continue
            status, more = run(rt, followup.task, followup.kwargs)
            steps.append(Step(followup.task, followup.kwargs, status))
            rt.dispatch(more)
    raise RuntimeError(f"drain did not settle within {max_steps} steps: {steps[-5:]}")


def store_bill(
    sessions: sessionmaker[Session], tenant: str, bill: Mapping[str, Any], *, check: bool = True
) -> int:
    """Store ``bill`` as a draft document of ``tenant`` (validated unless ``check=False``)."""
    if check:
        valid = validate_bill(bill)
        wire = valid.to_wire()
        totals = valid.total()
        total_amount, incl, tax = valid.totalAmount, totals.incl, totals.tax
        content_hash = valid.content_hash()
        invoice_type: str | None = valid.invoiceType.value
    else:
        # A bill the bridge would refuse (to make the cloud refuse it): stored as given.
        wire = dict(bill)
        total_amount, incl, tax = bill["totalAmount"], None, None
        content_hash = f"unchecked:{bill['billNo']}"
        invoice_type = str(bill.get("invoiceType")) if bill.get("invoiceType") else None
    stored = BillToAccept(
        tenant=tenant,
        seller_tax_id=str(wire["sellerTaxpayerId"]),
        bill_no=str(wire["billNo"]),
        payload=wire,
        content_hash=content_hash,
        total_amount=total_amount,
        total_incl_tax=incl,
        total_tax=tax,
        invoice_type=invoice_type,
    )
    with unit_of_work(sessions) as session:
        [accepted] = accept_documents(session, [stored], actor="test")
    if not isinstance(accepted, Acceptance):
        raise accepted
    return accepted.document_id


def wait_until(
    predicate: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1
) -> T:
    """Poll ``predicate`` until it returns something truthy; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)
