"""The simulated cloud's own BILL.PUSH checks, from docs/CLOUD-CONTRACT.md §6.1, §10 and §11.

Independent of the bridge on purpose: nothing here imports ``schemas.erp``, ``schemas.tax`` or
``schemas.money``, so a differential test (tests/unit/test_simulator_differential.py) can
compare two readings of the contract instead of one reading with itself.

Checks, in the order the cloud is assumed to make them (§11 "recommended validation order"):

| phase | what | refusal |
|---|---|---|
| 0 | a field not in §6.1 (dialect ``unknown_fields=refused``) | ``-10006`` ``<field>不合法`` |
| 1 | required header and line fields, ``billDetail`` non-empty (a) | ``-10004`` ``<f>不能为空`` |
| 2 | enums (§10), invoiceType, taxRate (§10.6), revenueCode, dates, numbers, lengths | ``-10006`` |
| 3 | per line: signs, discount line placement and rate, quantity × price ±0.01 | ``-10006`` |
| 3 | per line: tax ±0.06 (only when ``taxAmount`` is given) | ``-10008`` |
| 4 | ``totalAmount`` positive (blue) / negative (red) | ``-10006`` |
| 4 | ``totalAmount`` = Σ ``amount`` (to the cent, same basis) | ``-10007`` 价税合计金额不对 |
| 4 | invoice tax error Σ(tax − round(excl × rate, 2)) within ±1.27 | ``-10007`` |

(a) also: 专票 (004/028/08xdp) needs ``buyerTaxpayerId``; ``taxationStyle=2`` needs
``deduction``; a red bill (``invoiceProperty=1``) needs ``originalInvoiceNumber`` and, unless
数电, ``originalInvoiceCode``.

Lengths: fields §6.1 gives in GBK bytes (``B``) are measured in GBK bytes, the others in
characters. A character GBK cannot encode is refused in a GBK-measured field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Final

from schemas.cloud_contract import (
    FIELD_LABELS,
    RED_REASONS,
    ROW_LABEL_TEMPLATE,
    ErrorCode,
    failure_body,
)

__all__ = ["HEADER_SPEC", "LINE_SPEC", "Refusal", "RuledBill", "RuledLine", "check_bill"]

_CENT: Final = Decimal("0.01")
_MONEY_LIMIT: Final = Decimal("1000000000000")  # (14,2): 12 integer digits
_LINE_TAX_TOLERANCE: Final = Decimal("0.06")  # §11 [D]
_INVOICE_TAX_TOLERANCE: Final = Decimal("1.27")  # §11 [C S19]
_QTY_PRICE_TOLERANCE: Final = Decimal("0.01")  # §11 [C S19]
_SPECIAL_INVOICE_TYPES: Final = frozenset({"004", "028", "08xdp"})  # 专票 (§10.1)
_TAX_CONTROL_TYPES: Final = frozenset({"004", "007", "025", "026", "028"})  # 税控 (§10.1)
# §10.6 (0.10/0.11/0.16/0.17 are historical but still in Kingdee's table).
_RATE_TEXTS: Final = ("0", "0.01", "0.015", "0.03", "0.04", "0.05", "0.06", "0.09", "0.10")
_RATES: Final = frozenset(Decimal(r) for r in (*_RATE_TEXTS, "0.11", "0.13", "0.16", "0.17"))
_DATE: Final = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")
_DIGITS19: Final = re.compile(r"\d{19}")


@dataclass(frozen=True, slots=True)
class Spec:
    """One §6.1 field: kind, length (characters or GBK bytes) and allowed codes."""

    kind: str  # text, code, money, number, date, lines
    chars: int | None = None
    gbk: int | None = None
    codes: frozenset[str] | None = None
    decimals: int | None = None  # number: most decimals allowed


def _codes(*values: str) -> frozenset[str]:
    return frozenset(values)


_01 = _codes("0", "1")

HEADER_SPEC: Final[Mapping[str, Spec]] = {
    "billNo": Spec("text", chars=50),
    "billDate": Spec("date"),
    "invoiceType": Spec("code", codes=_codes("004", "007", "025", "026", "028", "08xdp", "10xdp")),
    "includeTaxFlag": Spec("code", codes=_01),
    "totalAmount": Spec("money"),
    "autoInvoice": Spec("code", codes=_01),
    "autoMerge": Spec("code", codes=_01),
    "invoiceProperty": Spec("code", codes=_codes("", "0", "1")),
    "buyerName": Spec("text", chars=100),
    "buyerTaxpayerId": Spec("text", chars=20),
    "buyerProperty": Spec("code", codes=_01),
    "buyerAddressAndTel": Spec("text", gbk=100),
    "buyerBankAndAccount": Spec("text", gbk=100),
    "buyerRecipientMail": Spec("text", chars=300),
    "buyerRecipientPhone": Spec("text", chars=80),
    "buyerCode": Spec("text"),
    "sellerTaxpayerId": Spec("text", chars=20),
    "orgCode": Spec("text", chars=20),
    "sellerName": Spec("text", chars=100),
    "sellerAddressAndTel": Spec("text", chars=100),
    "sellerBankAndAccount": Spec("text", chars=100),
    "drawer": Spec("text", chars=10),
    "payee": Spec("text", chars=10),
    "reviewer": Spec("text", chars=10),
    "remark": Spec("text", gbk=230),
    "specialType": Spec("code", codes=_codes("", "00", "02", "06", "07", "08", "11", "18")),
    "taxationStyle": Spec("code", codes=_codes("0", "1", "2")),
    "deduction": Spec("money"),
    "priority": Spec("code", codes=_01),
    "billSource": Spec("code", codes=_codes("1", "2", "3", "4", "5", "6", "7")),
    "pushMatchRules": Spec("text"),
    "fillValueRule": Spec("text"),
    **{f"textField{i}": Spec("text", chars=150) for i in range(1, 6)},
    "originalInvoiceCode": Spec("text"),
    "originalInvoiceNumber": Spec("text"),
    "redInfoBillNo": Spec("text", chars=16),
    # 冲红原因 (§10.5 [C S18]): named by Kingdee's 开票申请单 table, not by the §6.1 field list.
    "redReason": Spec("code", codes=RED_REASONS),
    "billDetail": Spec("lines"),
}

LINE_SPEC: Final[Mapping[str, Spec]] = {
    "detailId": Spec("text", chars=50),  # §6.1: ≤32 in the API text, ≤50 in the table
    "lineProperty": Spec("code", codes=_codes("1", "2")),
    "goodsName": Spec("text", gbk=92),
    "goodsCode": Spec("text", chars=32),
    "revenueCode": Spec("text"),
    "taxRate": Spec("text"),
    "amount": Spec("money"),
    "taxAmount": Spec("money"),
    "quantity": Spec("number", chars=20),
    "price": Spec("number", decimals=8),
    "units": Spec("text", gbk=22),
    "specification": Spec("text", gbk=40),
    "discountAmount": Spec("money"),
    "privilegeFlag": Spec("code", codes=_01),
    "privilegeContent": Spec("text", chars=50),
    "zeroTaxRateFlag": Spec("code", codes=_codes("", "1", "2", "3")),
    "extraField": Spec("text", chars=200),
    "remark": Spec("text", chars=200),
}

_HEADER_REQUIRED: Final = (
    "billNo",
    "billDate",
    "invoiceType",
    "includeTaxFlag",
    "totalAmount",
    "buyerName",
    "sellerName",
    "billDetail",
)
_LINE_REQUIRED: Final = ("detailId", "lineProperty", "taxRate", "amount")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the cloud refuses a bill: the errorCode, its placeholders and the rule (for tests)."""

    code: ErrorCode
    rule: str
    values: Mapping[str, object] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return failure_body(self.code, **self.values)


