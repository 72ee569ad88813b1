"""Dialect ``unknown_fields=refused``: the bridge sends only §6.1 fields.

The wire bill is built from a document that sets EVERY optional field (header and line); each
key must be one the contract documents — the simulator's independent transcription of §6.1
(``simulator.rules.HEADER_SPEC`` / ``LINE_SPEC``), which refuses any other key under that
reading.
"""

from __future__ import annotations

from typing import Any

from schemas.erp import Bill, BillDetail
from simulator.rules import HEADER_SPEC, LINE_SPEC, RuledBill, check_bill
from simulator.testing import make_bill

SELLER = "91310000SIM0000001"


def _filled(model: Any) -> Any:
    """``model`` with every field that is None set to a placeholder (not validated: only the
    keys of ``to_wire`` matter here)."""
    missing = {name: "1" for name, value in model.__dict__.items() if value is None}
    return model.model_copy(update=missing)


def test_every_key_of_a_fully_filled_wire_bill_is_documented() -> None:
    bill = Bill.model_validate(make_bill("WIRE-1", SELLER, lines=2))
    full = _filled(bill).model_copy(update={"billDetail": [_filled(d) for d in bill.billDetail]})
    wire = full.to_wire()
    assert set(wire) == set(Bill.model_fields)  # every optional field is on the wire
    assert set(wire) <= set(HEADER_SPEC), set(wire) - set(HEADER_SPEC)
    for line in wire["billDetail"]:
        assert set(line) == set(BillDetail.model_fields)
        assert set(line) <= set(LINE_SPEC), set(line) - set(LINE_SPEC)


def test_a_real_bill_with_optional_fields_passes_the_strict_reading() -> None:
    wire = Bill.model_validate(
        make_bill("WIRE-2", SELLER, lines=2, buyerRecipientMail="a@example.com", remark="备注")
    ).to_wire()
    assert isinstance(check_bill(wire, unknown_fields="refused"), RuledBill)
