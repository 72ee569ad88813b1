"""Deliver ``erp_outbox`` rows to the tenant's ERP webhook, signed, retried, then parked.

Request (one per outbox row)

| part                     | value                                                         |
|--------------------------|---------------------------------------------------------------|
| method, URL              | POST ``erp_webhook_url`` of the tenant                        |
| body                     | the row's JSON payload (UTF-8, amounts as strings)            |
| ``Content-Type``         | ``application/json; charset=utf-8``                           |
| ``X-Fapiao-Event``       | e.g. ``document.invoiced``                                    |
| ``X-Fapiao-Delivery``    | the outbox row id (the same on every retry: dedupe on it)     |
| ``X-Fapiao-Timestamp``   | unix seconds when this attempt was signed                     |
| ``X-Fapiao-Signature``   | ``sha256=`` + hex HMAC-SHA256(``erp_webhook_secret``,         |
|                          | ``<timestamp>`` + ``.`` + ``<body bytes>``)                   |

The ERP verifies by recomputing the HMAC over the timestamp, a dot and the raw body, comparing
in constant time, and refusing timestamps older than a few minutes (replays).

| answer                          | row                                                         |
|---------------------------------|-------------------------------------------------------------|
| 2xx                             | ``delivered``                                               |
| anything else, or no answer     | ``attempts`` + 1, ``next_attempt_at`` = now + full-jitter    |
|                                 | backoff (capped); after ``erp_webhook.max_attempts``:        |
|                                 | ``parked`` with an alert (log + counter)                     |
| tenant without a webhook (any   | ``parked`` with the reason (nothing to deliver to)          |
| more)                           |                                                             |
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Final

import httpx

from schemas.money import dumps_exact
from store.db import unit_of_work
from store.models import Document, ErpOutbox
from store.outbox import mark_attempt_failed, mark_delivered
from store.states import OutboxState
from worker import metrics, queues
from worker.runtime import Followup, Runtime

__all__ = ["SIGNATURE_HEADER", "NotifyOutcome", "notify_erp", "sign"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Fapiao-Signature"
TIMESTAMP_HEADER: Final = "X-Fapiao-Timestamp"
EVENT_HEADER: Final = "X-Fapiao-Event"
DELIVERY_HEADER: Final = "X-Fapiao-Delivery"


@dataclass(frozen=True, slots=True)
class NotifyOutcome:
    state: str
    detail: str = ""
    followups: list[Followup] = field(default_factory=list)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def notify_erp(rt: Runtime, outbox_id: int) -> NotifyOutcome:
    """One delivery attempt of one outbox row (module docstring)."""
    with unit_of_work(rt.sessions) as session:
        row = session.get(ErpOutbox, outbox_id)
        if row is None:
            return NotifyOutcome("skipped", "no such notification")
        if row.state != OutboxState.pending:
            return NotifyOutcome("skipped", f"notification already {row.state}")
        document = session.get(Document, row.document_id)
        tenant = rt.tenant(document.tenant) if document is not None else None
        body = dumps_exact(row.payload).encode("utf-8")
        event = row.event
        attempts = row.attempts
        bill_no = document.bill_no if document is not None else ""
        tenant_name = document.tenant if document is not None else ""

    if tenant is None or tenant.erp_webhook_url is None:
        return _park(rt, outbox_id, "the tenant has no erp_webhook_url (any more)")
    now = rt.clock()
    timestamp = str(int(now.timestamp()))
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        EVENT_HEADER: event,
        DELIVERY_HEADER: str(outbox_id),
        TIMESTAMP_HEADER: timestamp,
    }
    if tenant.erp_webhook_secret is not None:
        headers[SIGNATURE_HEADER] = sign(
            tenant.erp_webhook_secret.get_secret_value(), timestamp, body
        )
    error: str | None
    try:
        response = rt.http.post(str(tenant.erp_webhook_url), content=body, headers=headers)
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        if 200 <= response.status_code < 300:
            error = None
        else:
            error = f"HTTP {response.status_code}: {response.text[:200]}"

    attempt = attempts + 1
    now = rt.clock()
    delay = rt.policy.webhook_backoff.delay(attempt, rt.rng)
    parked = error is not None and rt.policy.webhook_backoff.exhausted(attempt)
    with unit_of_work(rt.sessions) as session:
        if error is None:
            changed = mark_delivered(session, outbox_id, now=now)
        else:
            retry_at = None if parked else now + delay
            changed = mark_attempt_failed(session, outbox_id, error, retry_at=retry_at, now=now)
    if not changed:
        return NotifyOutcome("skipped", "notification changed meanwhile")
    if error is None:
        metrics.erp_notifications().labels(result="delivered").inc()
        return NotifyOutcome(OutboxState.delivered.value)
    if parked:
        metrics.erp_notifications().labels(result="parked").inc()
        log.error(
            "ERP notification parked",
            extra={"outbox_id": outbox_id, "bill_no": bill_no, "attempts": attempt,
                   "error": error},
        )  # fmt: skip
        return NotifyOutcome(OutboxState.parked.value, error)
    metrics.erp_notifications().labels(result="retry").inc()
    followups = []
    if delay.total_seconds() <= rt.policy.max_countdown:
        followups.append(
            Followup(
                queues.NOTIFY_ERP,
                {"outbox_id": outbox_id, "bill_no": bill_no, "tenant": tenant_name},
                delay.total_seconds(),
            )
        )
    return NotifyOutcome(OutboxState.pending.value, error, followups)


def _park(rt: Runtime, outbox_id: int, why: str) -> NotifyOutcome:
    with unit_of_work(rt.sessions) as session:
        mark_attempt_failed(session, outbox_id, why, retry_at=None, now=rt.clock())
    metrics.erp_notifications().labels(result="parked").inc()
    log.error("ERP notification parked", extra={"outbox_id": outbox_id, "error": why})
    return NotifyOutcome(OutboxState.parked.value, why)
