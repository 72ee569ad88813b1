"""After issuance, bridge side: a clerk's 作废 / 红冲 in the cloud and red bills pushed through
the bridge reach the stored invoices, the document (``reversed``) and the ERP webhook, over
real HTTP, confirmed by BILL.INVOICE.QUERY like every callback (docs/CLOUD-CONTRACT.md §15).
Fixtures: tests/integration/conftest.py; World, Webhook: tests/integration/worlds.py. The
dialect switches ``cancel_item`` and ``partial_red`` are run in test_worker_dialects.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from producers.http import create_app
from producers.testing import auth_headers, bridge_settings, build_test_components, run_cli
from schemas.kingdee import CallbackInterfaceCode, InvoiceItem, build_callback, parse_callback
from simulator.testing import SimulatorHandle, make_bill
from store.models import DocumentEvent, ErpOutbox
from tests.integration.worlds import DEMO_SELLER, WEBHOOK_SECRET, Webhook, World, WorldFactory
from tests.integration.worlds import ledger as cloud_ledger
from worker import queues
from worker.testing import drain, store_bill


@pytest.fixture
def erp_world(sim: SimulatorHandle, webhook: Webhook, new_world: WorldFactory) -> World:
    specs: list[dict[str, Any]] = [dict(spec) for spec in sim.specs]
    specs[0]["erp_webhook_url"] = webhook.url  # tenant demo: per-bill callbacks
    specs[0]["erp_webhook_secret"] = WEBHOOK_SECRET
    return new_world(specs=specs)


def _invoiced(world: World, bill_no: str, lines: int = 1) -> int:
    """A demo document pushed, issued and reconciled (``lines`` > 2 splits it in invoices)."""
    before = len(world.callbacks.received)
    doc_id = store_bill(world.sessions, "demo", make_bill(bill_no, DEMO_SELLER, lines=lines))
    assert world.push(doc_id) == "pushed"
    world.sim.wait_for(lambda: world.sim.bill(bill_no)["invoices"])
    body = world.callbacks.wait_for(before + 1)[before].body
    assert world.reconcile(body) == "processed"
    assert world.doc(doc_id).status == "invoiced"
    return doc_id


def _callback_of(world: World, action: Callable[[], object]) -> bytes:
    """The callback the cloud sends because of ``action`` (a clerk's void or red)."""
    count = len(world.callbacks.received)
    action()
    return world.callbacks.wait_for(count + 1)[count].body


def _events(webhook: Webhook) -> list[str]:
    return [json.loads(body)["event"] for _, body in webhook.received]


def _outbox_rows(world: World) -> int:
    with world.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(ErpOutbox)) or 0)


def _event_rows(world: World, doc_id: int) -> int:
    with world.sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(DocumentEvent)
                .where(DocumentEvent.document_id == doc_id)
            )
            or 0
        )


def test_a_void_in_the_cloud_reverses_the_document_and_tells_the_erp(
    erp_world: World, webhook: Webhook
) -> None:
    world = erp_world
    doc_id = _invoiced(world, "AI-VOID-1")
    body = _callback_of(world, lambda: world.sim.void("AI-VOID-1", reason="开错了"))
    assert world.reconcile(body) == "processed"
    assert world.doc(doc_id).status == "reversed"
    [invoice] = world.invoices(doc_id)
    assert (invoice.standing, invoice.invoice_status) == ("voided", "6")
    assert invoice.status_changed_at is not None
    drain(world.rt, world.enqueuer)
    assert _events(webhook) == [
        "document.pushed",
        "document.invoiced",
        "invoice.voided",
        "document.reversed",
    ]
    voided = json.loads(webhook.received[2][1])
    assert voided["invoice"]["standing"] == "voided"  # with the document's state as it is now
    assert voided["invoice"]["invoiceNum"] == invoice.invoice_num
    done = json.loads(webhook.received[3][1])
    assert (done["previousStatus"], done["status"]) == ("invoiced", "reversed")
    assert world.path(doc_id)[-1] == "reversed"
    # Never backwards: the old INVOICE.OPEN again (re-sent under another key) changes nothing.
    opened = world.callbacks.received[0].body
    assert world.reconcile(json.dumps({**json.loads(opened), "resent": 1}).encode()) == (
        "processed"
    )
    assert world.doc(doc_id).status == "reversed"
    [invoice] = world.invoices(doc_id)
    assert (invoice.standing, invoice.invoice_status) == ("voided", "6")
    drain(world.rt, world.enqueuer)
    assert len(webhook.received) == 4


