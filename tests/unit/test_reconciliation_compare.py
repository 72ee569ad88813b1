"""How one bridge document is compared with the cloud's answer: ``BRIDGE_VIEW`` per state, the
per-invoice status, failed attempts and red invoices ignored, and how the table is extended
for a new state (``reversed``) without touching the comparison."""

from __future__ import annotations

import pytest

from store.reconciliation import BridgeDocument
from tests.unit.reconciliation_builders import bridge, doc, item
from worker.services.query import QueryAnswer
from worker.services.reconciliation import _compare_document

BRIDGE_N1 = bridge()


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


def test_a_reversed_document_expects_its_invoices_voided_or_red_flushed() -> None:
    voided = bridge("voided", status="6")
    assert kinds(doc("reversed", voided), QueryAnswer("present", items=[item("6")])) == []
    assert [k for k, _ in kinds(doc("reversed"), QueryAnswer("absent", "x"))] == ["cloud_unknown"]
    # The cloud shows the invoice normal again: the bridge's `reversed` is not what it holds.
    assert [
        k for k, _ in kinds(doc("reversed", voided), QueryAnswer("present", items=[item()]))
    ] == ["state_mismatch"]


def test_the_bridges_per_invoice_standing_is_trusted_in_invoiced_documents() -> None:
    """A partial reversal keeps `invoiced`: an invoice the bridge already records as voided
    is no finding; one it still thinks normal is (a void whose callback was lost)."""
    voided_here = bridge("voided", status="6")
    second = bridge(order="O2", number="N2")
    partly = QueryAnswer("present", items=[item("6"), item(invoiceNum="N2")])
    assert kinds(doc("invoiced", voided_here, second), partly) == []
    normal_here = bridge()
    assert [k for k, _ in kinds(doc("invoiced", normal_here, second), partly)] == ["state_mismatch"]


def test_a_partial_red_flush_is_accounted_for_under_both_readings() -> None:
    partly = bridge("partially_reversed")
    for shown in ("0", "2"):  # dialect partial_red: keeps_0 / status_2
        answer = QueryAnswer("present", items=[item(shown)])
        assert kinds(doc("invoiced", partly), answer) == [], shown
