"""Which items of a reconciliation's query answer are applied to a bridge document
(``after_issuance_news``): only after-issuance facts newer than the bridge's standing, only
about invoices the bridge holds; and how the findings they settle are reported
(``state_applied``, ``applied``: true, EN + ZH), with a fake ``Heal``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from schemas.kingdee import InvoiceItem
from schemas.reconciliation import FindingKind, Window
from store.reconciliation import BridgeDocument
from tests.unit import reconciliation_builders as build
from tests.unit.reconciliation_builders import NOW, bridge, doc
from worker.services.query import QueryAnswer
from worker.services.reconciliation import Healed, after_issuance_news


def item(status: str | None = "0", **kw: Any) -> InvoiceItem:
    """The shared item, with the amount without tax (100.00) unless given."""
    return build.item(status, **{"totalAmount": "100.00", **kw})


RED = {"invoiceNum": "R1", "invoiceProperty": 1, "originalInvoiceNumber": "N1",
       "totalAmount": "-100.00", "includeTaxAmount": "-113.00"}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "standing", "items", "applied"),
    [
        # a void / 红冲 / partial 红冲 (canRedAmount) the bridge missed
        ("invoiced", "normal", [item("6")], ["N1"]),
        ("invoiced", "normal", [item("3")], ["N1"]),
        ("partially_invoiced", "normal", [item("6")], ["N1"]),
        ("invoiced", "normal", [item("0", canRedAmount="40.00")], ["N1"]),
        ("invoiced", "partially_reversed", [item("3")], ["N1"]),
        # a red invoice naming ours, not yet known to the bridge
        ("invoiced", "normal", [item("0"), item("0", **RED)], ["N1", "R1"]),
        # nothing newer: the bridge already records it
        ("invoiced", "normal", [item("0")], []),
        ("reversed", "voided", [item("6")], []),
        ("reversed", "reversed", [item("3"), item("0", **RED)], []),
        ("invoiced", "partially_reversed", [item("0", canRedAmount="40.00")], []),
        # status 2 alone is not read (部分红冲 or 待开 depending on the reading)
        ("invoiced", "normal", [item("2")], []),
        # never for a document in flight or not yet invoiced
        ("pushed", "normal", [item("6")], []),
        ("withdrawing", "normal", [item("6")], []),
        ("in_doubt", "normal", [item("6")], []),
    ],
)  # fmt: skip
def test_only_newer_after_issuance_facts_are_applied(
    status: str, standing: str, items: list[InvoiceItem], applied: list[str]
) -> None:
    news = after_issuance_news(doc(status, bridge(standing)), QueryAnswer("present", items=items))
    assert [i.invoiceNum for i in news] == applied


def test_an_invoice_new_to_the_bridge_is_never_applied() -> None:
    """Issuance (a second invoice) is the poller's business: it is left out of the items."""
    answer = QueryAnswer("present", items=[item("6"), item("0", invoiceNum="N2")])
    news = after_issuance_news(doc("partially_invoiced", bridge()), answer)
    assert [i.invoiceNum for i in news] == ["N1"]


def test_a_red_invoice_already_known_is_no_news() -> None:
    answer = QueryAnswer("present", items=[item("0", canRedAmount="0.00"), item("0", **RED)])
    assert after_issuance_news(doc("invoiced", bridge(reds=("R1",))), answer) == []


def test_an_absent_or_unanswered_bill_is_no_news() -> None:
    for answer in (QueryAnswer("absent", "-10011"), QueryAnswer("retry", "timeout")):
        assert after_issuance_news(doc("invoiced", bridge()), answer) == []


# ------------------------------------------------------------------ report (fake heal)


class Sessions:
    """Enough of a sessionmaker for ``reconcile`` with the store reads patched out."""

    def __call__(self) -> Sessions:
        return self

    def __enter__(self) -> Sessions:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def one_voided(monkeypatch: pytest.MonkeyPatch) -> BridgeDocument:
    import worker.services.reconciliation as module

    document = doc("invoiced", bridge())
    document.status_changed_at = NOW - timedelta(days=1)
    monkeypatch.setattr(module, "documents_in_window", lambda *a, **k: [document])
    monkeypatch.setattr(module, "documents_for_bills", lambda *a, **k: [])
    monkeypatch.setattr(module, "orphan_callbacks", lambda *a, **k: [])
    return document


class Tenants:
    """The two calls ``reconcile`` makes of ``TenantsFile`` here."""

    def by_name(self, name: str) -> object:
        return object()

    def callback_codecs(self) -> list[object]:
        return []


def run(heal: Any) -> Any:
    from worker.services.reconciliation import reconcile

    answer = QueryAnswer("present", items=[item("6")])
    return reconcile(
        Sessions(),  # type: ignore[arg-type]
        Tenants(),  # type: ignore[arg-type]
        lambda *a: answer,
        Window(NOW.date(), NOW.date()),
        now=NOW,
        heal=heal,
    )


def test_a_healed_finding_is_kept_as_state_applied(one_voided: BridgeDocument) -> None:
    calls: list[list[str | None]] = []

    def heal(document: BridgeDocument, items: Sequence[InvoiceItem]) -> Healed:
        calls.append([i.invoiceNum for i in items])
        return Healed({document.id: ("N1",)})

    report = run(heal)
    assert calls == [["N1"]]
    [finding] = report.findings
    assert finding.kind is FindingKind.state_applied and finding.applied
    assert finding.reason == (
        "cloud shows voided (invoice N1), bridge showed invoiced; the bridge has applied it"
        " and told the ERP"
    )
    assert "已据此更新并通知 ERP" in finding.reason_zh
    assert finding.as_json()["applied"] is True
    assert report.counts()["state_applied"] == 1 and report.counts()["state_mismatch"] == 0


def test_a_heal_that_lost_the_race_reports_as_before(one_voided: BridgeDocument) -> None:
    report = run(lambda document, items: Healed(skipped="lost race"))
    [finding] = report.findings
    assert finding.kind is FindingKind.state_mismatch and not finding.applied


def test_without_heal_nothing_is_applied(one_voided: BridgeDocument) -> None:
    [finding] = run(None).findings
    assert finding.kind is FindingKind.state_mismatch
