"""A red bill the cloud refuses (-10013 / -10014 / -10015 at BILL.PUSH) is ``rejected`` with a
reason that says what the refusal means and what to do, not just the cloud's words.
The bills are stored directly (as an ERP bypassing the bridge's own checks would have them)."""

from __future__ import annotations

from typing import Any

from simulator.testing import make_bill
from tests.integration.worlds import DEMO_SELLER, World
from worker.testing import drain, store_bill


def _blue(world: World, bill_no: str) -> str:
    document_id = store_bill(
        world.sessions, "demo", make_bill(bill_no, DEMO_SELLER, auto_invoice=True)
    )
    assert world.push(document_id) == "pushed"
    world.reconcile(world.callbacks.wait_for(1)[-1].body)
    drain(world.rt, world.enqueuer)
    [invoice] = world.invoices(document_id)
    assert invoice.invoice_num
    return invoice.invoice_num


def _red(bill_no: str, number: str, amount: str) -> dict[str, Any]:
    bill = make_bill(bill_no, DEMO_SELLER, amount=amount, auto_invoice=False, redReason="1")
    del bill["billDetail"][0]["quantity"], bill["billDetail"][0]["price"]
    bill.update(invoiceProperty="1", originalInvoiceNumber=number)
    return bill


def test_over_can_red_amount_and_unknown_original_are_rejected_with_what_to_do(
    world: World,
) -> None:
    number = _blue(world, "RR-BLUE")
    over = store_bill(world.sessions, "demo", _red("RR-OVER", number, "-150.00"))
    assert world.push(over) == "rejected"
    document = world.doc(over)
    assert document.last_error_code == "-10015"
    assert "can_red_amount" in (document.last_error_message or "")
    assert "100.00 (excl. tax) is left" in (document.last_error_message or "")

    unknown = store_bill(
        world.sessions, "demo", _red("RR-UNKNOWN", "26440000000000000009", "-1.00")
    )
    assert world.push(unknown) == "rejected"
    assert "no issued blue invoice 26440000000000000009" in (
        world.doc(unknown).last_error_message or ""
    )


def test_a_voided_original_is_rejected_as_nothing_to_reverse(world: World) -> None:
    number = _blue(world, "RR-VOID")
    world.sim.void("RR-VOID")
    red = store_bill(world.sessions, "demo", _red("RR-VOIDED", number, "-10.00"))
    assert world.push(red) == "rejected"
    assert "was voided (作废)" in (world.doc(red).last_error_message or "")
