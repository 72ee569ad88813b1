"""The demo's sample set: ERP documents plus a manifest of what happens to each (data files).

``demo/samples/manifest.toml`` lists the documents (``demo/samples/*.json``) with the wave
they are submitted in, what the demo does to them and the final state they must reach:

| manifest key | ``SampleDocument`` field | meaning |
|---|---|---|
| ``file`` | ``path`` | the ERP document, exactly as an ERP posts it |
| ``wave`` | ``wave`` | 1, or 2 = after wave 1 is pushed and every token was expired |
| ``expect`` | ``expect`` | final document state |
| ``invoices`` | ``invoices`` | issued invoices it must end with |
| ``reason`` | ``reason`` | text the final reason / last error must contain |
| ``cloud_refuses`` | ``cloud_refuses`` | errorCode the simulated cloud refuses this bill with |
| ``drop_callbacks`` | ``drop_callbacks`` | the cloud never calls back: polling must find it |
| ``withdraw`` | ``withdraw`` | the demo withdraws it once it is ``pushed`` |
| ``story`` | ``story`` | one line for the final table |

``Outcome`` is what the bridge reports for one document; ``SampleDocument.mismatches`` says
in words how it differs from the manifest (empty = as expected).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.money import loads_exact

__all__ = [
    "DEFAULT_SAMPLES_DIR",
    "SETTLED_STATES",
    "Outcome",
    "SampleDocument",
    "SampleSet",
    "load_samples",
]

DEFAULT_SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

# States a document does not leave without an operator or ERP action: the demo waits for these.
SETTLED_STATES = frozenset(
    {"invoiced", "invoice_failed", "rejected", "failed", "withdrawn", "returned", "reversed"}
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A document as the bridge reports it (``GET /v1/documents/{bill_no}``)."""

    bill_no: str
    status: str
    invoices: int
    reason: str


@dataclass(frozen=True, slots=True)
class SampleDocument:
    path: Path
    document: dict[str, Any]
    wave: int
    expect: str
    invoices: int
    story: str
    reason: str | None = None
    cloud_refuses: str | None = None
    drop_callbacks: bool = False
    withdraw: bool = False

    @property
    def bill_no(self) -> str:
        return str(self.document["billNo"])

    @property
    def seller_tax_id(self) -> str:
        return str(self.document["sellerTaxpayerId"])

    @property
    def invoice_type(self) -> str:
        return str(self.document["invoiceType"])

    def mismatches(self, outcome: Outcome) -> list[str]:
        """How ``outcome`` differs from the manifest, in words; empty when it is as expected."""
        problems: list[str] = []
        if outcome.status != self.expect:
            problems.append(f"state {outcome.status}, expected {self.expect}")
        if outcome.invoices != self.invoices:
            problems.append(f"{outcome.invoices} invoice(s), expected {self.invoices}")
        if self.reason is not None and self.reason not in outcome.reason:
            problems.append(f"reason {outcome.reason!r} lacks {self.reason!r}")
        return problems


@dataclass(frozen=True, slots=True)
class SampleSet:
    documents: list[SampleDocument]
    settle_timeout_seconds: float = 120.0
    directory: Path = field(default=DEFAULT_SAMPLES_DIR)

    def wave(self, number: int) -> list[SampleDocument]:
        return [d for d in self.documents if d.wave == number]

    @property
    def waves(self) -> list[int]:
        return sorted({d.wave for d in self.documents})

    def by_bill_no(self) -> dict[str, SampleDocument]:
        return {d.bill_no: d for d in self.documents}


def load_samples(directory: Path = DEFAULT_SAMPLES_DIR) -> SampleSet:
    """Read ``manifest.toml`` and every document it names (money stays Decimal)."""
    manifest = tomllib.loads((directory / "manifest.toml").read_text(encoding="utf-8"))
    documents: list[SampleDocument] = []
    for entry in manifest.get("documents", []):
        path = directory / str(entry["file"])
        document = loads_exact(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or "billNo" not in document:
            raise ValueError(f"{path}: not an ERP document (a JSON object with billNo)")
        documents.append(
            SampleDocument(
                path=path,
                document=document,
                wave=int(entry.get("wave", 1)),
                expect=str(entry["expect"]),
                invoices=int(entry.get("invoices", 0)),
                story=str(entry.get("story", "")),
                reason=entry.get("reason"),
                cloud_refuses=entry.get("cloud_refuses"),
                drop_callbacks=bool(entry.get("drop_callbacks", False)),
                withdraw=bool(entry.get("withdraw", False)),
            )
        )
    bill_nos = [d.bill_no for d in documents]
    if len(set(bill_nos)) != len(bill_nos):
        raise ValueError(f"{directory / 'manifest.toml'}: a billNo appears twice")
    scenario = manifest.get("scenario", {})
    return SampleSet(
        documents=documents,
        settle_timeout_seconds=float(scenario.get("settle_timeout_seconds", 120)),
        directory=directory,
    )
