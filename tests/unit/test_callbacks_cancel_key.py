"""The dedupe key of INVOICE.CANCEL callbacks whose items carry only ``original*``
(dialect ``cancel_item=original_only``): two voids of one bill are two facts."""

from __future__ import annotations

import json

from producers.callbacks import callback_dedupe_key
from schemas.kingdee import CallbackInterfaceCode, InvoiceItem, build_callback, parse_callback


def _cancel(number: str) -> str:
    item = InvoiceItem.model_validate(
        {
            "billNo": "SO-1",
            "invoiceType": "10xdp",
            "invoiceProperty": 0,
            "invoiceStatus": "6",
            "originalInvoiceCode": "",
            "originalInvoiceNumber": number,
            "originalInvoiceStatus": "6",
        }
    )
    body = build_callback(CallbackInterfaceCode.INVOICE_CANCEL, [item], "per_invoice")
    return callback_dedupe_key(parse_callback(json.dumps(body).encode()))


def test_two_voids_of_one_bill_have_two_keys_and_a_resend_the_same() -> None:
    first, second = _cancel("26310000000000000001"), _cancel("26310000000000000002")
    assert first != second
    assert _cancel("26310000000000000001") == first
