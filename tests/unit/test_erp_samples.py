"""The sample documents under tests/data/erp/: one realistic 开票申请单 per invoice type.

The demo and the simulator tests reuse these files, so they must stay valid:

| file (``<type>-….json``) | what it shows |
|---|---|
| ``004-paper-special`` | 纸质专票: machinery at 13 % and 9 %, line taxAmount supplied |
| ``007-paper-normal`` | 纸质普票: groceries at 9 %/13 %, codes as numbers, date ``2025-7-18`` |
| ``025-roll-inclusive`` | 卷票 to a person, amounts **including** tax (1598.00 → 183.84) |
| ``026-electronic-normal-discount`` | 电子普票 with a **discount line** after its line |
| ``028-electronic-special`` | 电子专票: software services at 6 % |
| ``08xdp-digital-special`` | 数电专票: rebar by the tonne (3 decimals), concrete 3 %, freight 9 % |
| ``10xdp-digital-normal-red`` | 数电普票, **red**: reverses a 20-digit 数电 invoice |
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas.erp import Bill, InvoiceType, check_bill, validate_bill, wire_content_hash
from schemas.money import dumps_exact, loads_exact

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "erp"
FILES = sorted(SAMPLES.glob("*.json"))
USCC = re.compile(r"[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}")
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def load(path: Path) -> Any:
    return loads_exact(path.read_bytes())


def uscc_check_digit_ok(code: str) -> bool:
    """GB 32100-2015 check character of a 统一社会信用代码."""
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(code[:17], USCC_WEIGHTS, strict=True))
    return USCC_CHARS[(31 - total % 31) % 31] == code[17]


def by_type() -> dict[InvoiceType, Bill]:
    return {bill.invoiceType: bill for bill in (validate_bill(load(path)) for path in FILES)}


def test_there_is_one_sample_per_invoice_type() -> None:
    assert len(FILES) == 7
    assert set(by_type()) == set(InvoiceType)


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_sample_validates(path: Path) -> None:
    doc = load(path)
    assert check_bill(doc) == []
    bill = validate_bill(doc)
    assert path.stem.startswith(bill.invoiceType.value)
    assert len(bill.billDetail) >= 2
    assert bill.totalAmount == sum((line.amount for line in bill.billDetail), Decimal(0))


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_sample_uses_real_looking_parties(path: Path) -> None:
    bill = validate_bill(load(path))
    assert bill.sellerTaxpayerId is not None
    ids = [bill.sellerTaxpayerId] + ([bill.buyerTaxpayerId] if bill.buyerTaxpayerId else [])
    for tax_id in ids:
        assert USCC.fullmatch(tax_id) and uscc_check_digit_ok(tax_id), tax_id
    assert bill.sellerName.endswith("公司")
    assert all(re.fullmatch(r"\d{19}", line.revenueCode or "") for line in bill.billDetail)


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_sample_wire_form_round_trips(path: Path) -> None:
    bill = validate_bill(load(path))
    text = dumps_exact(bill.to_wire())
    again = validate_bill(loads_exact(text))
    assert again == bill
    assert again.content_hash() == bill.content_hash()
    assert "e+" not in text.lower() and "E-" not in text


def test_sample_hashes_are_distinct() -> None:
    hashes = {validate_bill(load(path)).content_hash() for path in FILES}
    assert len(hashes) == len(FILES)


def test_discount_sample() -> None:
    bill = by_type()[InvoiceType.NORMAL_ELECTRONIC]
    kinds = [line.lineProperty for line in bill.billDetail]
    assert kinds == [2, 1, 2]
    goods, discount = bill.billDetail[0], bill.billDetail[1]
    assert discount.amount < 0 and discount.taxRate == goods.taxRate
    assert bill.total().excl == Decimal("23398.00")
    assert bill.total().tax == Decimal("3041.74")


def test_inclusive_sample_splits_the_worked_example() -> None:
    bill = by_type()[InvoiceType.NORMAL_ROLL]
    assert bill.include_tax and bill.buyerProperty == "1"
    cooker = bill.billDetail[-1]
    amounts = cooker.amounts(include_tax=True)
    assert (amounts.excl, amounts.tax, amounts.incl) == (
        Decimal("1414.16"),
        Decimal("183.84"),
        Decimal("1598.00"),
    )
    assert bill.total().incl == bill.totalAmount == Decimal("1691.00")


def test_red_sample() -> None:
    bill = by_type()[InvoiceType.DIGITAL_NORMAL]
    assert bill.is_red
    assert bill.originalInvoiceNumber is not None and len(bill.originalInvoiceNumber) == 20
    assert all(line.amount < 0 and (line.quantity or 0) < 0 for line in bill.billDetail)
    total = bill.total()
    assert total.incl == Decimal("-4045.40") and total.tax == Decimal("-465.40")


def test_special_samples_carry_the_buyer_tax_id() -> None:
    for kind, bill in by_type().items():
        if kind.is_special:
            assert bill.buyerTaxpayerId


def test_totals_of_every_sample() -> None:
    """价税合计 per sample: the amounts the bridge later compares with issued invoices."""
    expected = {
        "004": ("181122.00", "23425.86", "204547.86"),
        "007": ("10097.00", "968.73", "11065.73"),
        "025": ("1496.46", "194.54", "1691.00"),
        "026": ("23398.00", "3041.74", "26439.74"),
        "028": ("242000.01", "14520.00", "256520.01"),
        "08xdp": ("284850.45", "31210.56", "316061.01"),
        "10xdp": ("-3580.00", "-465.40", "-4045.40"),
    }
    for kind, bill in by_type().items():
        total = bill.total()
        assert (str(total.excl), str(total.tax), str(total.incl)) == expected[kind.value]


def test_content_hash_of_every_sample_is_pinned() -> None:
    """The hash is stored with every document and compared on resubmission: a change of its
    definition would turn identical resubmissions of existing rows into revisions/conflicts."""
    expected = {
        "004-paper-special": "246dae500f870afd5fc7935b52b19bac253329006bae615543553afeeef6de16",
        "007-paper-normal": "38fd28a0920e47da866f3c8d6dd16c0779db5c1096da71603d8ed817ee7431e1",
        "025-roll-inclusive": "70316db14063db5cf9136e5112f0f14597ac2fab98cf86a162e50ba85523fb35",
        "026-electronic-normal-discount": (
            "b5ca395a7ccd2c6114f3be950bf80e7ef39c28303c7f30afabe46f929d12bfdb"
        ),
        "028-electronic-special": (
            "1e4f8694c6b0d4f949ddb6e31ae13e5cb9f4a8167a9a883106d1f3879584e659"
        ),
        "08xdp-digital-special": "f63e8023318aa9c80c5adff13c507e3ac5f08701602518958d3248fae8dde8c0",
        "10xdp-digital-normal-red": (
            "6ef9c14c4b0c7c9dcc8ac30b29f1ee41bffec49f868247af5b0f1b8363285deb"
        ),
    }
    for path in FILES:
        bill = validate_bill(load(path))
        assert bill.content_hash() == expected[path.stem], path.stem
        assert wire_content_hash(bill.to_wire()) == expected[path.stem], path.stem
