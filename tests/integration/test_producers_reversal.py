"""Red-letter (红冲) documents through the bridge: ``fapiao reverse``, ``POST …/reverse`` and an
ERP's own red bills, against the simulator over HTTP (real database, Redis, worker services).

A reversal makes one red document per blue invoice, checked against what the cloud says may
still be reversed (canRedAmount, less red documents in flight), linked to its original both
ways; a repeat answers the same red documents; refusals name the field and the rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from producers.bootstrap import Components
from producers.cli import CliContext, app
from producers.http import create_app
from producers.testing import API_KEY, CALLBACK_SECRET, auth_headers, build_test_components
from schemas.kingdee import InvoiceItem
from simulator.testing import make_bill
from store.models import Document, OperatorAudit
from tests.integration.worlds import DEMO_SELLER, World, WorldFactory
from worker import queues
from worker.services.query import query_bill
from worker.testing import drain, store_bill

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

H = auth_headers()


class Bridge:
    """The world's worker services plus the producers (HTTP app, CLI) on the same database,
    asking the simulator through the world's runtime."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.components: Components = build_test_components(
            world.rt.settings, world.sessions, enqueuer=world.enqueuer, tenants=world.rt.tenants
        )
        self.components.runtime = world.rt
        self.http = TestClient(create_app(world.rt.settings, components=self.components))
        self.seen = 0

    def cli(self, *args: str) -> Result:
        context = CliContext(
            load_settings=lambda: self.world.rt.settings,
            build_components=lambda _: self.components,
        )
        return CliRunner().invoke(app, list(args), obj=context, env={"COLUMNS": "220"})

    def settle(self, callbacks: int) -> None:
        """Run what is owed, then take callbacks until ``callbacks`` arrived in all."""
        drain(self.world.rt, self.world.enqueuer)
        received = self.world.callbacks.wait_for(callbacks)
        for callback in received[self.seen :]:
            self.world.reconcile(callback.body)
        self.seen = len(received)
        drain(self.world.rt, self.world.enqueuer)

    def issued(self, bill: dict[str, Any], callbacks: int = 1) -> list[InvoiceItem]:
        """Store, push and issue ``bill``; its invoices as the cloud lists them."""
        document_id = store_bill(self.world.sessions, "demo", bill)
        assert self.world.push(document_id) == "pushed"
        self.settle(self.seen + callbacks)
        assert self.world.doc(document_id).status == "invoiced"
        return self.cloud(bill["billNo"])

    def cloud(self, bill_no: str) -> list[InvoiceItem]:
        tenant = self.world.rt.tenant("demo")
        assert tenant is not None
        answer = query_bill(
            self.world.rt,
            tenant,
            bill_no=bill_no,
            seller_tax_id=DEMO_SELLER,
            document_id=None,
            attempt=None,
        )
        assert answer.kind == "present", answer
        return sorted(answer.items, key=lambda item: item.invoiceNum or "")

    def show(self, bill_no: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/documents/{bill_no}", headers=H)
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    def documents(self) -> int:
        with self.world.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Document)) or 0)


@pytest.fixture
def bridge(new_world: WorldFactory) -> Iterator[Bridge]:
    world = new_world({"api_keys": [API_KEY], "callback_secret": CALLBACK_SECRET})
    bridge = Bridge(world)
    with bridge.http:
        yield bridge


def _issues(response: Any) -> set[tuple[str, str]]:
    return {(issue["path"], issue["rule"]) for issue in response.json()["issues"]}