def test_a_partial_red_keeps_invoiced_then_the_rest_reverses_it(
    erp_world: World, webhook: Webhook
) -> None:
    world = erp_world
    doc_id = _invoiced(world, "AI-RED-1")
    body = _callback_of(world, lambda: world.sim.red("AI-RED-1", amount="40.00", redReason="4"))
    assert world.reconcile(body) == "processed"
    assert world.doc(doc_id).status == "invoiced"
    [invoice] = world.invoices(doc_id)
    assert invoice.standing == "partially_reversed"
    assert invoice.can_red_amount == Decimal("60.00")
    body = _callback_of(world, lambda: world.sim.red("AI-RED-1"))  # the rest
    assert world.reconcile(body) == "processed"
    assert world.doc(doc_id).status == "reversed"
    [invoice] = world.invoices(doc_id)
    assert (invoice.standing, invoice.invoice_status) == ("reversed", "3")
    drain(world.rt, world.enqueuer)
    assert _events(webhook)[2:] == [
        "invoice.partially_reversed",
        "invoice.reversed",
        "document.reversed",
    ]


def test_a_duplicate_and_a_forged_cancel_change_nothing_wrongly(world: World) -> None:
    # Forged: an INVOICE.CANCEL for an invoice the cloud did NOT void. Unsigned, so it only
    # causes a query, which shows the invoice normal: nothing changes.
    doc_id = _invoiced(world, "AI-FORGE-1")
    [invoice] = world.invoices(doc_id)
    [item] = [i for i in parse_callback(world.callbacks.received[-1].body).items]
    forged_item = InvoiceItem.model_validate(
        {**item.to_wire(), "invoiceStatus": "6", "originalInvoiceStatus": "6"}
    )
    forged = build_callback(CallbackInterfaceCode.INVOICE_CANCEL, [forged_item], "per_bill")
    queries = len(cloud_ledger(world, "BILL.INVOICE.QUERY"))
    events, outbox = _event_rows(world, doc_id), _outbox_rows(world)
    assert world.reconcile(json.dumps(forged).encode()) == "processed"
    assert len(cloud_ledger(world, "BILL.INVOICE.QUERY")) == queries + 1
    assert world.doc(doc_id).status == "invoiced"
    [after] = world.invoices(doc_id)
    assert (after.standing, after.invoice_status) == ("normal", invoice.invoice_status)
    assert (_event_rows(world, doc_id), _outbox_rows(world)) == (events, outbox)
    # The real void, then the same callback again (a redelivery stored under another key):
    # the second writes nothing and asks the cloud nothing.
    body = _callback_of(world, lambda: world.sim.void("AI-FORGE-1"))
    assert world.reconcile(body) == "processed"
    assert world.doc(doc_id).status == "reversed"
    events, queries = _event_rows(world, doc_id), len(cloud_ledger(world, "BILL.INVOICE.QUERY"))
    again = json.dumps({**json.loads(body), "redelivery": 1}).encode()
    outbox = _outbox_rows(world)
    assert world.reconcile(again) == "processed"
    assert (_event_rows(world, doc_id), _outbox_rows(world)) == (events, outbox)
    assert len(cloud_ledger(world, "BILL.INVOICE.QUERY")) == queries


def test_a_lost_cancel_is_found_by_the_next_query(erp_world: World, webhook: Webhook) -> None:
    # Two invoices (three lines, two per invoice). The void of the first is called back but
    # the callback is lost; the red of the second triggers a query that shows both.
    world = erp_world
    doc_id = _invoiced(world, "AI-LOST-1", lines=3)
    first, second = world.invoices(doc_id)
    _callback_of(world, lambda: world.sim.void("AI-LOST-1", invoice=first.invoice_num))  # lost
    assert world.doc(doc_id).status == "invoiced"
    body = _callback_of(world, lambda: world.sim.red("AI-LOST-1", invoice=second.invoice_num))
    assert world.reconcile(body) == "processed"
    assert world.doc(doc_id).status == "reversed"
    assert [i.standing for i in world.invoices(doc_id)] == ["voided", "reversed"]
    drain(world.rt, world.enqueuer)
    assert sorted(_events(webhook)[2:]) == [
        "document.reversed",
        "invoice.reversed",
        "invoice.voided",
    ]


