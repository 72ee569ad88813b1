"""The ERP document: a BILL.PUSH 开票申请单 exactly as Kingdee spells it (kingdee-api.md §6.1).

Skeleton: names are final, rules are being filled in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict

from schemas.errors import DocumentInvalid, Issue
from schemas.money import ExactModel, ExactNumber, Money, dumps_exact
from schemas.tax import LineAmounts, bill_totals, format_tax_rate, line_amounts, parse_tax_rate

__all__ = [
    "Bill",
    "BillDetail",
    "InvoiceType",
    "check_bill",
    "validate_bill",
]


class InvoiceType(StrEnum):
    SPECIAL_PAPER = "004"
    NORMAL_PAPER = "007"
    NORMAL_ROLL = "025"
    NORMAL_ELECTRONIC = "026"
    SPECIAL_ELECTRONIC = "028"
    DIGITAL_SPECIAL = "08xdp"
    DIGITAL_NORMAL = "10xdp"

    @property
    def is_special(self) -> bool:
        return self in _SPECIAL

    @property
    def is_digital(self) -> bool:
        return self in _DIGITAL

    @property
    def max_lines(self) -> int:
        return 2000 if self.is_digital else 8


_SPECIAL = frozenset({InvoiceType.SPECIAL_PAPER, InvoiceType.SPECIAL_ELECTRONIC,
                      InvoiceType.DIGITAL_SPECIAL})
_DIGITAL = frozenset({InvoiceType.DIGITAL_SPECIAL, InvoiceType.DIGITAL_NORMAL})


def _code(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Code = Annotated[str, BeforeValidator(_code)]


def _rate(value: Any) -> Any:
    return parse_tax_rate(value)


TaxRate = Annotated[Decimal, BeforeValidator(_rate)]


class BillDetail(ExactModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    detailId: str
    lineProperty: int
    goodsName: str | None = None
    goodsCode: str | None = None
    revenueCode: str | None = None
    taxRate: TaxRate
    amount: Money
    taxAmount: Money | None = None
    quantity: ExactNumber | None = None
    price: ExactNumber | None = None
    units: str | None = None
    specification: str | None = None
    discountAmount: Money | None = None
    privilegeFlag: Code | None = None
    privilegeContent: str | None = None
    zeroTaxRateFlag: Code | None = None
    extraField: str | None = None
    remark: str | None = None


class Bill(ExactModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    billNo: str
    billDate: str
    invoiceType: InvoiceType
    includeTaxFlag: Code
    totalAmount: Money
    autoInvoice: Code | None = None
    autoMerge: Code | None = None
    invoiceProperty: Code | None = None
    buyerName: str
    buyerTaxpayerId: str | None = None
    buyerProperty: Code | None = None
    buyerAddressAndTel: str | None = None
    buyerBankAndAccount: str | None = None
    buyerRecipientMail: str | None = None
    buyerRecipientPhone: str | None = None
    buyerCode: str | None = None
    sellerTaxpayerId: str | None = None
    orgCode: str | None = None
    sellerName: str
    sellerAddressAndTel: str | None = None
    sellerBankAndAccount: str | None = None
    drawer: str | None = None
    payee: str | None = None
    reviewer: str | None = None
    remark: str | None = None
    specialType: Code | None = None
    taxationStyle: Code | None = None
    deduction: Money | None = None
    priority: Code | None = None
    billSource: Code | None = None
    pushMatchRules: Code | None = None
    fillValueRule: str | None = None
    textField1: str | None = None
    textField2: str | None = None
    textField3: str | None = None
    textField4: str | None = None
    textField5: str | None = None
    originalInvoiceCode: str | None = None
    originalInvoiceNumber: str | None = None
    redInfoBillNo: str | None = None
    billDetail: list[BillDetail]

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in self:
            if value is None:
                continue
            if name == "billDetail":
                out[name] = [_line_wire(line) for line in self.billDetail]
            else:
                out[name] = str(value) if isinstance(value, StrEnum) else value
        return out

    def content_hash(self) -> str:
        return hashlib.sha256(dumps_exact(self.to_wire(), sort_keys=True).encode()).hexdigest()

    def total(self) -> LineAmounts:
        include = self.includeTaxFlag == "1"
        return bill_totals(
            line_amounts(line.amount, line.taxRate, include, line.taxAmount)
            for line in self.billDetail
        )


def _line_wire(line: BillDetail) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in line:
        if value is None:
            continue
        out[name] = format_tax_rate(value) if name == "taxRate" else value
    return out


def check_bill(data: Mapping[str, Any]) -> list[Issue]:
    return []


def validate_bill(data: Mapping[str, Any]) -> Bill:
    issues = check_bill(data)
    if issues:
        raise DocumentInvalid(issues)
    return Bill.model_validate(data)