def test_full_reversal_through_the_cli_makes_one_red_document_per_blue_invoice(
    bridge: Bridge,
) -> None:
    # Three lines, at most two per invoice (the sim fixture): two blue invoices.
    blues = bridge.issued(make_bill("RV-FULL", DEMO_SELLER, lines=3, auto_invoice=True))
    assert [b.totalAmount for b in blues] == [Decimal("200.00"), Decimal("100.00")]

    result = bridge.cli("reverse", "RV-FULL", "--red-reason", "1", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["outcome"] == "created"
    reds = answer["red_documents"]
    assert [(r["bill_no"], r["total_amount"], r["original_invoice_number"]) for r in reds] == [
        ("RV-FULL-R1", "-200.00", blues[0].invoiceNum),
        ("RV-FULL-R2", "-100.00", blues[1].invoiceNum),
    ]
    bridge.settle(bridge.seen + 4)  # INVOICE.OPEN of each red bill, INVOICE.RED of each blue

    for red in reds:
        view = bridge.show(red["bill_no"])
        assert view["status"] == "invoiced"
        assert view["original"]["bill_no"] == "RV-FULL"
    original = bridge.show("RV-FULL")
    assert [(r["bill_no"], r["status"]) for r in original["red_documents"]] == [
        ("RV-FULL-R1", "invoiced"),
        ("RV-FULL-R2", "invoiced"),
    ]
    # The cloud's blue invoices show the reversal: nothing left to reverse.
    after = [item for item in bridge.cloud("RV-FULL") if item.invoiceProperty != 1]
    assert [(item.canRedAmount, item.invoiceStatus) for item in after] == [
        (Decimal("0.00"), "3"),
        (Decimal("0.00"), "3"),
    ]
    shown = bridge.cli("show", "RV-FULL")
    assert "RV-FULL-R2" in shown.output and "red-letter documents" in shown.output

    # The same request again: the same red documents, nothing new, even though the cloud now
    # says nothing may be reversed.
    count = bridge.documents()
    again = bridge.cli("reverse", "RV-FULL", "--red-reason", "1", "--json")
    assert again.exit_code == 0, again.output
    repeat = json.loads(again.output)
    assert repeat["outcome"] == "unchanged"
    assert [r["bill_no"] for r in repeat["red_documents"]] == ["RV-FULL-R1", "RV-FULL-R2"]
    assert bridge.documents() == count
    with bridge.world.sessions() as session:
        audits = session.scalars(select(OperatorAudit)).all()
        assert [(a.action, a.count) for a in audits] == [("reverse", 2)]


def test_partial_reversal_over_http_and_a_second_one_over_the_limit_refused(
    bridge: Bridge,
) -> None:
    [blue] = bridge.issued(make_bill("RV-PART", DEMO_SELLER, lines=1, auto_invoice=True))
    url = "/v1/documents/RV-PART/reverse"
    body = {"redReason": "4", "lines": [{"detailId": "RV-PART-1", "amount": "40.00"}]}
    first = bridge.http.post(url, json=body, headers=H)
    assert first.status_code == 202, first.text
    [red] = first.json()["red_documents"]
    assert (red["total_amount"], red["original_invoice_number"]) == ("-40.00", blue.invoiceNum)
    repeat = bridge.http.post(url, json=body, headers=H)
    assert repeat.status_code == 200, repeat.text
    assert [r["bill_no"] for r in repeat.json()["red_documents"]] == [red["bill_no"]]

    # 40.00 is in flight (not issued yet): 60.00 is left, on the line and in total.
    count = bridge.documents()
    over = {"redReason": "4", "lines": [{"detailId": "RV-PART-1", "amount": "70.00"}]}
    refused = bridge.http.post(url, json=over, headers=H)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "invalid_reversal"
    assert _issues(refused) == {
        ("billDetail[0].amount", "can_red_amount"),
        ("totalAmount", "can_red_amount"),
        ("totalAmount", "can_red_tax_amount"),
    }
    total = [i for i in refused.json()["issues"] if i["rule"] == "can_red_amount"][1]
    assert "at most 60.00 may still be reversed" in total["message"]
    assert bridge.documents() == count

    bridge.settle(bridge.seen + 2)
    assert bridge.show(red["bill_no"])["status"] == "invoiced"
    [after] = [item for item in bridge.cloud("RV-PART") if item.invoiceProperty != 1]
    assert (after.canRedAmount, after.invoiceStatus) == (Decimal("60.00"), "0")
    # Issued now, the 40.00 counts in the cloud's canRedAmount and no longer as in flight.
    still_over = bridge.http.post(url, json=over, headers=H)
    assert still_over.status_code == 422
    assert ("totalAmount", "can_red_amount") in _issues(still_over)
    assert bridge.show("RV-PART")["red_documents"][0]["status"] == "invoiced"
    # The whole document now: what is left, 60.00.
    rest = bridge.http.post(url, json={"redReason": "4"}, headers=H)
    assert rest.status_code == 202, rest.text
    assert [(r["bill_no"], r["total_amount"]) for r in rest.json()["red_documents"]] == [
        ("RV-PART-R1", "-60.00")
    ]


def test_erp_red_bills_are_linked_to_their_original_and_checked(bridge: Bridge) -> None:
    [blue] = bridge.issued(make_bill("RV-ERP", DEMO_SELLER, lines=1, auto_invoice=True))

    def red(bill_no: str, amount: str, **header: Any) -> dict[str, Any]:
        bill = make_bill(bill_no, DEMO_SELLER, amount=amount, auto_invoice=False, **header)
        bill["billDetail"][0]["detailId"] = "RV-ERP-1"
        del bill["billDetail"][0]["quantity"], bill["billDetail"][0]["price"]
        bill.update(invoiceProperty="1", originalInvoiceNumber=blue.invoiceNum)
        return bill

    count = bridge.documents()
    over = bridge.http.post("/v1/documents", json=_wire(red("E-RED-1", "-150.00", redReason="1")),
                            headers=H)  # fmt: skip
    assert over.status_code == 422, over.text
    assert _issues(over) == {
        ("billDetail[0].amount", "can_red_amount"),
        ("totalAmount", "can_red_amount"),
        ("totalAmount", "can_red_tax_amount"),
    }
    unknown = red("E-RED-2", "-10.00", redReason="1")
    unknown["originalInvoiceNumber"] = "26442299999999999999"
    refused = bridge.http.post("/v1/documents", json=_wire(unknown), headers=H)
    assert refused.status_code == 422
    assert _issues(refused) == {("originalInvoiceNumber", "original_unknown")}
    no_reason = bridge.http.post("/v1/documents", json=_wire(red("E-RED-3", "-10.00")), headers=H)
    assert no_reason.status_code == 422
    assert _issues(no_reason) == {("redReason", "red_reason")}
    assert bridge.documents() == count  # nothing half-accepted

    accepted = bridge.http.post(
        "/v1/documents", json=_wire(red("E-RED-4", "-30.00", redReason="2")), headers=H
    )
    assert accepted.status_code == 202, accepted.text
    assert bridge.show("E-RED-4")["original"]["bill_no"] == "RV-ERP"
    assert [r["bill_no"] for r in bridge.show("RV-ERP")["red_documents"]] == ["E-RED-4"]


def test_a_red_special_invoice_needs_red_info_bill_no(bridge: Bridge) -> None:
    bridge.issued(make_bill("RV-SPC", DEMO_SELLER, invoice_type="08xdp", auto_invoice=True))
    url = "/v1/documents/RV-SPC/reverse"
    refused = bridge.http.post(url, json={"redReason": "2"}, headers=H)
    assert refused.status_code == 422, refused.text
    assert _issues(refused) == {("redInfoBillNo", "red_info_required")}
    by_cli = bridge.cli("reverse", "RV-SPC", "--red-reason", "2")
    assert by_cli.exit_code == 1
    assert "redInfoBillNo [red_info_required]" in by_cli.output
    body = {"redReason": "2", "redInfoBillNo": "4403012511000123"}
    accepted = bridge.http.post(url, json=body, headers=H)
    assert accepted.status_code == 202, accepted.text
    bridge.settle(bridge.seen + 2)
    assert bridge.show("RV-SPC-R1")["status"] == "invoiced"


def test_bad_requests_and_unreversible_documents(bridge: Bridge) -> None:
    bridge.issued(make_bill("RV-BAD", DEMO_SELLER, auto_invoice=True))
    url = "/v1/documents/RV-BAD/reverse"
    bad = bridge.http.post(url, json={"redReason": "1", "lines": [{"amount": "1"}]}, headers=H)
    assert (bad.status_code, bad.json()["field"]) == (400, "lines[0].detailId")
    unknown_line = bridge.http.post(
        url, json={"redReason": "1", "lines": [{"detailId": "nope"}]}, headers=H
    )
    assert unknown_line.status_code == 422
    assert _issues(unknown_line) == {("lines[0].detailId", "unknown_line")}
    assert bridge.http.post("/v1/documents/NOPE/reverse", json={"redReason": "1"},
                            headers=H).status_code == 404  # fmt: skip
    made = bridge.http.post(url, json={"redReason": "1"}, headers=H)
    assert made.status_code == 202
    of_red = bridge.http.post("/v1/documents/RV-BAD-R1/reverse", json={"redReason": "1"},
                              headers=H)  # fmt: skip
    assert (of_red.status_code, of_red.json()["error"]["code"]) == (409, "not_reversible")
    assert bridge.http.post(url, json={"redReason": "1"}).status_code == 401


def _wire(bill: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready: amounts as exact text."""
    return json.loads(json.dumps(bill, default=str))


def test_partial_reversals_under_the_other_readings_of_lines_and_partial_status(
    bridge: Bridge,
) -> None:
    # Lines under invoiceDetail instead of goods; a partly reversed invoice says 2 (部分红冲).
    bridge.world.sim.set_dialect(query_lines="invoiceDetail", partial_red="status_2")
    bridge.issued(make_bill("RV-DIA", DEMO_SELLER, lines=2, auto_invoice=True))
    url = "/v1/documents/RV-DIA/reverse"
    first = {"redReason": "1", "lines": [{"detailId": "RV-DIA-1", "amount": "30.00"}]}
    assert bridge.http.post(url, json=first, headers=H).status_code == 202
    bridge.settle(bridge.seen + 2)
    [blue] = [item for item in bridge.cloud("RV-DIA") if item.invoiceProperty != 1]
    assert (blue.canRedAmount, blue.invoiceStatus) == (Decimal("170.00"), "2")
    over = {"redReason": "1", "lines": [{"detailId": "RV-DIA-1", "amount": "70.01"}]}
    refused = bridge.http.post(url, json=over, headers=H)
    assert _issues(refused) >= {("billDetail[0].amount", "can_red_amount")}
    rest = {"redReason": "1", "lines": [{"detailId": "RV-DIA-1"}, {"detailId": "RV-DIA-2"}]}
    made = bridge.http.post(url, json=rest, headers=H)
    assert made.status_code == 202, made.text
    assert made.json()["red_documents"][0]["total_amount"] == "-170.00"
    bridge.settle(bridge.seen + 2)
    [blue] = [item for item in bridge.cloud("RV-DIA") if item.invoiceProperty != 1]
    assert (blue.canRedAmount, blue.invoiceStatus) == (Decimal("0.00"), "3")


def test_nothing_is_made_when_the_cloud_cannot_be_asked(bridge: Bridge) -> None:
    [blue] = bridge.issued(make_bill("RV-DOWN", DEMO_SELLER, auto_invoice=True))
    count = bridge.documents()
    bridge.world.sim.set_faults(api_5xx_before=1.0)
    down = bridge.http.post("/v1/documents/RV-DOWN/reverse", json={"redReason": "1"}, headers=H)
    assert (down.status_code, down.json()["error"]["code"]) == (503, "cloud_unavailable")
    red = make_bill("E-DOWN", DEMO_SELLER, amount="-10.00", auto_invoice=False, redReason="1")
    del red["billDetail"][0]["quantity"], red["billDetail"][0]["price"]
    red.update(invoiceProperty="1", originalInvoiceNumber=blue.invoiceNum)
    refused = bridge.http.post("/v1/documents", json=_wire(red), headers=H)
    assert refused.status_code == 422
    assert _issues(refused) == {("", "cloud_unavailable")}
    assert bridge.documents() == count


def test_a_whole_reversal_of_one_bill_of_a_merged_invoice_reverses_only_its_lines(
    bridge: Bridge,
) -> None:
    bridge.world.sim.set_dialect(merge="when_asked")
    bills = [
        make_bill(no, DEMO_SELLER, amount=amount, auto_invoice=True, autoMerge="1")
        for no, amount in (("RV-MA", "100.00"), ("RV-MB", "50.00"))
    ]
    ids = [store_bill(bridge.world.sessions, "demo", bill) for bill in bills]
    bridge.world.run(
        queues.PUSH_BATCH,
        document_ids=ids,
        bill_nos=["RV-MA", "RV-MB"],
        tenants=["demo", "demo"],
    )
    bridge.settle(bridge.seen + 1)
    drain(bridge.world.rt, bridge.world.enqueuer)
    [merged] = bridge.cloud("RV-MA")
    assert merged.totalAmount == Decimal("150.00")
    answer = bridge.http.post("/v1/documents/RV-MA/reverse", json={"redReason": "1"}, headers=H)
    assert answer.status_code == 202, answer.text
    assert [r["total_amount"] for r in answer.json()["red_documents"]] == ["-100.00"]
