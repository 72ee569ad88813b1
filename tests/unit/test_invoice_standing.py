"""An issued invoice's standing after issuance, from what the cloud reports
(``store.invoices.standing_of``; docs/CLOUD-CONTRACT.md §15 "What the bridge relies on")."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from store.invoices import standing_of
from store.models import Invoice
from store.states import InvoiceStanding


def _invoice(**values: Any) -> Invoice:
    base: dict[str, Any] = {
        "invoice_num": "26310000000000000001",
        "invoice_status": "0",
        "total_amount": Decimal("100.00"),
        "can_red_amount": Decimal("100.00"),
    }
    return Invoice(**{**base, **values})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "normal"),
        ({"invoice_status": "6", "can_red_amount": Decimal("0.00")}, "voided"),
        ({"invoice_status": "3", "can_red_amount": Decimal("0.00")}, "reversed"),
        ({"can_red_amount": Decimal("60.00")}, "partially_reversed"),  # keeps_0
        ({"invoice_status": "2", "can_red_amount": Decimal("60.00")}, "partially_reversed"),
        # Not read: 2 alone (待开 in 5.1.03), canRedAmount 0 alone (unset / voided's).
        ({"invoice_status": "2"}, "normal"),
        ({"can_red_amount": Decimal("0.00")}, "normal"),
        ({"reversals": [{"totalAmount": "-40.00"}]}, "partially_reversed"),
        ({"reversals": [{"totalAmount": "-40.00"}, {"totalAmount": "-60.00"}]}, "reversed"),
        # A red invoice, or nothing issued, has no standing to lose.
        ({"invoice_property": 1, "invoice_status": "3"}, "normal"),
        ({"invoice_num": None, "invoice_status": "6"}, "normal"),
    ],
)
def test_standing_of(values: dict[str, Any], expected: str) -> None:
    assert standing_of(_invoice(**values)) is InvoiceStanding(expected)
