"""ERP notifications (``fapiao.notify_erp``): the signed webhook, retries, parking.
Fixtures: tests/integration/conftest.py (``webhook``, ``world``); World, Webhook:
tests/integration/worlds.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from sqlalchemy import select

from simulator.testing import SimulatorHandle, make_bill
from store.models import ErpOutbox
from tests.integration.worlds import DEMO_SELLER, WEBHOOK_SECRET, Webhook, World, WorldFactory
from worker import queues
from worker.services.notify import sign
from worker.testing import drain, store_bill


@pytest.fixture
def erp_world(sim: SimulatorHandle, webhook: Webhook, new_world: WorldFactory) -> World:
    specs: list[dict[str, Any]] = [dict(spec) for spec in sim.specs]
    specs[0]["erp_webhook_url"] = webhook.url
    specs[0]["erp_webhook_secret"] = WEBHOOK_SECRET
    return new_world(specs=specs)


def test_every_visible_outcome_is_posted_signed_to_the_erp(
    erp_world: World, webhook: Webhook
) -> None:
    world = erp_world
    doc_id = store_bill(world.sessions, "demo", make_bill("ERP-1", DEMO_SELLER))
    assert world.push(doc_id) == "pushed"
    world.reconcile(world.callbacks.wait_for(1)[0].body)
    drain(world.rt, world.enqueuer)
    assert [json.loads(body)["event"] for _, body in webhook.received] == [
        "document.pushed",
        "document.invoiced",
    ]
    headers, body = webhook.received[-1]
    payload = json.loads(body)
    assert (payload["billNo"], payload["status"], payload["issuedAmount"]) == (
        "ERP-1",
        "invoiced",
        "113.00",
    )
    assert payload["invoices"][0]["invoiceNum"]
    assert payload["invoices"][0]["billNos"] == ["ERP-1"]  # not a merged invoice
    # The ERP's check: HMAC-SHA256 over "<timestamp>.<raw body>" with the shared secret.
    expected = hmac.new(
        WEBHOOK_SECRET.encode(),
        headers["x-fapiao-timestamp"].encode() + b"." + body,
        hashlib.sha256,
    ).hexdigest()
    assert headers["x-fapiao-signature"] == "sha256=" + expected
    assert headers["x-fapiao-event"] == "document.invoiced"
    # Standard Webhooks: same delivery id and timestamp, HMAC over "<id>.<timestamp>.<body>".
    assert headers["webhook-id"] == headers["x-fapiao-delivery"]
    assert headers["webhook-timestamp"] == headers["x-fapiao-timestamp"]
    standard = hmac.new(
        WEBHOOK_SECRET.encode(),
        f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body,
        hashlib.sha256,
    ).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(standard).decode()
    with world.sessions() as session:
        states = session.scalars(select(ErpOutbox.state).order_by(ErpOutbox.id)).all()
    assert states == ["delivered", "delivered"]


def test_a_failing_erp_is_retried_then_parked(erp_world: World, webhook: Webhook) -> None:
    world = erp_world
    webhook.status = 503
    doc_id = store_bill(world.sessions, "demo", make_bill("ERP-2", DEMO_SELLER, auto_invoice=False))
    world.push(doc_id)
    steps = drain(world.rt, world.enqueuer)
    assert [s.status for s in steps] == ["pending", "pending", "parked"]  # 3 attempts
    assert len(webhook.received) == 3
    # Every retry carries the same delivery id, so the ERP can deduplicate.
    assert {h["x-fapiao-delivery"] for h, _ in webhook.received} == {str(webhook_row_id(world))}
    with world.sessions() as session:
        row = session.scalars(select(ErpOutbox)).one()
    assert (row.state, row.attempts) == ("parked", 3)
    assert "HTTP 503" in (row.last_error or "")


def webhook_row_id(world: World) -> int:
    with world.sessions() as session:
        return session.scalars(select(ErpOutbox.id)).one()


def test_signature_helper_matches_the_documented_recipe() -> None:
    body = b'{"billNo":"B1"}'
    digest = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", "1700000000", body) == f"sha256={digest}"
    assert sign("k", "1700000001", body) != sign("k", "1700000000", body)


def test_no_webhook_no_outbox(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("ERP-3", DEMO_SELLER))
    world.push(doc_id)
    with world.sessions() as session:
        assert session.scalars(select(ErpOutbox)).all() == []


def test_notification_messages_name_the_bill_and_the_tenant(
    erp_world: World, webhook: Webhook
) -> None:
    """Flower finds fapiao.notify_erp jobs by bill number and tenant."""
    world = erp_world
    webhook.status = 503
    doc_id = store_bill(world.sessions, "demo", make_bill("ERP-3", DEMO_SELLER, auto_invoice=False))
    world.push(doc_id)
    first = world.enqueuer.of(queues.NOTIFY_ERP)
    assert [(k["bill_no"], k["tenant"]) for k in first] == [("ERP-3", "demo")]
    steps = drain(world.rt, world.enqueuer)
    retries = [s.kwargs for s in steps if s.task == queues.NOTIFY_ERP]
    assert len(retries) == 3
    assert {(k["bill_no"], k["tenant"]) for k in retries} == {("ERP-3", "demo")}
