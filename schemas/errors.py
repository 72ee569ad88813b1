"""Validation issues of an ERP 开票申请单, bilingual, with a stable rule code each.

Every issue names the field (``path``: ``billNo``, ``billDetail[2].taxAmount`` — line indexes
count from 0), the rule broken (``rule``, a stable machine code below), what is wrong in
English (``message``) and Chinese (``message_zh``), and what to do (``hint`` / ``hint_zh``).
``DocumentInvalid`` carries every issue found in one document, not just the first.

Rule codes

| rule | meaning |
|---|---|
| ``type`` | wrong shape (object where text is expected, non-numeric amount, …) |
| ``float_number`` | a number arrived as a binary float: money is never float |
| ``unknown_field`` | a field the BILL.PUSH bill does not have (typo such as ``totalAmout``) |
| ``required`` | a required field is missing or empty |
| ``date_format`` | ``billDate`` is not ``yyyy-MM-dd`` or not a real date |
| ``invoice_type`` | ``invoiceType`` is not one of 004 007 025 026 028 08xdp 10xdp |
| ``enum`` | a coded field (includeTaxFlag, lineProperty, …) is outside its code table |
| ``tax_rate`` | ``taxRate`` is not an accepted rate (§10.6) |
| ``revenue_code`` | ``revenueCode`` (税收分类编码) is not 19 digits |
| ``max_length`` | text longer than allowed, counted in characters |
| ``max_bytes_gbk`` | text longer than allowed in GBK bytes (a Chinese character is 2) |
| ``gbk_encodable`` | printed text has a character GBK cannot encode (emoji, rare 字) |
| ``money_precision`` | an amount has more than 2 decimals or lies outside (14,2) |
| ``price_precision`` | a unit price has more than 8 decimals or lies outside its range |
| ``line_tax_tolerance`` | a line's ``taxAmount`` differs from the computed tax by more than 0.06 |
| ``invoice_tax_tolerance`` | Σ(line tax − round(line excl × rate, 2)) is outside ±1.27 |
| ``total_mismatch`` | ``totalAmount`` ≠ Σ ``billDetail.amount`` (the cloud says 价税合计金额不对) |
| ``qty_price`` | abs(amount − round(quantity × price, 2)) > 0.01 |
| ``discount_line`` | a discount line misplaced, not negative, of another rate, too big, or red |
| ``sign`` | an amount has the wrong sign for a blue (positive) or red (negative) bill |
| ``red_reference`` | a red bill lacks the original invoice number (and code, for 税控 types) |
| ``buyer_tax_id_required`` | a 专票 (004, 028, 08xdp) without ``buyerTaxpayerId`` |
| ``taxpayer_id_format`` | a taxpayer id is not 15, 18 or 20 uppercase letters/digits |
| ``detail_id_unique`` | two lines share a ``detailId`` |
| ``deduction_required`` | taxationStyle 2 (差额征税) without a ``deduction`` amount |
| ``too_many_lines`` | more lines than one bill may carry |
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

__all__ = ["RULES", "DocumentInvalid", "Issue"]

RULES: dict[str, str] = {
    "type": "the value has the wrong shape",
    "float_number": "a number arrived as a binary float",
    "unknown_field": "a field the BILL.PUSH bill does not have",
    "required": "a required field is missing or empty",
    "date_format": "billDate is not yyyy-MM-dd or not a real date",
    "invoice_type": "invoiceType is not one of the seven 开票申请单 codes",
    "enum": "a coded field has a value outside its code table",
    "tax_rate": "taxRate is not an accepted rate",
    "revenue_code": "revenueCode is not 19 digits",
    "max_length": "text longer than allowed, in characters",
    "max_bytes_gbk": "text longer than allowed, in GBK bytes",
    "gbk_encodable": "text contains a character GBK cannot encode",
    "money_precision": "an amount has more than 2 decimals or lies outside (14,2)",
    "price_precision": "a unit price has more than 8 decimals or lies outside its range",
    "line_tax_tolerance": "line taxAmount differs from the computed tax by more than 0.06",
    "invoice_tax_tolerance": "invoice-level tax rounding error outside ±1.27",
    "total_mismatch": "totalAmount differs from the sum of line amounts",
    "qty_price": "amount differs from quantity × price by more than 0.01",
    "discount_line": "a discount line is misplaced or inconsistent with its line",
    "sign": "an amount has the wrong sign for a blue or red bill",
    "red_reference": "a red bill lacks its original invoice reference",
    "buyer_tax_id_required": "a 专票 needs the buyer's taxpayer id",
    "taxpayer_id_format": "a taxpayer id is not 15, 18 or 20 uppercase letters/digits",
    "detail_id_unique": "two lines share a detailId",
    "deduction_required": "taxationStyle 2 needs a deduction amount",
    "too_many_lines": "more lines than one bill may carry",
}


@dataclass(frozen=True, slots=True)
class Issue:
    """One thing wrong with a document."""

    path: str
    rule: str
    message: str
    message_zh: str
    hint: str
    hint_zh: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        where = self.path or "(bill)"
        return f"{where} [{self.rule}]: {self.message} / {self.message_zh} — {self.hint}"


class DocumentInvalid(ValueError):
    """The document breaks one or more rules; ``issues`` lists every one found."""

    def __init__(self, issues: Iterable[Issue], bill_no: str | None = None) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        self.bill_no = bill_no
        super().__init__(self.issues, bill_no)

    def __str__(self) -> str:
        count = len(self.issues)
        subject = f"bill {self.bill_no!r}" if self.bill_no else "the bill"
        head = f"{count} issue{'s' if count != 1 else ''} in {subject} (开票申请单校验未通过):"
        return "\n".join([head, *(f"  - {issue}" for issue in self.issues)])

    def as_dicts(self) -> list[dict[str, str]]:
        return [issue.as_dict() for issue in self.issues]

    @property
    def rules(self) -> frozenset[str]:
        return frozenset(issue.rule for issue in self.issues)