@dataclass(frozen=True, slots=True)
class RuledLine:
    detail_id: str
    goods_name: str
    revenue_code: str
    tax_rate: Decimal
    amount: Decimal
    tax_amount: Decimal | None
    quantity: Decimal | None
    price: Decimal | None
    units: str
    specification: str
    is_discount: bool
    zero_tax_rate_flag: str
    privilege_flag: str
    privilege_content: str


@dataclass(frozen=True, slots=True)
class RuledBill:
    """An accepted bill, values normalised (codes as strings, money as cents)."""

    bill_no: str
    seller: str
    invoice_type: str
    include_tax: bool
    auto_invoice: str  # "0", "1" or "" (not given)
    auto_merge: bool
    header: dict[str, Any]  # every header field but billDetail, normalised
    lines: tuple[RuledLine, ...]
    total_amount: Decimal


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal


def _row(index: int | None) -> str:
    return "" if index is None else ROW_LABEL_TEMPLATE.format(row=index + 1)


def _missing(name: str, index: int | None = None) -> _Refused:
    return _Refused(Refusal(ErrorCode.REQUIRED, "required", {"field": _row(index) + name}))


def _invalid(name: str, index: int | None = None, rule: str = "invalid") -> _Refused:
    label = FIELD_LABELS.get(name, name)
    return _Refused(Refusal(ErrorCode.INVALID, rule, {"field": _row(index) + label}))


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _as_text(value: Any, name: str, index: int | None) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise _invalid(name, index)
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _gbk_len(text: str) -> int | None:
    try:
        return len(text.encode("gbk"))
    except UnicodeEncodeError:
        return None


def _number(value: Any, name: str, index: int | None) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise _invalid(name, index)
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise _invalid(name, index) from None
    if not number.is_finite():
        raise _invalid(name, index)
    return number


