"""A void (作废) whose callback is lost is healed by reconciliation: the cloud's
BILL.INVOICE.QUERY answer is applied like the poller's (``apply_invoices`` +
``owe_after_issuance``), the document becomes ``reversed``, the ERP is told, the finding is
kept as ``state_applied`` (no alert) and the next run finds nothing; ``--no-apply`` /
``apply=false`` only report. CLI, HTTP and the nightly job; real database and Redis, the
simulator and an ERP webhook over HTTP.

The callback is "lost" by never handing the simulator's INVOICE.CANCEL to the bridge.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from producers.bootstrap import Components
from producers.http import create_app
from producers.testing import API_KEY, auth_headers, build_test_components, run_cli
from schemas.cloud_contract import Dialect
from schemas.reconciliation import SHANGHAI
from simulator.testing import SimulatorHandle, make_bill
from store.columns import utcnow
from store.models import ErpOutbox
from tests.integration.worlds import (
    DEMO_SELLER,
    WEBHOOK_SECRET,
    Webhook,
    World,
    WorldFactory,
    travel,
)
from worker import queues
from worker.services.push import push_documents
from worker.testing import drain, store_bill, wait_until

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def erp_world(sim: SimulatorHandle, webhook: Webhook, new_world: WorldFactory) -> World:
    specs: list[dict[str, Any]] = [{**spec, "rate_limit_per_second": 2000.0} for spec in sim.specs]
    specs[0]["erp_webhook_url"] = webhook.url  # tenant demo
    specs[0]["erp_webhook_secret"] = WEBHOOK_SECRET
    return new_world(specs=specs, cloud=Dialect.default().as_dict())


@pytest.fixture
def components(erp_world: World) -> Components:
    settings = erp_world.rt.settings.model_copy(update={"api_keys": [SecretStr(API_KEY)]})
    return build_test_components(
        settings,
        erp_world.sessions,
        enqueuer=erp_world.enqueuer,  # what a run owes the ERP is drained like the workers'
        tenants=erp_world.rt.tenants,
        redis=erp_world.rt.redis,
    )


def invoiced(world: World, *bill_nos: str) -> list[int]:
    """Demo documents pushed, issued in the cloud, polled to ``invoiced``, ERP told."""
    ids = [
        store_bill(world.sessions, "demo", make_bill(n, DEMO_SELLER, auto_invoice=True))
        for n in bill_nos
    ]
    assert {o.status for o in push_documents(world.rt, ids)} == {"pushed"}
    world.enqueuer.take()  # the polls they owe: the test polls itself
    for bill_no, document_id in zip(bill_nos, ids, strict=True):
        wait_until(lambda b=bill_no: world.sim.bill(b)["state"] == "invoiced", timeout=20)
        world.run(queues.POLL, document_id=document_id)
        assert world.doc(document_id).status == "invoiced", world.path(document_id)
    drain(world.rt, world.enqueuer)
    return ids


def lose_a_void(world: World, bill_no: str) -> None:
    """作废 in the cloud; its INVOICE.CANCEL reaches the recorder, never the bridge."""
    before = len(world.callbacks.received)
    world.sim.void(bill_no, reason="开错了")
    world.callbacks.wait_for(before + 1)


def owed(world: World, document_id: int) -> list[str]:
    with world.sessions() as session:
        return list(
            session.scalars(
                select(ErpOutbox.event)
                .where(ErpOutbox.document_id == document_id)
                .order_by(ErpOutbox.id)
            )
        )


def events(webhook: Webhook) -> list[tuple[str, str]]:
    return [(json.loads(body)["event"], json.loads(body)["billNo"]) for _, body in webhook.received]


def test_fapiao_reconcile_applies_a_lost_void_and_tells_the_erp(
    erp_world: World, components: Components, webhook: Webhook
) -> None:
    world = erp_world
    voided, kept = invoiced(world, "HV-VOID", "HV-KEEP")
    lose_a_void(world, "HV-VOID")
    assert world.doc(voided).status == "invoiced"
    told = len(webhook.received)
    day = utcnow().astimezone(SHANGHAI).date().isoformat()
    args = ("reconcile", "--since", day, "--grace-minutes", "0", "--json")

    # --no-apply: reported as before, nothing changes.
    dry = run_cli(components, *args, "--no-apply")
    assert dry.exit_code == 1, dry.output
    report = json.loads(dry.stdout)
    assert report["apply"] is False
    assert [(f["kind"], f["billNo"], f["applied"]) for f in report["findings"]] == [
        ("state_mismatch", "HV-VOID", False)
    ]
    assert world.doc(voided).status == "invoiced"
    assert [i.standing for i in world.invoices(voided)] == ["normal"]
    assert owed(world, voided) == ["document.pushed", "document.invoiced"]

    # Applied: reversed, the ERP owed invoice.voided + document.reversed, finding kept.
    healed = run_cli(components, *args)
    assert healed.exit_code == 0, healed.output  # nothing left for anyone
    report = json.loads(healed.stdout)
    assert report["apply"] is True and report["total"] == 1
    assert report["counts"]["state_applied"] == 1 and report["counts"]["state_mismatch"] == 0
    [finding] = report["findings"]
    assert (finding["kind"], finding["billNo"], finding["applied"]) == (
        "state_applied",
        "HV-VOID",
        True,
    )
    assert finding["reason"].startswith("cloud shows voided")
    assert finding["reason"].endswith("the bridge has applied it and told the ERP")
    assert "通知 ERP" in finding["reason_zh"]
    assert world.doc(voided).status == "reversed"
    assert world.path(voided)[-1] == "reversed"
    [invoice] = world.invoices(voided)
    assert (invoice.standing, invoice.invoice_status) == ("voided", "6")
    assert owed(world, voided)[-2:] == ["invoice.voided", "document.reversed"]
    assert world.doc(kept).status == "invoiced" and len(owed(world, kept)) == 2
    drain(world.rt, world.enqueuer)
    assert events(webhook)[told:] == [
        ("invoice.voided", "HV-VOID"),
        ("document.reversed", "HV-VOID"),
    ]
    done = json.loads(webhook.received[-1][1])
    assert (done["previousStatus"], done["status"]) == ("invoiced", "reversed")

    # The next run finds nothing and owes nothing more.
    again = run_cli(components, *args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["total"] == 0
    assert len(owed(world, voided)) == 4


def test_http_apply_false_reports_and_the_nightly_job_heals(
    erp_world: World, components: Components, webhook: Webhook
) -> None:
    world = erp_world
    [voided] = invoiced(world, "HN-VOID")
    lose_a_void(world, "HN-VOID")
    day = utcnow().astimezone(SHANGHAI).date().isoformat()
    with TestClient(create_app(components.settings, components=components)) as client:
        answer = client.get(
            "/v1/reconciliation",
            params={"since": day, "grace_minutes": 0, "apply": "false"},
            headers=auth_headers(),
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["counts"]["state_mismatch"] == 1 and answer.json()["apply"] is False
    assert world.doc(voided).status == "invoiced"

    travel(world, 24 * 3600)  # tomorrow: yesterday is today's window
    status = world.run(queues.RECONCILE_DAILY)
    assert "demo=1" in status, status
    assert world.doc(voided).status == "reversed"
    assert owed(world, voided)[-2:] == ["invoice.voided", "document.reversed"]
    with TestClient(create_app(components.settings, components=components)) as client:
        text = client.get("/metrics").text
    assert 'fapiao_reconciliation_findings{kind="state_applied",tenant="demo"} 1.0' in text
    assert 'fapiao_reconciliation_findings{kind="state_mismatch",tenant="demo"} 0.0' in text


@pytest.mark.parametrize(
    ("reading", "amount", "standing", "status", "event"),
    [
        ("keeps_0", None, "reversed", "reversed", "invoice.reversed"),
        # a partial 红冲 under each reading of the original's invoiceStatus (docs/DIALECTS.md)
        ("keeps_0", "40.00", "partially_reversed", "invoiced", "invoice.partially_reversed"),
        ("status_2", "40.00", "partially_reversed", "invoiced", "invoice.partially_reversed"),
    ],
)
def test_a_lost_red_flush_is_applied_too(
    erp_world: World,
    components: Components,
    reading: str,
    amount: str | None,
    standing: str,
    status: str,
    event: str,
) -> None:
    erp_world.sim.set_dialect(partial_red=reading)
    world = erp_world
    [document_id] = invoiced(world, "HR-RED")
    before = len(world.callbacks.received)
    world.sim.red("HR-RED", amount=amount, redReason="4")
    world.callbacks.wait_for(before + 1)  # INVOICE.RED, never handed to the bridge
    day = utcnow().astimezone(SHANGHAI).date().isoformat()
    result = run_cli(components, "reconcile", "--since", day, "--grace-minutes", "0", "--json")
    assert result.exit_code == 0, result.output
    [finding] = json.loads(result.stdout)["findings"]
    assert (finding["kind"], finding["applied"]) == ("state_applied", True), finding
    assert world.doc(document_id).status == status
    assert [i.standing for i in world.invoices(document_id) if i.invoice_property != 1] == [
        standing
    ]
    assert event in owed(world, document_id)
    again = run_cli(components, "reconcile", "--since", day, "--grace-minutes", "0", "--json")
    assert json.loads(again.stdout)["total"] == 0, again.output
