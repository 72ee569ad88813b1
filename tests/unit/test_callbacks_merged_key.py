"""A merged invoice is called back once per bill with one orderNo: each is news for its bill."""

from __future__ import annotations

from producers.callbacks import callback_dedupe_key
from schemas.kingdee import (
    CallbackInterfaceCode,
    CallbackStyle,
    InvoiceItem,
    build_callback,
    parse_callback,
)


def key(bill_no: str, style: CallbackStyle = "per_invoice") -> str:
    item = InvoiceItem(billNo=bill_no, orderNo="1000000000000000042", invoiceNum="2544200000001")
    body = build_callback(CallbackInterfaceCode.INVOICE_OPEN, [item], style)
    return callback_dedupe_key(parse_callback(body))


def test_each_bill_of_a_merged_invoice_has_its_own_key() -> None:
    assert key("M-1") != key("M-2")
    assert key("M-1") == key("M-1")  # a redelivery is still a duplicate
    assert key("M-1", "per_bill") != key("M-2", "per_bill")
    assert key("M-1").startswith("INVOICE.OPEN|per_invoice|order:1000000000000000042")