def _decimals(number: Decimal) -> int:
    exponent = number.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _read(spec: Spec, value: Any, name: str, index: int | None) -> Any:
    """A present, non-empty value checked against its spec and normalised."""
    if spec.kind == "money":
        number = _number(value, name, index)
        if _decimals(number) > 2 or abs(number) >= _MONEY_LIMIT:
            raise _invalid(name, index)
        return number.quantize(_CENT)
    if spec.kind == "number":
        number = _number(value, name, index)
        if spec.decimals is not None and _decimals(number) > spec.decimals:
            raise _invalid(name, index)
        if spec.chars is not None and len(format(number.normalize(), "f")) > spec.chars:
            raise _invalid(name, index)
        return number
    text = _as_text(value, name, index).strip()
    if spec.kind == "code":
        if spec.codes is not None and text not in spec.codes:
            raise _invalid(name, index)
        return text
    if spec.kind == "date":
        if not _DATE.fullmatch(text):
            raise _invalid(name, index)
        return text
    if spec.chars is not None and len(text) > spec.chars:
        raise _invalid(name, index)
    if spec.gbk is not None:
        size = _gbk_len(text)
        if size is None or size > spec.gbk:
            raise _invalid(name, index)
    return text


def _tax_rate(value: Any, index: int) -> Decimal:
    """``"0.13"``, ``"13%"`` or ``"13"`` → 0.13 (§6.1); at most 3 decimals, in §10.6."""
    text = _as_text(value, "taxRate", index).strip()
    percent = text.endswith("%")
    try:
        rate = Decimal(text.rstrip("%").strip())
    except InvalidOperation:
        raise _invalid("taxRate", index) from None
    if not rate.is_finite():
        raise _invalid("taxRate", index)
    if percent or rate >= 1:
        rate = rate / 100
    if _decimals(rate) > 3 or rate.normalize() not in _RATES:
        raise _invalid("taxRate", index)
    return rate


