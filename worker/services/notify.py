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
| ``webhook-id``           | = ``X-Fapiao-Delivery`` (Standard Webhooks)                   |
| ``webhook-timestamp``    | = ``X-Fapiao-Timestamp``                                      |
| ``webhook-signature``    | ``v1,`` + base64 HMAC-SHA256(key, ``<id>.<timestamp>.<body>``) |

Both header sets are sent on every delivery: ``X-Fapiao-*`` (the original scheme, kept until a
later major version) and the Standard Webhooks ones (https://www.standardwebhooks.com), which
ready-made verifiers in most languages check. Their key is the UTF-8 bytes of
``erp_webhook_secret``, so a receiver gives its library ``whsec_`` + base64 of those bytes
(``standard_webhooks_secret``); a secret that already has the standard form ``whsec_<base64>``
is used decoded, exactly as those libraries read it. Signatures are sent only when the tenant
has a secret.

The ERP verifies by recomputing the HMAC over the signed text from the raw body, comparing in
constant time, and refusing timestamps more than a few minutes away from its clock (replays).

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

import base64
import binascii
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

__all__ = [
    "SIGNATURE_HEADER",
    "STANDARD_ID_HEADER",
    "STANDARD_SIGNATURE_HEADER",
    "STANDARD_TIMESTAMP_HEADER",
    "NotifyOutcome",
    "notify_erp",
    "sign",
    "sign_standard",
    "signed_headers",
    "standard_webhooks_key",
    "standard_webhooks_secret",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Fapiao-Signature"
TIMESTAMP_HEADER: Final = "X-Fapiao-Timestamp"
EVENT_HEADER: Final = "X-Fapiao-Event"
DELIVERY_HEADER: Final = "X-Fapiao-Delivery"
STANDARD_ID_HEADER: Final = "webhook-id"
STANDARD_TIMESTAMP_HEADER: Final = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER: Final = "webhook-signature"
_STANDARD_PREFIX: Final = "whsec_"


@dataclass(frozen=True, slots=True)
class NotifyOutcome:
    state: str
    detail: str = ""
    followups: list[Followup] = field(default_factory=list)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def standard_webhooks_key(secret: str) -> bytes:
    """The Standard Webhooks HMAC key: ``whsec_<base64>`` decoded, any other secret's UTF-8."""
    if secret.startswith(_STANDARD_PREFIX):
        try:
            return base64.b64decode(secret.removeprefix(_STANDARD_PREFIX), validate=True)
        except binascii.Error:
            pass  # not the standard form after all: the text itself is the key
    return secret.encode("utf-8")


def standard_webhooks_secret(secret: str) -> str:
    """What a receiver configures in a Standard Webhooks library for ``erp_webhook_secret``."""
    return _STANDARD_PREFIX + base64.b64encode(standard_webhooks_key(secret)).decode("ascii")


def sign_standard(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """``v1,<base64>`` of HMAC-SHA256(key, id + "." + timestamp + "." + body)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(standard_webhooks_key(secret), signed, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signed_headers(
    *, event: str, delivery_id: str, timestamp: str, body: bytes, secret: str | None
) -> dict[str, str]:
    """Every header of one delivery attempt (module docstring), signatures when ``secret``."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: timestamp,
        STANDARD_ID_HEADER: delivery_id,
        STANDARD_TIMESTAMP_HEADER: timestamp,
    }
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
        headers[STANDARD_SIGNATURE_HEADER] = sign_standard(secret, delivery_id, timestamp, body)
    return headers


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
    secret = tenant.erp_webhook_secret
    headers = signed_headers(
        event=event,
        delivery_id=str(outbox_id),
        timestamp=timestamp,
        body=body,
        secret=secret.get_secret_value() if secret is not None else None,
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
