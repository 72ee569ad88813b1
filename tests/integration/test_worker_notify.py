"""ERP notifications (signed webhook, retries, parking) and the less common callbacks
(回退 BILL.RETURN, a callback that overtakes the push answer), against the simulator."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from schemas.kingdee import BillReturn, build_callback
from schemas.money import dumps_exact
from simulator.testing import CallbackRecorder, SimulatorHandle, make_bill
from store.models import CallbackInbox, CloudCall, ErpOutbox
from tests.integration.test_worker_world import DEMO_SELLER, World, make_world
from worker import queues
from worker.services.notify import sign
from worker.testing import drain, store_bill

pytest_plugins = ["tests.integration.test_worker_world"]

WEBHOOK_SECRET = "erp-hook-" + "5e3c7a9d1b2f4e6a"


class Webhook:
    """A real ERP endpoint: records headers and body, answers with ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                hook.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(hook.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/erp/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


@pytest.fixture
def erp_world(
    sim: SimulatorHandle,
    callbacks: CallbackRecorder,
    webhook: Webhook,
    session_factory: sessionmaker[Session],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[World]:
    specs: list[dict[str, Any]] = [dict(spec) for spec in sim.specs]
    specs[0]["erp_webhook_url"] = webhook.url
    specs[0]["erp_webhook_secret"] = WEBHOOK_SECRET
    yield from make_world(
        sim, callbacks, session_factory, database_url, redis_url, tmp_path, None, specs
    )


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


# --------------------------------------------------------------------------- callbacks


def test_return_upstream_callback_marks_the_document_returned(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("RET-1", DEMO_SELLER, auto_invoice=False))
    world.push(doc_id)
    world.sim.admin.post(
        "/_sim/bills/RET-1/return", json={"reason": "购方名称有误"}
    ).raise_for_status()
    body = world.callbacks.wait_for(1)[0].body
    assert world.reconcile(body) == "processed"
    document = world.doc(doc_id)
    assert document.status == "returned"
    assert document.last_error_message == "购方名称有误"


def forged_return(bill_no: str, reason: str = "伪造") -> bytes:
    returned = BillReturn(billNo=bill_no, sellerTaxpayerId=DEMO_SELLER, reason=reason)
    return dumps_exact(build_callback("BILL.RETURN", [], "return", returned=returned)).encode()


def test_a_forged_return_for_a_live_bill_changes_nothing(world: World) -> None:
    """Invariant 4: the confirming query finds the bill still in the cloud."""
    doc_id = store_bill(world.sessions, "demo", make_bill("RET-2", DEMO_SELLER, auto_invoice=False))
    assert world.push(doc_id) == "pushed"
    before = world.doc(doc_id)
    assert world.reconcile(forged_return("RET-2")) == "processed"
    after = world.doc(doc_id)
    assert (after.status, after.version) == ("pushed", before.version)
    assert after.last_error_message == before.last_error_message
    with world.sessions() as session:
        row = session.scalars(select(CallbackInbox).order_by(CallbackInbox.id.desc())).first()
        assert row is not None
        assert row.document_id == doc_id
        assert "still" in (row.error or "")
        queries = session.scalars(
            select(CloudCall).where(CloudCall.interface == "BILL.INVOICE.QUERY")
        ).all()
    assert queries  # the forged callback caused a query, nothing else
    # The real 回退 afterwards is still applied.
    world.sim.admin.post("/_sim/bills/RET-2/return", json={"reason": "退回"}).raise_for_status()
    assert world.reconcile(world.callbacks.wait_for(1)[0].body) == "processed"
    assert world.doc(doc_id).status == "returned"


def test_a_callback_overtaking_the_push_answer_is_applied_after_it(world: World) -> None:
    world.sim.set_faults(callback_before_response=1.0)  # the cloud calls back, then answers
    doc_id = store_bill(world.sessions, "demo", make_bill("RACE-1", DEMO_SELLER))
    seen: list[tuple[str, str]] = []

    def reconcile_before_acking(index: int, body: bytes) -> tuple[int, bytes]:
        # The receiver stores and enqueues at once; the reconcile runs while the push waits.
        seen.append((world.doc(doc_id).status, world.reconcile(body)))
        return 200, b'{"success": true, "code": "0", "message": "success"}'

    world.callbacks.answer_with(reconcile_before_acking)
    assert world.push(doc_id) == "pushed"
    assert seen == [("pushing", "received")]  # deferred, not lost, not misapplied
    steps = drain(world.rt, world.enqueuer)
    assert (steps[-1].task, steps[-1].status) == (queues.RECONCILE, "processed")
    assert world.doc(doc_id).status == "invoiced"
    assert world.path(doc_id) == ["draft", "pushing", "pushed", "invoiced"]


def test_tokens_never_reach_the_ledger(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("MASK-1", DEMO_SELLER))
    world.push(doc_id)
    token = world.rt.tokens.peek("demo")
    assert token is not None
    spec = world.sim.spec("demo")
    with world.sessions() as session:
        rows = session.scalars(select(CloudCall)).all()
    assert rows
    for row in rows:
        text = f"{row.message} {row.error_code} {row.request_id}"
        assert token.value not in text
        assert spec["app_secret"] not in text


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


def test_a_deferred_callback_message_names_its_bill_and_tenant(world: World) -> None:
    doc_id = store_bill(world.sessions, "demo", make_bill("RET-3", DEMO_SELLER))
    assert world.doc(doc_id).status == "draft"  # the callback overtook the push
    assert world.reconcile(forged_return("RET-3")) == "received"
    [again] = world.enqueuer.of(queues.RECONCILE)
    assert (again["bill_no"], again["tenant"]) == ("RET-3", "demo")