def _round(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def _excl_and_tax(amount: Decimal, rate: Decimal, include_tax: bool) -> tuple[Decimal, Decimal]:
    """(amount excluding tax, computed tax) of a line on its basis (§11)."""
    if include_tax:
        excl = _round(amount / (1 + rate))
        return excl, amount - excl
    return amount, _round(amount * rate)


def _unknown(raw: Mapping[str, Any], spec: Mapping[str, Spec], index: int | None) -> None:
    for name in raw:
        if name not in spec:
            raise _invalid(str(name), index, rule="unknown_field")


def check_bill(raw: Any, *, unknown_fields: str = "refused") -> RuledBill | Refusal:
    """The bill as the cloud stores it, or why the cloud refuses it (table in the docstring).

    ``unknown_fields`` is the dialect switch: ``refused`` or ``ignored``.
    """
    try:
        return _check(raw, unknown_fields == "refused")
    except _Refused as refused:
        return refused.refusal


def _check(raw: Any, refuse_unknown: bool) -> RuledBill:
    if not isinstance(raw, Mapping):
        raise _invalid("data")
    lines_raw = raw.get("billDetail")
    if refuse_unknown:
        _unknown(raw, HEADER_SPEC, None)
        if isinstance(lines_raw, list):
            for index, line in enumerate(lines_raw):
                if isinstance(line, Mapping):
                    _unknown(line, LINE_SPEC, index)
    # Phase 1: required.
    for name in _HEADER_REQUIRED:
        if _empty(raw.get(name)):
            raise _missing(name)
    if _empty(raw.get("sellerTaxpayerId")) and _empty(raw.get("orgCode")):
        raise _missing("sellerTaxpayerId")
    if not isinstance(lines_raw, list):
        raise _invalid("billDetail")
    if not lines_raw:
        raise _missing("billDetail")
    for index, line in enumerate(lines_raw):
        if not isinstance(line, Mapping):
            raise _invalid("billDetail", index)
        for name in _LINE_REQUIRED:
            if _empty(line.get(name)):
                raise _missing(name, index)
        if _empty(line.get("goodsCode")):
            # Without goodsCode the cloud cannot fill name and revenue code itself (§6.1 yes*).
            for name in ("goodsName", "revenueCode"):
                if _empty(line.get(name)):
                    raise _missing(name, index)
    invoice_type = str(raw.get("invoiceType")).strip()
    if invoice_type in _SPECIAL_INVOICE_TYPES and _empty(raw.get("buyerTaxpayerId")):
        raise _missing("buyerTaxpayerId")
    if str(raw.get("taxationStyle") or "").strip() == "2" and _empty(raw.get("deduction")):
        raise _missing("deduction")
    red = str(raw.get("invoiceProperty") or "").strip() == "1"
    if red and _empty(raw.get("originalInvoiceNumber")):
        raise _missing("originalInvoiceNumber")
    tax_control = invoice_type in _TAX_CONTROL_TYPES
    if red and tax_control and _empty(raw.get("originalInvoiceCode")):
        # §6.1 lists both for red bills; only 数电 invoices have no code (§9.1).
        raise _missing("originalInvoiceCode")
    # Phase 2: formats, codes, lengths.
    header: dict[str, Any] = {}
    for name, spec in HEADER_SPEC.items():
        if name == "billDetail" or name not in raw or _empty(raw[name]):
            continue
        header[name] = _read(spec, raw[name], name, None)
    parsed: list[dict[str, Any]] = []
    for index, line in enumerate(lines_raw):
        values: dict[str, Any] = {}
        for name, spec in LINE_SPEC.items():
            if name not in line or _empty(line[name]):
                continue
            if name == "taxRate":
                values[name] = _tax_rate(line[name], index)
            elif name == "revenueCode":
                code = _read(spec, line[name], name, index)
                if not _DIGITS19.fullmatch(code):
                    raise _invalid(name, index)
                values[name] = code
            else:
                values[name] = _read(spec, line[name], name, index)
        parsed.append(values)
    # Phase 3: per line.
    include_tax = header["includeTaxFlag"] == "1"
    lines: list[RuledLine] = []
    tax_error = Decimal("0.00")
    for index, values in enumerate(parsed):
        amount: Decimal = values["amount"]
        rate: Decimal = values["taxRate"]
        discount = values["lineProperty"] == "1"
        if discount:
            previous = parsed[index - 1] if index else None
            if previous is None or previous["lineProperty"] == "1":
                raise _invalid("lineProperty", index, rule="discount_line")
            if previous["taxRate"] != rate:
                raise _invalid("taxRate", index, rule="discount_line")
            if amount == 0 or (amount > 0) == (previous["amount"] > 0):
                raise _invalid("amount", index, rule="discount_line")
            if abs(amount) > abs(previous["amount"]):
                raise _invalid("amount", index, rule="discount_line")
        elif amount == 0 or (amount < 0) != red:
            raise _invalid("amount", index, rule="sign")
        quantity, price = values.get("quantity"), values.get("price")
        if (
            quantity is not None
            and price is not None
            and abs(amount - _round(quantity * price)) > _QTY_PRICE_TOLERANCE
        ):
            raise _invalid("amount", index, rule="qty_price")
        excl, computed = _excl_and_tax(amount, rate, include_tax)
        tax = values.get("taxAmount")
        if tax is not None:
            # §11: exclusive basis abs(amount × rate − taxAmount) ≤ 0.06, the product NOT
            # rounded [D]; inclusive basis against amount − round(amount / (1 + rate)) [C S10].
            expected = computed if include_tax else amount * rate
            if abs(expected - tax) > _LINE_TAX_TOLERANCE:
                raise _Refused(Refusal(ErrorCode.LINE_TAX, "line_tax", {"row": index + 1}))
            if (tax < 0) != (amount < 0) and tax != 0:
                raise _invalid("taxAmount", index, rule="sign")
            tax_error += tax - _round(excl * rate)
        lines.append(
            RuledLine(
                detail_id=values["detailId"],
                goods_name=values.get("goodsName", ""),
                revenue_code=values.get("revenueCode", ""),
                tax_rate=rate,
                amount=amount,
                tax_amount=tax,
                quantity=quantity,
                price=price,
                units=values.get("units", ""),
                specification=values.get("specification", ""),
                is_discount=discount,
                zero_tax_rate_flag=values.get("zeroTaxRateFlag", ""),
                privilege_flag=values.get("privilegeFlag", ""),
                privilege_content=values.get("privilegeContent", ""),
            )
        )
    # Phase 4: the bill.
    total: Decimal = header["totalAmount"]
    if total == 0 or (total < 0) != red:
        # §11 signs: a blue bill's amounts are positive, a red bill's negative.
        raise _invalid("totalAmount", rule="sign")
    if total != sum((line.amount for line in lines), Decimal("0.00")):
        raise _Refused(Refusal(ErrorCode.TOTAL_MISMATCH, "total"))
    if abs(tax_error) > _INVOICE_TAX_TOLERANCE:
        raise _Refused(Refusal(ErrorCode.TOTAL_MISMATCH, "invoice_tax"))
    seller = str(header.get("sellerTaxpayerId") or header.get("orgCode") or "")
    return RuledBill(
        bill_no=header["billNo"],
        seller=seller,
        invoice_type=header["invoiceType"],
        include_tax=include_tax,
        auto_invoice=header.get("autoInvoice", ""),
        auto_merge=header.get("autoMerge") == "1",
        header=header,
        lines=tuple(lines),
        total_amount=total,
    )
