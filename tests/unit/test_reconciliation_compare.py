"""How one bridge document is compared with the cloud's answer: ``BRIDGE_VIEW`` per state, the
per-invoice status, failed attempts and red invoices ignored, and how the table is extended
for a new state (``reversed``) without touching the comparison."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from schemas.kingdee import InvoiceItem
from store.reconciliation import BridgeDocument, BridgeInvoice
from worker.services import reconciliation
from worker.services.query import QueryAnswer
from worker.services.reconciliation import Expect, _compare_document

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def doc(status: str, *invoices: BridgeInvoice) -> BridgeDocument:
    return BridgeDocument(
        1, "demo", "S1", "B-1", status, NOW, NOW, Decimal("100.00"), Decimal("113.00"),
        list(invoices),
    )  # fmt: skip


def item(status: str | None = "0", **kw: Any) -> InvoiceItem:
    values = {"billNo": "B-1", "invoiceNum": "N1", "invoiceStatus": status,
              "includeTaxAmount": "113.00", **kw}  # fmt: skip
    return InvoiceItem.model_validate(values)


BRIDGE_N1 = BridgeInvoice("O1", "", "N1", "0", Decimal("100.00"), Decimal("113.00"))


def kinds(document: BridgeDocument, answer: QueryAnswer) -> list[tuple[str, str]]:
    return [(f.kind.value, f.reason) for f in _compare_document(document, None, answer)]


@pytest.mark.parametrize(
    ("status", "answer", "expected"),
    [
        ("pushed", QueryAnswer("present", items=[]), []),
        ("pushed", QueryAnswer("absent", "-10011"), ["cloud_unknown"]),
        ("pushed", QueryAnswer("present", items=[item()]), ["state_mismatch"]),
        # A failed issuance attempt (no number, issueErrorMessage) is not an issued invoice.
        ("pushed", QueryAnswer("present", items=[item(None, invoiceNum="",
                                                      issueErrorMessage="x")]), []),
        ("invoiced", QueryAnswer("present", items=[item()]), []),
        ("invoiced", QueryAnswer("present", items=[item("6")]), ["state_mismatch"]),
        ("invoiced", QueryAnswer("present", items=[item("3")]), ["state_mismatch"]),
        # A red invoice (invoiceProperty 1) listed under the bill is not the bill's own.
        ("invoiced", QueryAnswer("present", items=[item(), item(invoiceNum="R1",
                                                                invoiceProperty=1)]), []),
        ("invoiced", QueryAnswer("present", items=[]), ["state_mismatch"]),
        ("withdrawn", QueryAnswer("absent", "-10011"), []),
        ("withdrawn", QueryAnswer("present", items=[]), ["state_mismatch"]),
        # Ambiguous empty list: evidence of nothing.
        ("withdrawn", QueryAnswer("present", items=[], ambiguous=True), []),
        ("draft", QueryAnswer("absent", "-10011"), []),
        ("returned", QueryAnswer("present", items=[]), []),
        ("returned", QueryAnswer("absent", "-10011"), []),
    ],
)  # fmt: skip
def test_bridge_view_per_state(status: str, answer: QueryAnswer, expected: list[str]) -> None:
    document = doc(status, BRIDGE_N1) if status == "invoiced" else doc(status)
    assert [kind for kind, _ in kinds(document, answer)] == expected


def test_a_voided_invoice_of_an_invoiced_document_says_so_in_both_languages() -> None:
    [finding] = _compare_document(
        doc("invoiced", BRIDGE_N1), None, QueryAnswer("present", items=[item("6")])
    )
    assert finding.reason == "cloud shows voided (invoice N1), bridge shows invoiced"
    assert finding.reason_zh == "发票云显示已作废（发票 N1），中间件状态为 invoiced"


def test_an_unknown_state_is_compared_with_nothing() -> None:
    assert kinds(doc("reversed"), QueryAnswer("present", items=[item("6")])) == []
    assert kinds(doc("reversed"), QueryAnswer("absent", "-10011")) == []


def test_a_new_state_and_invoice_level_statuses_extend_the_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What merging the ``reversed`` state (and per-invoice void/red status) takes."""
    view = dict(reconciliation.BRIDGE_VIEW)
    view["reversed"] = Expect(present=True, issued=True, statuses=frozenset({"3", "6"}))
    monkeypatch.setattr(reconciliation, "BRIDGE_VIEW", view)
    assert kinds(doc("reversed", BRIDGE_N1), QueryAnswer("present", items=[item("6")])) == []
    assert [k for k, _ in kinds(doc("reversed"), QueryAnswer("absent", "x"))] == ["cloud_unknown"]
    # A partial reversal keeps `invoiced`: the bridge's own per-invoice status is trusted.
    voided_here = BridgeInvoice("O1", "", "N1", "6", Decimal("100.00"), Decimal("113.00"))
    partly = QueryAnswer("present", items=[item("6"), item(invoiceNum="N2")])
    assert [k for k, _ in kinds(doc("invoiced", voided_here), partly)] == [
        "state_mismatch",
        "total_mismatch",
    ]
    monkeypatch.setattr(reconciliation, "INVOICE_LEVEL_STATES", frozenset({"invoiced"}))
    second = BridgeInvoice("O2", "", "N2", "0", Decimal("100.00"), Decimal("113.00"))
    assert kinds(doc("invoiced", voided_here, second), partly) == []
