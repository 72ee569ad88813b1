"""Builders shared by the reconciliation unit tests (not a test module): one bridge document
``B-1`` of tenant ``demo`` (100.00 net, 113.00 with tax), its invoices as the bridge records
them, and the cloud's query items for the same bill.

- ``NOW``: the instant every document was submitted and last changed at;
- ``doc(status, *invoices)``: the ``BridgeDocument`` (id 1) in ``status`` holding ``invoices``;
- ``bridge(standing, reds, order=, number=, status=)``: a ``BridgeInvoice``, by default order
  ``O1``, number ``N1``, status ``0``, 100.00 / 113.00;
- ``item(status, **fields)``: an ``InvoiceItem`` of bill ``B-1``, number ``N1``, 113.00 with
  tax; the amount without tax only when given.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from schemas.kingdee import InvoiceItem
from store.reconciliation import BridgeDocument, BridgeInvoice

__all__ = ["NOW", "bridge", "doc", "item"]

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def doc(status: str, *invoices: BridgeInvoice) -> BridgeDocument:
    return BridgeDocument(
        1, "demo", "S1", "B-1", status, NOW, NOW, Decimal("100.00"), Decimal("113.00"),
        list(invoices),
    )  # fmt: skip


def bridge(
    standing: str = "normal",
    reds: tuple[str, ...] = (),
    *,
    order: str = "O1",
    number: str = "N1",
    status: str = "0",
) -> BridgeInvoice:
    return BridgeInvoice(
        order, "", number, status, Decimal("100.00"), Decimal("113.00"), standing, reds
    )


def item(status: str | None = "0", **fields: Any) -> InvoiceItem:
    values = {"billNo": "B-1", "invoiceNum": "N1", "invoiceStatus": status,
              "includeTaxAmount": "113.00", **fields}  # fmt: skip
    return InvoiceItem.model_validate(values)