def test_a_red_bill_through_the_bridge_reverses_its_original_by_poll(
    erp_world: World, webhook: Webhook
) -> None:
    # The ERP submits the red bill itself; every callback is lost. The red document's poll
    # finds its red invoice, whose originalInvoiceNumber names the stored blue invoice.
    world = erp_world
    blue_id = _invoiced(world, "AI-BLUE-1")
    [blue] = world.invoices(blue_id)
    world.sim.set_faults(callback_drop=1.0)
    red_bill = make_bill(
        "AI-REDBILL-1",
        DEMO_SELLER,
        amount="-100.00",
        invoiceProperty="1",
        originalInvoiceNumber=blue.invoice_num,
    )
    red_id = store_bill(world.sessions, "demo", red_bill)
    assert world.push(red_id) == "pushed"
    world.sim.wait_for(lambda: world.sim.bill("AI-REDBILL-1")["invoices"])
    assert world.run(queues.POLL, document_id=red_id) == "invoiced"
    assert world.doc(blue_id).status == "reversed"
    [blue] = world.invoices(blue_id)
    [red] = world.invoices(red_id)
    assert (blue.standing, blue.can_red_amount) == ("reversed", Decimal("0.00"))
    assert [r["invoiceNum"] for r in blue.reversals] == [red.invoice_num]
    assert (red.invoice_property, red.original_invoice_num) == (1, blue.invoice_num)
    assert red.standing == "normal"
    drain(world.rt, world.enqueuer)
    by_bill = [(json.loads(b)["billNo"], json.loads(b)["event"]) for _, b in webhook.received]
    assert by_bill[2:] == [
        ("AI-REDBILL-1", "document.pushed"),
        ("AI-REDBILL-1", "document.invoiced"),
        ("AI-BLUE-1", "invoice.reversed"),
        ("AI-BLUE-1", "document.reversed"),
    ]
    # A late INVOICE.OPEN-style answer for the reversed document changes nothing.
    events = _event_rows(world, blue_id)
    assert world.run(queues.POLL, document_id=blue_id) == "skipped"
    assert (world.doc(blue_id).status, _event_rows(world, blue_id)) == ("reversed", events)


@pytest.mark.parametrize(
    ("cancel_item", "partial_red"), [("own_fields", "keeps_0"), ("original_only", "status_2")]
)
def test_a_trusting_bridge_reads_either_cancel_item_and_partial_red(
    trusting_world: World, cancel_item: str, partial_red: str
) -> None:
    # Callbacks applied as they come (confirm_with_query=false): the items themselves decide.
    # original_only: the CANCEL item names the voided invoice by original* only; a partial
    # INVOICE.RED says originalInvoiceStatus 3 (keeps_0) or 2 (status_2): neither decides.
    world = trusting_world
    world.sim.set_dialect(cancel_item=cancel_item, partial_red=partial_red)
    doc_id = _invoiced(world, "AI-TRUST-1", lines=3)
    first, second = world.invoices(doc_id)
    body = _callback_of(world, lambda: world.sim.void("AI-TRUST-1", invoice=first.invoice_num))
    assert world.reconcile(body) == "processed"
    body = _callback_of(
        world, lambda: world.sim.red("AI-TRUST-1", invoice=second.invoice_num, amount="50.00")
    )
    assert world.reconcile(body) == "processed"
    assert world.doc(doc_id).status == "invoiced"
    assert [i.standing for i in world.invoices(doc_id)] == ["voided", "partially_reversed"]
    assert len(world.invoices(doc_id)) == 2  # the red invoice is not one of this document's
    body = _callback_of(world, lambda: world.sim.red("AI-TRUST-1", invoice=second.invoice_num))
    assert world.reconcile(body) == "processed"
    assert world.doc(doc_id).status == "reversed"
    [_, reversed_one] = world.invoices(doc_id)
    assert reversed_one.standing == "reversed"
    assert len(reversed_one.reversals) == 2
    # A late INVOICE.OPEN (status 0, the full canRedAmount) is applied as it comes, and
    # still moves nothing back.
    opened = world.callbacks.received[0].body
    assert world.reconcile(json.dumps({**json.loads(opened), "resent": 1}).encode()) == (
        "processed"
    )
    assert world.doc(doc_id).status == "reversed"
    voided, reversed_one = world.invoices(doc_id)
    assert (voided.standing, voided.invoice_status) == ("voided", "6")
    assert (reversed_one.standing, reversed_one.can_red_amount) == ("reversed", Decimal("0.00"))


def test_the_http_view_and_fapiao_show_mark_the_changed_invoice(
    world: World, database_url: str
) -> None:
    doc_id = _invoiced(world, "AI-VIEW-1")
    body = _callback_of(world, lambda: world.sim.red("AI-VIEW-1", amount="25.00"))
    assert world.reconcile(body) == "processed"
    assert world.doc(doc_id).status == "invoiced"
    components = build_test_components(bridge_settings(database_url), world.sessions)
    with TestClient(create_app(components.settings, components=components)) as client:
        response = client.get("/v1/documents/AI-VIEW-1", headers=auth_headers())
    assert response.status_code == 200, response.text
    view = response.json()
    [invoice] = view["invoices"]
    assert (invoice["standing"], invoice["can_red_amount"]) == ("partially_reversed", "75.00")
    assert invoice["standing_changed_at"]
    [entry] = [e for e in view["timeline"] if e["kind"] == "invoice_standing"]
    assert entry["standing"] == "partially_reversed"
    table = run_cli(components, "show", "AI-VIEW-1")
    assert table.exit_code == 0, table.output
    assert "partially_reversed (left 75.00)" in table.output
    shown = json.loads(run_cli(components, "show", "AI-VIEW-1", "--json").output)
    assert shown["invoices"][0]["standing"] == "partially_reversed"
