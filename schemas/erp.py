"""The ERP document: a BILL.PUSH 开票申请单 as Kingdee spells it (docs/CLOUD-CONTRACT.md §6.1).

The bridge (before accepting a document) and the simulator (before accepting a push) both
call :func:`validate_bill`, so the simulator refuses exactly what the bridge refuses.

Public API

| name | what it is |
|---|---|
| ``InvoiceType`` | the 7 发票种类 of §10.1; ``is_special``, ``is_digital``, ``max_lines`` |
| ``BillDetail``, ``Bill`` | line and bill, field names and lengths as §6.1 (frozen) |
| ``validate_bill(data)`` | every rule; a normalised ``Bill`` or ``DocumentInvalid`` |
| ``check_bill(data)`` | the same rules, returning the ``Issue`` list (empty = valid) |
| ``Bill.to_wire()`` | the JSON-ready BILL.PUSH ``data[i]`` (write with ``dumps_exact``) |
| ``Bill.content_hash()`` | sha256 of the canonical content (key order, 100 vs 100.00 agnostic) |
| ``wire_content_hash(wire)`` | the same hash of a ``to_wire()`` dict already at hand |
| ``Bill.total()`` | ``LineAmounts(excl, tax, incl)`` of the bill; ``incl`` = 价税合计 |

``Bill.model_validate`` checks shapes only (types, codes, no unknown fields); the business
rules (lengths, tax tolerance, totals, signs, discount lines, …) run in ``validate_bill``.

Normalisation (what ``validate_bill`` changes)

| input | becomes |
|---|---|
| coded values as numbers (``includeTaxFlag: 1``) | text (``"1"``), as the official example |
| ``lineProperty`` as text (``"2"``) | number (``2``), as the official example |
| ``billDate`` ``2025-7-24`` (or a ``datetime.date``) | ``2025-07-24`` |
| ``taxRate`` ``"13%"``, ``"13"``, ``Decimal("0.13")`` | ``Decimal("0.13")``; wire ``"0.13"`` |
| amounts ``"100"``, ``100``, ``Decimal("100.0")`` | ``Decimal("100.00")`` |
| ``invoiceType`` ``"08XDP"`` | ``InvoiceType.DIGITAL_SPECIAL`` (``"08xdp"``) |
| optional fields ``""`` or ``null`` | absent (omitted from the wire) |
| identifiers sent as integers (``detailId: 7``) | text (``"7"``) |

Length rules: characters where §6.1 gives characters, GBK bytes where it gives bytes
(a Chinese character is 2 GBK bytes). Text printed on the invoice must be GBK-encodable.

Guessed limits ([G]) live together in the constants below ``_GUESSED``; replace them when the
real tenant documentation is available.

Judgement calls (where §6.1/§11 leave room)

| question | decision |
|---|---|
| unit price (14,8) | at most 8 decimals, integer part as money (12 digits) [I] |
| ``detailId`` 32 or 50 | 32, the API's limit |
| discount line on a red bill | refused: 负数发票不能含折扣行; net the discount into its line [I] |
| ±1.27 is per invoice, the cloud may split | checked over the whole bill |
| exclusive-basis line tax | measured against the unrounded amount × rate (§11 literally) |
| taxpayer id | format only (15/18/20 upper-case alphanumerics), no check digit |
| GBK encodability | checked on text the tax system prints (names, addresses, goods, remark) |
| floats | refused everywhere (``float_number``): parse JSON with ``loads_exact`` |
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BeforeValidator, ConfigDict

from schemas.errors import DocumentInvalid, Issue
from schemas.money import (
    MAX_MAGNITUDE_DIGITS,
    ExactModel,
    ExactNumber,
    Money,
    decimal_places,
    dumps_exact,
    quantize_cents,
    to_decimal,
)
from schemas.tax import (
    INVOICE_TAX_TOLERANCE,
    LINE_TAX_TOLERANCE,
    QTY_PRICE_TOLERANCE,
    LineAmounts,
    bill_totals,
    format_tax_rate,
    invoice_tax_error,
    line_amounts,
    line_tax_deviation,
    parse_tax_rate,
    qty_price_deviation,
    split_inclusive,
    tax_from_exclusive,
)

__all__ = [
    "MAX_BILL_LINES",
    "Bill",
    "BillDetail",
    "InvoiceType",
    "check_bill",
    "validate_bill",
    "wire_content_hash",
]

# --- _GUESSED: every [G] number of this module, in one place -------------------------------
# Lines one issued 税控 invoice carries before the cloud splits the bill (without 销货清单). [G]
MAX_LINES_TAX_CONTROL = 8
# Lines one 数电 invoice carries. [G]
MAX_LINES_DIGITAL = 2000
# Lines one bill may carry at all (the cloud splits bigger 税控 bills into invoices). [G]
MAX_BILL_LINES = 2000
# ---------------------------------------------------------------------------------------------

# (14,2): 12 integer digits, 2 decimals.
MONEY_LIMIT = Decimal("999999999999.99")
# Unit price: §11 gives (14,8); we keep 8 decimals and the integer range of money. [I]
PRICE_DECIMALS = 8
PRICE_LIMIT = Decimal("999999999999.99999999")
QUANTITY_MAX_CHARS = 20


class InvoiceType(StrEnum):
    """发票种类 for 开票申请单 (§10.1)."""

    SPECIAL_PAPER = "004"  # 增值税纸质专用发票
    NORMAL_PAPER = "007"  # 增值税纸质普通发票
    NORMAL_ROLL = "025"  # 增值税普通发票（卷票）
    NORMAL_ELECTRONIC = "026"  # 增值税电子普通发票
    SPECIAL_ELECTRONIC = "028"  # 增值税电子专用发票
    DIGITAL_SPECIAL = "08xdp"  # 数电票（增值税专用发票）
    DIGITAL_NORMAL = "10xdp"  # 数电票（普通发票）

    @property
    def is_special(self) -> bool:
        """专票: the buyer can deduct input VAT, so the buyer's tax id is mandatory."""
        return self in _SPECIAL

    @property
    def is_digital(self) -> bool:
        """数电 (fully digital): no invoiceCode, 20-digit invoice numbers."""
        return self in _DIGITAL

    @property
    def max_lines(self) -> int:
        """Lines per issued invoice before the cloud splits ([G], see ``_GUESSED``)."""
        return MAX_LINES_DIGITAL if self.is_digital else MAX_LINES_TAX_CONTROL

    @property
    def name_zh(self) -> str:
        return _INVOICE_TYPE_NAMES[self]


_SPECIAL = frozenset(
    {InvoiceType.SPECIAL_PAPER, InvoiceType.SPECIAL_ELECTRONIC, InvoiceType.DIGITAL_SPECIAL}
)
_DIGITAL = frozenset({InvoiceType.DIGITAL_SPECIAL, InvoiceType.DIGITAL_NORMAL})
_INVOICE_TYPE_NAMES = {
    InvoiceType.SPECIAL_PAPER: "增值税纸质专用发票",
    InvoiceType.NORMAL_PAPER: "增值税纸质普通发票",
    InvoiceType.NORMAL_ROLL: "增值税普通发票（卷票）",
    InvoiceType.NORMAL_ELECTRONIC: "增值税电子普通发票",
    InvoiceType.SPECIAL_ELECTRONIC: "增值税电子专用发票",
    InvoiceType.DIGITAL_SPECIAL: "数电票（增值税专用发票）",
    InvoiceType.DIGITAL_NORMAL: "数电票（普通发票）",
}

LINE_NORMAL = 2  # 正常商品行 (BILL.PUSH input code set, §10.4)
LINE_DISCOUNT = 1  # 折扣行


# --- pydantic field types ---------------------------------------------------------------------


def _code_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return value


def _line_property(value: Any) -> Any:
    if isinstance(value, str) and value.strip() in {"1", "2"}:
        return int(value.strip())
    return value


def _tax_rate(value: Any) -> Any:
    try:
        return parse_tax_rate(value)
    except TypeError as exc:  # pydantic reports ValueError, lets TypeError escape
        raise ValueError(str(exc)) from None


def _invoice_type(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


Code = Annotated[str, BeforeValidator(_code_text)]
TaxRate = Annotated[Decimal, BeforeValidator(_tax_rate)]
LineProperty = Annotated[Literal[1, 2], BeforeValidator(_line_property)]
InvoiceTypeField = Annotated[InvoiceType, BeforeValidator(_invoice_type)]


class BillDetail(ExactModel):
    """One line of a 开票申请单 (``billDetail[j]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detailId: str
    lineProperty: LineProperty
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

    @property
    def is_discount(self) -> bool:
        return self.lineProperty == LINE_DISCOUNT

    def amounts(self, include_tax: bool) -> LineAmounts:
        return line_amounts(self.amount, self.taxRate, include_tax, self.taxAmount)

    def to_wire(self) -> dict[str, Any]:
        # The fields in declaration order, as iterating the model gives them (``__dict__``
        # holds exactly the fields: no extras, no private attributes).
        out = {name: value for name, value in self.__dict__.items() if value is not None}
        out["taxRate"] = format_tax_rate(self.taxRate)
        return out


class Bill(ExactModel):
    """A 开票申请单 as pushed with BILL.PUSH (one element of the ``data`` array)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    billNo: str
    billDate: str
    invoiceType: InvoiceTypeField
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
    redReason: Code | None = None
    billDetail: list[BillDetail]

    @property
    def include_tax(self) -> bool:
        """Line amounts include tax (includeTaxFlag 1)."""
        return self.includeTaxFlag == "1"

    @property
    def is_red(self) -> bool:
        """A red (negative) bill reversing an issued invoice (invoiceProperty 1)."""
        return self.invoiceProperty == "1"

    @property
    def bill_date(self) -> dt.date:
        return dt.date.fromisoformat(self.billDate)

    def line_amounts(self) -> list[LineAmounts]:
        return [line.amounts(self.include_tax) for line in self.billDetail]

    def total(self) -> LineAmounts:
        """Invoice-level amounts: excl = 合计金额, tax = 合计税额, incl = 价税合计."""
        return bill_totals(self.line_amounts())

    def to_wire(self) -> dict[str, Any]:
        """The bill as BILL.PUSH ``data[i]``: Decimals kept (write with ``dumps_exact``),
        coded values as text, ``lineProperty`` as a number, ``None`` fields omitted."""
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():  # the fields, in declaration order
            if value is None:
                continue
            out[name] = value.value if isinstance(value, StrEnum) else value
        out["billDetail"] = [line.to_wire() for line in self.billDetail]
        return out

    def content_hash(self) -> str:
        """sha256 hex of the canonical content (sorted keys, normalised numbers); the same
        as ``wire_content_hash(self.to_wire())``."""
        return wire_content_hash(self.to_wire())


def wire_content_hash(wire: Mapping[str, Any]) -> str:
    """``Bill.content_hash`` of a bill's ``to_wire()`` dict, for a caller that already has it.

    The definition (stored with every document, compared on resubmission: never change it):
    sha256 of ``dumps_exact(_canonical(wire), sort_keys=True)`` in UTF-8, where
    ``_canonical`` writes every Decimal normalised (``100.00`` → ``1E+2`` → ``100``, any
    zero → ``0``). ``_write_canonical`` writes those same bytes in one pass.
    """
    out: list[str] = []
    _write_canonical(wire, out)
    return hashlib.sha256("".join(out).encode("utf-8")).hexdigest()


def _canonical(value: Any) -> Any:
    """The reference form of the hash definition (see ``wire_content_hash``)."""
    if isinstance(value, Decimal):
        return Decimal(0) if value.is_zero() else value.normalize()
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


# json.dumps(text, ensure_ascii=False) is this C function plus a Python call chain around it.
_json_text: Callable[[str], str] = json.encoder.encode_basestring


def _write_canonical(value: Any, out: list[str]) -> None:
    """Append ``dumps_exact(_canonical(value), sort_keys=True)`` to ``out``, piece by piece
    (same cases and errors as ``schemas.money.dumps_exact``; exact types first, they are
    what a wire bill holds)."""
    kind = type(value)
    if kind is str:
        out.append(_json_text(value))
    elif kind is Decimal and value.is_finite():
        out.append("0" if value.is_zero() else format(value.normalize(), "f"))
    elif kind is dict:
        out.append("{")
        first = True
        for key, item in sorted(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, got {type(key).__name__}")
            if not first:
                out.append(",")
            first = False
            out.append(_json_text(key))
            out.append(":")
            _write_canonical(item, out)
        out.append("}")
    elif kind is list:
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write_canonical(item, out)
        out.append("]")
    else:
        # None, booleans, ints, tuples (``_canonical`` leaves their items as they are), str
        # subclasses (StrEnum), non-finite Decimals and what dumps_exact refuses.
        out.append(dumps_exact(_canonical(value), sort_keys=True))


# --- field table (§6.1) -----------------------------------------------------------------------

Kind = Literal[
    "text", "code", "money", "price", "quantity", "date", "invoice_type", "tax_rate",
    "line_property", "taxpayer_id", "lines",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Field:
    kind: Kind
    zh: str
    chars: int | None = None
    gbk_bytes: int | None = None
    codes: Mapping[str, str] | None = None
    # Printed on the invoice by the tax system, which only knows GBK.
    printed: bool = False


_YES_NO = {"0": "否", "1": "是"}

HEADER_FIELDS: dict[str, _Field] = {
    "billNo": _Field("text", "单据编号", chars=50),
    "billDate": _Field("date", "单据日期"),
    "invoiceType": _Field("invoice_type", "发票种类"),
    "includeTaxFlag": _Field("code", "含税标识", codes={"0": "不含税", "1": "含税"}),
    "totalAmount": _Field("money", "单据金额"),
    "autoInvoice": _Field("code", "是否自动开票", codes=_YES_NO),
    "autoMerge": _Field("code", "是否自动合并", codes=_YES_NO),
    "invoiceProperty": _Field("code", "开票类型", codes={"0": "蓝票", "1": "红票"}),
    "buyerName": _Field("text", "购买方名称", chars=100, printed=True),
    "buyerTaxpayerId": _Field("taxpayer_id", "购买方税号"),
    "buyerProperty": _Field("code", "购方性质", codes={"0": "企业", "1": "个人"}),
    "buyerAddressAndTel": _Field("text", "购方地址电话", gbk_bytes=100, printed=True),
    "buyerBankAndAccount": _Field("text", "购方开户行及账号", gbk_bytes=100, printed=True),
    "buyerRecipientMail": _Field("text", "交付邮箱", chars=300),
    "buyerRecipientPhone": _Field("text", "交付手机", chars=80),
    "buyerCode": _Field("text", "购方编码"),
    "sellerTaxpayerId": _Field("taxpayer_id", "销方税号"),
    "orgCode": _Field("text", "组织编码", chars=20),
    "sellerName": _Field("text", "销方名称", chars=100, printed=True),
    "sellerAddressAndTel": _Field("text", "销方地址电话", chars=100, printed=True),
    "sellerBankAndAccount": _Field("text", "销方开户行及账号", chars=100, printed=True),
    "drawer": _Field("text", "开票人", chars=10, printed=True),
    "payee": _Field("text", "收款人", chars=10, printed=True),
    "reviewer": _Field("text", "复核人", chars=10, printed=True),
    "remark": _Field("text", "发票备注", gbk_bytes=230, printed=True),
    "specialType": _Field("code", "特殊票种"),
    "taxationStyle": _Field(
        "code", "征税方式", codes={"0": "普通征税", "1": "减按计征", "2": "差额征税"}
    ),
    "deduction": _Field("money", "差额征税扣除额"),
    "priority": _Field("code", "优先级", codes={"0": "正常", "1": "加急"}),
    "billSource": _Field(
        "code",
        "数据来源",
        codes={
            "1": "excel导入",
            "2": "业务系统",
            "3": "单据下推",
            "4": "其他",
            "5": "扫码开票",
            "6": "手工新增",
            "7": "应收单下推",
        },
    ),
    "pushMatchRules": _Field("code", "推送匹配规则"),
    "fillValueRule": _Field("text", "开票项补全规则"),
    "textField1": _Field("text", "扩展字段1", chars=150),
    "textField2": _Field("text", "扩展字段2", chars=150),
    "textField3": _Field("text", "扩展字段3", chars=150),
    "textField4": _Field("text", "扩展字段4", chars=150),
    "textField5": _Field("text", "扩展字段5", chars=150),
    # 10/12-digit code and 8/20-digit number of the blue invoice being reversed. [I]
    "originalInvoiceCode": _Field("text", "原蓝票代码", chars=12),
    "originalInvoiceNumber": _Field("text", "原蓝票号码", chars=20),
    "redInfoBillNo": _Field("text", "红字信息表编号", chars=16),
    # 冲红原因 (§10.5 [C S18]; not in §6.1's list, the simulator accepts it).
    "redReason": _Field(
        "code",
        "冲红原因",
        codes={"1": "销货退回", "2": "开票有误", "3": "服务中止", "4": "销售折让"},
    ),
    "billDetail": _Field("lines", "开票明细"),
}

LINE_FIELDS: dict[str, _Field] = {
    # §6.1 gives 32 (API) and 50 (table); the API's 32 is the one the push is checked with.
    "detailId": _Field("text", "明细id", chars=32),
    "lineProperty": _Field("line_property", "行性质", codes={"1": "折扣行", "2": "正常商品行"}),
    "goodsName": _Field("text", "商品名称", gbk_bytes=92, printed=True),
    "goodsCode": _Field("text", "商品编码", chars=32),
    "revenueCode": _Field("text", "税收分类编码"),
    "taxRate": _Field("tax_rate", "税率"),
    "amount": _Field("money", "金额"),
    "taxAmount": _Field("money", "税额"),
    "quantity": _Field("quantity", "数量"),
    "price": _Field("price", "单价"),
    "units": _Field("text", "计量单位", gbk_bytes=22, printed=True),
    "specification": _Field("text", "规格型号", gbk_bytes=40, printed=True),
    "discountAmount": _Field("money", "折扣金额"),
    "privilegeFlag": _Field("code", "是否享受优惠政策", codes={"0": "不享受", "1": "享受"}),
    "privilegeContent": _Field("text", "优惠政策内容", chars=50, printed=True),
    "zeroTaxRateFlag": _Field(
        "code", "零税率标识", codes={"1": "出口退税", "2": "不征税", "3": "普通零税率"}
    ),
    "extraField": _Field("text", "明细扩展字段1", chars=200),
    "remark": _Field("text", "明细备注", chars=200),
}

HEADER_REQUIRED = (
    "billNo",
    "billDate",
    "invoiceType",
    "includeTaxFlag",
    "totalAmount",
    "buyerName",
    "sellerName",
    "billDetail",
)
LINE_REQUIRED = ("detailId", "lineProperty", "taxRate", "amount")

_REVENUE_CODE = re.compile(r"\d{19}")
_TAXPAYER_ID = re.compile(r"[0-9A-Z]{15}|[0-9A-Z]{18}|[0-9A-Z]{20}")
_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")


# --- issues -----------------------------------------------------------------------------------


class _Issues:
    """Collects issues of one document."""

    def __init__(self) -> None:
        self.items: list[Issue] = []

    def add(self, path: str, rule: str, en: str, zh: str, hint: str, hint_zh: str) -> None:
        self.items.append(Issue(path, rule, en, zh, hint, hint_zh))


def _line_path(index: int, name: str | None = None) -> str:
    return f"billDetail[{index}]" + (f".{name}" if name else "")


def _label(path: str, spec: _Field) -> str:
    return f"{spec.zh}({path})"


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple):
        return not value
    return False


def _money_text(value: Decimal) -> str:
    # Positional notation reads best, but 1E+999999 would become a megabyte of zeros in the
    # message; beyond any plausible amount keep the short scientific form.
    if abs(value.adjusted()) > 24:
        return str(value)
    return format(value, "f")


# --- per-field parsing ------------------------------------------------------------------------


class _Invalid(Exception):
    """The field value could not be read; the issue is already recorded."""


_SHOWN_LIMIT: Final = 60


def _type_issue(path: str, spec: _Field, raw: Any, expected: str, expected_zh: str) -> Issue:
    shown = repr(raw) if not isinstance(raw, dict | list) else type(raw).__name__
    if len(shown) > _SHOWN_LIMIT:  # never echo a megabyte back into the message
        shown = shown[: _SHOWN_LIMIT - 1] + "…"
    return Issue(
        path,
        "type",
        f"{path} must be {expected}, got {shown}",
        f"{_label(path, spec)}应为{expected_zh}，实际为 {shown}",
        f"Send {path} as {expected}.",
        f"请按{expected_zh}填写{spec.zh}。",
    )


def _parse_text(name: str, path: str, spec: _Field, raw: Any, issues: _Issues) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        issues.items.append(_type_issue(path, spec, raw, "text", "文本"))
        raise _Invalid
    _check_text(path, spec, raw, issues)
    return raw


def _check_text(path: str, spec: _Field, text: str, issues: _Issues) -> None:
    if spec.chars is not None and len(text) > spec.chars:
        issues.add(
            path,
            "max_length",
            f"{path} has {len(text)} characters; at most {spec.chars} are allowed",
            f"{_label(path, spec)}长度为{len(text)}个字符，最多允许{spec.chars}个字符",
            f"Shorten {path} to {spec.chars} characters or fewer.",
            f"请将{spec.zh}缩短到{spec.chars}个字符以内。",
        )
    # One encode of the whole text answers both GBK questions when it succeeds (the codec
    # is stateless: the text encodes iff every character does); characters only if not.
    gbk_size: int | None = None
    if spec.printed or spec.gbk_bytes is not None:
        try:
            gbk_size = len(text) if text.isascii() else len(text.encode("gbk"))
        except UnicodeEncodeError:
            gbk_size = None
    bad = (
        sorted({char for char in text if not _gbk_encodable(char)})
        if spec.printed and gbk_size is None
        else []
    )
    if bad:
        shown = " ".join(f"{char!r} (U+{ord(char):04X})" for char in bad)
        issues.add(
            path,
            "gbk_encodable",
            f"{path} contains characters the tax system (GBK) cannot print: {shown}",
            f"{_label(path, spec)}含有税控系统(GBK)无法编码的字符：{shown}",
            "Remove or replace those characters (emoji, rare characters) with GBK ones.",
            "请删除或替换这些字符（表情符号、生僻字等）。",
        )
    if spec.gbk_bytes is not None:
        size = gbk_size if gbk_size is not None else len(text.encode("gbk", errors="replace"))
        if size > spec.gbk_bytes:
            issues.add(
                path,
                "max_bytes_gbk",
                f"{path} is {size} bytes in GBK; at most {spec.gbk_bytes} are allowed "
                "(a Chinese character counts 2 bytes)",
                f"{_label(path, spec)}按GBK编码为{size}字节，最多允许{spec.gbk_bytes}字节"
                "（一个汉字占2字节）",
                f"Shorten {path} to {spec.gbk_bytes} GBK bytes "
                f"(about {spec.gbk_bytes // 2} Chinese characters).",
                f"请将{spec.zh}缩短到{spec.gbk_bytes}字节以内（约{spec.gbk_bytes // 2}个汉字）。",
            )


def _gbk_encodable(char: str) -> bool:
    try:
        char.encode("gbk")
    except UnicodeEncodeError:
        return False
    return True


def _code_issue(path: str, spec: _Field, raw: Any, rule: str = "enum") -> Issue:
    assert spec.codes is not None
    allowed = ", ".join(f"{code} ({label})" for code, label in spec.codes.items())
    allowed_zh = "、".join(f"{code}（{label}）" for code, label in spec.codes.items())
    return Issue(
        path,
        rule,
        f"{path} is {raw!r}; allowed values: {allowed}",
        f"{_label(path, spec)}的值 {raw!r} 不合法，允许的值：{allowed_zh}",
        f"Send one of {', '.join(spec.codes)} as {path}.",
        f"请将{spec.zh}填写为 {'、'.join(spec.codes)} 之一。",
    )


def _parse_code(name: str, path: str, spec: _Field, raw: Any, issues: _Issues) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        issues.items.append(_type_issue(path, spec, raw, "a code (text or integer)", "编码"))
        raise _Invalid
    code = raw.strip()
    if spec.codes is not None and code not in spec.codes:
        issues.items.append(_code_issue(path, spec, raw))
        raise _Invalid
    return code


def _parse_line_property(name: str, path: str, spec: _Field, raw: Any, issues: _Issues) -> int:
    return int(_parse_code(name, path, spec, raw, issues))


def _parse_invoice_type(
    name: str, path: str, spec: _Field, raw: Any, issues: _Issues
) -> InvoiceType:
    text = raw.strip().lower() if isinstance(raw, str) else None
    if text is None or text not in InvoiceType._value2member_map_:
        codes = ", ".join(f"{kind.value} ({kind.name_zh})" for kind in InvoiceType)
        codes_zh = "、".join(f"{kind.value}（{kind.name_zh}）" for kind in InvoiceType)
        issues.add(
            path,
            "invoice_type",
            f"invoiceType {raw!r} is not a 开票申请单 invoice type; allowed: {codes}",
            f"发票种类(invoiceType) {raw!r} 不合法，允许的值：{codes_zh}",
            'Send one of the codes as text, e.g. "026" for an electronic 普票 '
            'or "10xdp" for a 数电 普票.',
            "请填写上述发票种类编码之一（文本），如 026 电子普票、10xdp 数电普票。",
        )
        raise _Invalid
    return InvoiceType(text)


def _parse_number(path: str, spec: _Field, raw: Any, issues: _Issues) -> Decimal:
    try:
        return to_decimal(raw)
    except TypeError:
        if isinstance(raw, float):
            issues.add(
                path,
                "float_number",
                f"{path} arrived as a binary float ({raw!r}); money is never float",
                f"{_label(path, spec)}以浮点数({raw!r})传入，金额不允许使用浮点数",
                "Parse the JSON with schemas.money.loads_exact (JSON numbers become Decimal) "
                "or send the number as text.",
                "请用 loads_exact 解析JSON（数字保持为Decimal），或以字符串形式传入数字。",
            )
        else:
            issues.items.append(_type_issue(path, spec, raw, "a number", "数字"))
        raise _Invalid from None
    except ValueError:
        issues.items.append(
            _type_issue(
                path,
                spec,
                raw,
                f"a decimal number within {MAX_MAGNITUDE_DIGITS} digits of the point",
                f"小数点前后不超过{MAX_MAGNITUDE_DIGITS}位的十进制数字",
            )
        )
        raise _Invalid from None


def _parse_money(name: str, path: str, spec: _Field, raw: Any, issues: _Issues) -> Decimal:
    value = _parse_number(path, spec, raw, issues)
    if decimal_places(value) > 2 or abs(value) > MONEY_LIMIT:
        issues.add(
            path,
            "money_precision",
            f"{path} is {_money_text(value)}; an amount has at most 2 decimals and at most "
            "12 integer digits (14,2)",
            f"{_label(path, spec)}为{_money_text(value)}，金额最多2位小数、12位整数(14,2)",
            f"Round {path} to cents (0.01) before sending, and keep it within ±{MONEY_LIMIT}.",
            f"请将{spec.zh}四舍五入到分(0.01)，并且不超过±{MONEY_LIMIT}。",
        )
        raise _Invalid
    return value.quantize(Decimal("0.01"))


def _parse_price(name: str, path: str, spec: _Field, raw: Any, issues: _Issues) -> Decimal:
    value = _parse_number(path, spec, raw, issues)
    if decimal_places(value) > PRICE_DECIMALS or abs(value) > PRICE_LIMIT:
        issues.add(
            path,
            "price_precision",
            f"{path} is {_money_text(value)}; a unit price has at most {PRICE_DECIMALS} "
            "decimals and at most 12 integer digits",
            f"{_label(path, spec)}为{_money_text(value)}，单价最多{PRICE_DECIMALS}位小数、12位整数",
            f"Round {path} to {PRICE_DECIMALS} decimals.",
            f"请将{spec.zh}保留到{PRICE_DECIMALS}位小数以内。",
        )
        raise _Invalid
    return value


def _parse_quantity(name: str, path: str, spec: _Field, raw: Any, issues: _Issues) -> Decimal:
    value = _parse_number(path, spec, raw, issues)
    written = format(value, "f")
    if len(written) > QUANTITY_MAX_CHARS:
        issues.add(
            path,
            "max_length",
            f"{path} is written with {len(written)} characters; at most "
            f"{QUANTITY_MAX_CHARS} are allowed",
            f"{_label(path, spec)}写出后为{len(written)}个字符，最多{QUANTITY_MAX_CHARS}个字符",
            f"Round {path} so it fits in {QUANTITY_MAX_CHARS} characters.",
            f"请减少{spec.zh}的小数位数，使其不超过{QUANTITY_MAX_CHARS}个字符。",
        )
        raise _Invalid
    return value


def _parse_tax_rate(name: str, path: str, spec: _Field, raw: Any, issues: _Issues) -> Decimal:
    if isinstance(raw, float):
        _parse_number(path, spec, raw, issues)  # records the float_number issue
    try:
        return parse_tax_rate(raw)
    except (TypeError, ValueError) as exc:
        issues.add(
            path,
            "tax_rate",
            f"taxRate {raw!r} is not accepted: {exc}",
            f"税率(taxRate) {raw!r} 不合法，允许的税率：0、1%、1.5%、3%、4%、5%、6%、9%、10%、"
            "11%、13%、16%、17%",
            'Send the rate as a decimal string such as "0.13" (13%, "13%" is also read).',
            "请以小数字符串填写税率，如 0.13（13%）。",
        )
        raise _Invalid from None


def _parse_taxpayer_id(name: str, path: str, spec: _Field, raw: Any, issues: _Issues) -> str:
    text = _parse_text(name, path, spec, raw, issues)
    if not _TAXPAYER_ID.fullmatch(text):
        issues.add(
            path,
            "taxpayer_id_format",
            f"{path} {text!r} is not a taxpayer id: 15, 18 or 20 uppercase letters and digits "
            f"(got {len(text)} characters)",
            f"{_label(path, spec)} {text!r} 格式不正确：纳税人识别号应为15、18或20位大写字母或数字",
            "Send the 18-character unified social credit code (统一社会信用代码) in upper "
            "case, without spaces.",
            "请填写18位统一社会信用代码（大写、无空格）。",
        )
        raise _Invalid
    return text


def _parse_date(name: str, path: str, spec: _Field, raw: Any, issues: _Issues) -> str:
    if isinstance(raw, dt.datetime):
        raw = raw.date()
    if isinstance(raw, dt.date):
        return raw.isoformat()
    match = _DATE.fullmatch(raw.strip()) if isinstance(raw, str) else None
    parsed: dt.date | None = None
    if match:
        try:
            parsed = dt.date(*(int(part) for part in match.groups()))
        except ValueError:
            parsed = None
    if parsed is None:
        issues.add(
            path,
            "date_format",
            f"{path} {raw!r} is not a real date written yyyy-MM-dd",
            f"{_label(path, spec)} {raw!r} 不是有效的 yyyy-MM-dd 日期",
            "Send the document date as yyyy-MM-dd, e.g. 2025-07-24.",
            "请按 yyyy-MM-dd 格式填写单据日期，如 2025-07-24。",
        )
        raise _Invalid
    return parsed.isoformat()


def _parse_lines(name: str, path: str, spec: _Field, raw: Any, issues: _Issues) -> Any:
    if not isinstance(raw, list | tuple):
        issues.items.append(_type_issue(path, spec, raw, "a list of lines", "明细行数组"))
        raise _Invalid
    return raw


_Parser = Callable[[str, str, _Field, Any, _Issues], Any]
_PARSERS: dict[Kind, _Parser] = {
    "text": _parse_text,
    "code": _parse_code,
    "money": _parse_money,
    "price": _parse_price,
    "quantity": _parse_quantity,
    "date": _parse_date,
    "invoice_type": _parse_invoice_type,
    "tax_rate": _parse_tax_rate,
    "line_property": _parse_line_property,
    "taxpayer_id": _parse_taxpayer_id,
    "lines": _parse_lines,
}


def _required_issue(path: str, spec: _Field, alternative: str | None = None) -> Issue:
    if alternative:
        return Issue(
            path,
            "required",
            f"{path} (or {alternative}) is required",
            f"{_label(path, spec)}不能为空（或填写{alternative}）",
            f"Fill in {path}, or {alternative}.",
            f"请填写{spec.zh}，或填写{alternative}。",
        )
    return Issue(
        path,
        "required",
        f"{path} is required",
        f"{_label(path, spec)}不能为空",
        f"Fill in {path}.",
        f"请填写{spec.zh}。",
    )


def _read_fields(
    data: Mapping[str, Any],
    fields: Mapping[str, _Field],
    prefix: str,
    issues: _Issues,
) -> tuple[dict[str, Any], set[str]]:
    """Parse every known field; returns (normalised values, names present but unreadable)."""
    values: dict[str, Any] = {}
    broken: set[str] = set()
    for name, raw in data.items():
        spec = fields.get(name) if isinstance(name, str) else None
        if spec is None:
            _unknown_field(f"{prefix}{name}", name, fields, issues)
            continue
        if spec.kind != "lines" and _is_empty(raw):
            continue  # optional and absent; required ones are reported by the caller
        try:
            values[name] = _PARSERS[spec.kind](name, f"{prefix}{name}", spec, raw, issues)
        except _Invalid:
            broken.add(name)
    return values, broken


def _unknown_field(path: str, name: Any, fields: Mapping[str, _Field], issues: _Issues) -> None:
    close = difflib.get_close_matches(str(name), list(fields), n=1, cutoff=0.7)
    guess = f"; did you mean {close[0]}?" if close else ""
    guess_zh = f"，是否应为 {close[0]}？" if close else ""
    issues.add(
        path,
        "unknown_field",
        f"{path} is not a field of the BILL.PUSH bill{guess}",
        f"字段 {path} 不是开票申请单(BILL.PUSH)的字段{guess_zh}",
        f"Rename it to the Kingdee field name{' ' + close[0] if close else ''} or remove it; "
        "field names are case-sensitive.",
        "请改为金蝶字段名或删除该字段（字段名区分大小写）。",
    )


# --- the document -----------------------------------------------------------------------------


@dataclass
class _Line:
    index: int
    values: dict[str, Any]
    broken: set[str]

    def get(self, name: str) -> Any:
        return self.values.get(name)

    def path(self, name: str | None = None) -> str:
        return _line_path(self.index, name)


def _inspect(data: Mapping[str, Any]) -> tuple[list[Issue], dict[str, Any]]:
    issues = _Issues()
    if not isinstance(data, Mapping):
        issues.add(
            "",
            "type",
            f"a bill must be a JSON object, got {type(data).__name__}",
            f"开票申请单应为JSON对象，实际为 {type(data).__name__}",
            "Send one bill as an object with billNo, billDate, …, billDetail.",
            "请以JSON对象形式提交开票申请单（含 billNo、billDate、…、billDetail）。",
        )
        return issues.items, {}

    header, broken = _read_fields(data, HEADER_FIELDS, "", issues)
    for name in HEADER_REQUIRED:
        if name not in header and name not in broken:
            issues.items.append(_required_issue(name, HEADER_FIELDS[name]))
    seller_ids = {"sellerTaxpayerId", "orgCode"}
    if not seller_ids & header.keys() and not seller_ids & broken:
        issues.items.append(
            _required_issue("sellerTaxpayerId", HEADER_FIELDS["sellerTaxpayerId"], "orgCode")
        )

    lines = _read_lines(header.get("billDetail"), issues)
    if lines is not None:
        header["billDetail"] = [line.values for line in lines]
    _check_rules(header, broken, lines, issues)
    return issues.items, header


def _read_lines(raw: Any, issues: _Issues) -> list[_Line] | None:
    if raw is None:
        return None
    if not raw:
        issues.items.append(
            Issue(
                "billDetail",
                "required",
                "billDetail is empty; a bill needs at least one line",
                "开票明细(billDetail)不能为空，至少需要一行",
                "Add the goods or service lines to billDetail.",
                "请在 billDetail 中填写商品或服务明细行。",
            )
        )
        return None
    if len(raw) > MAX_BILL_LINES:
        issues.add(
            "billDetail",
            "too_many_lines",
            f"billDetail has {len(raw)} lines; one bill carries at most {MAX_BILL_LINES}",
            f"开票明细共{len(raw)}行，一张开票申请单最多{MAX_BILL_LINES}行",
            f"Split the document into bills of at most {MAX_BILL_LINES} lines.",
            f"请将单据拆分为每张不超过{MAX_BILL_LINES}行的开票申请单。",
        )
    lines: list[_Line] = []
    for index, item in enumerate(raw):
        path = _line_path(index)
        if not isinstance(item, Mapping):
            issues.add(
                path,
                "type",
                f"{path} must be an object, got {type(item).__name__}",
                f"第{index + 1}行明细({path})应为JSON对象，实际为 {type(item).__name__}",
                "Send each line as an object with detailId, lineProperty, goodsName, …",
                "请以JSON对象形式填写每一行明细。",
            )
            lines.append(_Line(index, {}, {"*"}))
            continue
        values, broken = _read_fields(item, LINE_FIELDS, f"{path}.", issues)
        for name in LINE_REQUIRED:
            if name not in values and name not in broken:
                issues.items.append(_required_issue(f"{path}.{name}", LINE_FIELDS[name]))
        for name in ("goodsName", "revenueCode"):
            if name not in values and name not in broken and "goodsCode" not in values:
                issues.items.append(
                    _required_issue(f"{path}.{name}", LINE_FIELDS[name], "goodsCode")
                )
        lines.append(_Line(index, values, broken))
    return lines


def _check_rules(
    header: Mapping[str, Any], broken: set[str], lines: list[_Line] | None, issues: _Issues
) -> None:
    invoice_type: InvoiceType | None = header.get("invoiceType")
    red = header.get("invoiceProperty") == "1"

    buyer_id_missing = not {"buyerTaxpayerId"} & (header.keys() | broken)
    if invoice_type is not None and invoice_type.is_special and buyer_id_missing:
        issues.add(
            "buyerTaxpayerId",
            "buyer_tax_id_required",
            f"invoiceType {invoice_type.value} is a 专票 (special VAT invoice); "
            "buyerTaxpayerId is required",
            f"发票种类 {invoice_type.value}（{invoice_type.name_zh}）为专票，"
            "购买方税号(buyerTaxpayerId)不能为空",
            "Fill in the buyer's taxpayer id, or issue a 普票 type (007, 025, 026, 10xdp) instead.",
            "请填写购买方税号，或改开普票（007、025、026、10xdp）。",
        )

    if header.get("taxationStyle") == "2" and not {"deduction"} & (header.keys() | broken):
        issues.add(
            "deduction",
            "deduction_required",
            "taxationStyle 2 (差额征税, margin taxation) needs the deduction amount",
            "征税方式为差额征税(taxationStyle=2)时，差额征税扣除额(deduction)不能为空",
            "Send deduction (the deductible amount), or use taxationStyle 0.",
            "请填写扣除额 deduction，或将征税方式改为 0（普通征税）。",
        )

    if red:
        _check_red_reference(header, broken, invoice_type, issues)

    total = header.get("totalAmount")
    if total is not None:
        if red and total >= 0:
            issues.add(
                "totalAmount",
                "sign",
                f"red bill (invoiceProperty 1) has totalAmount {_money_text(total)}; "
                "a red bill's total is negative",
                f"红票(invoiceProperty=1)的单据金额(totalAmount)为{_money_text(total)}，应为负数",
                "Send the amounts of a red bill as negative numbers.",
                "红字开票申请单的金额请填写负数。",
            )
        elif not red and total <= 0:
            issues.add(
                "totalAmount",
                "sign",
                f"blue bill has totalAmount {_money_text(total)}; a blue bill's total is positive",
                f"蓝票的单据金额(totalAmount)为{_money_text(total)}，应大于0",
                "Send positive amounts, or set invoiceProperty 1 for a red (reversing) bill.",
                "请填写正数金额；如为红冲，请将 invoiceProperty 设为 1。",
            )

    if lines is None:
        return
    _check_detail_ids(lines, issues)
    for position, line in enumerate(lines):
        previous = lines[position - 1] if position else None
        _check_line(line, previous, red, header.get("includeTaxFlag"), issues)
    _check_bill_amounts(header, lines, issues)


def _check_red_reference(
    header: Mapping[str, Any],
    broken: set[str],
    invoice_type: InvoiceType | None,
    issues: _Issues,
) -> None:
    if "originalInvoiceNumber" not in header and "originalInvoiceNumber" not in broken:
        issues.add(
            "originalInvoiceNumber",
            "red_reference",
            "a red bill (invoiceProperty 1) needs originalInvoiceNumber, the number of the "
            "blue invoice it reverses",
            "红票(invoiceProperty=1)必须填写原蓝票号码(originalInvoiceNumber)",
            "Fill in originalInvoiceNumber with the blue invoice's number.",
            "请填写被红冲的原蓝票号码。",
        )
    tax_control = invoice_type is not None and not invoice_type.is_digital
    if tax_control and not {"originalInvoiceCode"} & (header.keys() | broken):
        assert invoice_type is not None
        issues.add(
            "originalInvoiceCode",
            "red_reference",
            f"a red {invoice_type.value} bill needs originalInvoiceCode: 税控 invoices "
            "are identified by code and number",
            f"红字{invoice_type.name_zh}必须填写原蓝票代码(originalInvoiceCode)",
            "Fill in originalInvoiceCode with the blue invoice's 10- or 12-digit code.",
            "请填写被红冲的原蓝票代码（10位或12位）。",
        )


def _check_detail_ids(lines: Sequence[_Line], issues: _Issues) -> None:
    first_seen: dict[str, int] = {}
    for line in lines:
        detail_id = line.get("detailId")
        if detail_id is None:
            continue
        if detail_id in first_seen:
            other = _line_path(first_seen[detail_id])
            issues.add(
                line.path("detailId"),
                "detail_id_unique",
                f"detailId {detail_id!r} is also used by {other}; line ids must be unique "
                "within a bill",
                f"明细id(detailId) {detail_id!r} 与 {other} 重复，同一单据内明细id必须唯一",
                "Give every line its own detailId (e.g. the ERP's line id).",
                "请为每一行填写不同的明细id（如ERP行号）。",
            )
        else:
            first_seen[detail_id] = line.index


def _check_line(
    line: _Line, previous: _Line | None, red: bool, include_flag: str | None, issues: _Issues
) -> None:
    revenue_code = line.get("revenueCode")
    if revenue_code is not None and not _REVENUE_CODE.fullmatch(revenue_code):
        issues.add(
            line.path("revenueCode"),
            "revenue_code",
            f"revenueCode {revenue_code!r} is not a 19-digit tax classification code",
            f"税收分类编码(revenueCode) {revenue_code!r} 应为19位数字",
            "Send the full 19-digit 税收分类编码, padded with trailing zeros "
            "(e.g. 1090511030000000000).",
            "请填写19位税收分类编码，不足19位的末尾补0（如 1090511030000000000）。",
        )

    amount: Decimal | None = line.get("amount")
    rate: Decimal | None = line.get("taxRate")
    kind = line.get("lineProperty")

    if kind == LINE_DISCOUNT:
        _check_discount(line, previous, red, issues)
    elif kind == LINE_NORMAL and amount is not None:
        if red and amount >= 0:
            issues.add(
                line.path("amount"),
                "sign",
                f"line amount {_money_text(amount)} on a red bill; red bill lines are negative",
                f"红票明细金额(amount)为{_money_text(amount)}，红票明细金额应为负数",
                "Send the lines of a red bill with negative amounts.",
                "红字开票申请单的明细金额请填写负数。",
            )
        elif not red and amount <= 0:
            issues.add(
                line.path("amount"),
                "sign",
                f"line amount {_money_text(amount)} on a blue bill; a goods line is positive "
                "(discounts go on a discount line, lineProperty 1)",
                f"蓝票明细金额(amount)为{_money_text(amount)}，商品行金额应大于0"
                "（折扣请使用折扣行 lineProperty=1）",
                "Send a positive amount; put a discount on its own discount line right after "
                "the goods line.",
                "请填写正数金额；折扣请作为折扣行紧跟在被折扣的商品行之后。",
            )

    quantity: Decimal | None = line.get("quantity")
    price: Decimal | None = line.get("price")
    if amount is not None and quantity is not None and price is not None:
        deviation = qty_price_deviation(amount, quantity, price)
        if deviation > QTY_PRICE_TOLERANCE:
            product = _money_text(quantize_cents(quantity * price))
            issues.add(
                line.path("amount"),
                "qty_price",
                f"amount {_money_text(amount)} differs from quantity × price "
                f"({_money_text(quantity)} × {_money_text(price)} = {product}) by more than "
                f"{QTY_PRICE_TOLERANCE}",
                f"金额(amount){_money_text(amount)}与数量×单价({_money_text(quantity)}×"
                f"{_money_text(price)}={product})相差超过{QTY_PRICE_TOLERANCE}",
                "Make amount equal round(quantity × price, 2) on the same tax basis, or leave "
                "quantity/price out.",
                "请使金额等于数量×单价（四舍五入到分，含税口径一致），或不传数量和单价。",
            )

    tax_amount: Decimal | None = line.get("taxAmount")
    off_tolerance = False
    if tax_amount is not None and amount is not None and rate is not None and include_flag:
        include_tax = include_flag == "1"
        deviation = line_tax_deviation(amount, rate, include_tax, tax_amount)
        if off_tolerance := deviation > LINE_TAX_TOLERANCE:
            if include_tax:
                expected = split_inclusive(amount, rate)[1]
                basis = f"tax-inclusive {_money_text(amount)} split at {format_tax_rate(rate)}"
                basis_zh = f"含税金额{_money_text(amount)}按税率{format_tax_rate(rate)}价税分离"
            else:
                expected = tax_from_exclusive(amount, rate)
                basis = f"{_money_text(amount)} × {format_tax_rate(rate)}"
                basis_zh = f"{_money_text(amount)}×{format_tax_rate(rate)}"
            issues.add(
                line.path("taxAmount"),
                "line_tax_tolerance",
                f"taxAmount {_money_text(tax_amount)} differs from {basis} = "
                f"{_money_text(expected)} by more than {LINE_TAX_TOLERANCE}",
                f"税额(taxAmount){_money_text(tax_amount)}与{basis_zh}={_money_text(expected)}"
                f"的误差超过±{LINE_TAX_TOLERANCE}",
                f"Send taxAmount {_money_text(expected)}, or leave taxAmount out and the "
                "cloud computes it; check includeTaxFlag matches the amounts' basis.",
                f"请将税额改为{_money_text(expected)}，或不传税额由发票云计算；"
                "并确认含税标识与金额口径一致。",
            )

    if (
        tax_amount is not None
        and (tax_amount > 0 if red else tax_amount < 0)
        and kind == LINE_NORMAL
        and not off_tolerance
    ):
        # Within the tolerance a tiny line's tax may have the wrong sign (-0.03 vs 0.03):
        # the cloud cannot issue such a line (§11 signs), so it is refused here.
        colour, zh = (
            ("red", "红票明细税额不能为正数") if red else ("blue", "蓝票明细税额不能为负数")
        )
        issues.add(
            line.path("taxAmount"),
            "sign",
            f"taxAmount {_money_text(tax_amount)} has the wrong sign for a {colour} bill's line",
            f"{zh}（税额(taxAmount)为{_money_text(tax_amount)}）",
            "Give taxAmount the sign of the line's amount, or leave taxAmount out and the cloud "
            "computes it.",
            "税额的正负应与明细金额一致，或不传税额由发票云计算。",
        )


def _check_discount(line: _Line, previous: _Line | None, red: bool, issues: _Issues) -> None:
    amount: Decimal | None = line.get("amount")
    if red:
        issues.add(
            line.path("lineProperty"),
            "discount_line",
            "a red bill cannot carry discount lines (lineProperty 1)",
            "红字开票申请单不能包含折扣行(lineProperty=1)",
            "Net each discount into its goods line's amount on the red bill.",
            "请将折扣金额合并到对应商品行后再提交红票。",
        )
        return
    if previous is None or previous.get("lineProperty") != LINE_NORMAL:
        where = "is the first line" if previous is None else "follows another discount line"
        issues.add(
            line.path("lineProperty"),
            "discount_line",
            f"discount line (lineProperty 1) {where}; it must directly follow the goods line "
            "(lineProperty 2) it discounts",
            "折扣行(lineProperty=1)必须紧跟在被折扣的商品行(lineProperty=2)之后",
            "Move the discount line right after the goods line it discounts.",
            "请将折扣行放在被折扣商品行的下一行。",
        )
        return
    if amount is not None and amount >= 0:
        issues.add(
            line.path("amount"),
            "discount_line",
            f"discount line amount {_money_text(amount)} must be negative",
            f"折扣行金额(amount)为{_money_text(amount)}，折扣行金额应为负数",
            "Send the discount as a negative amount.",
            "请以负数填写折扣金额。",
        )
    rate = line.get("taxRate")
    previous_rate = previous.get("taxRate")
    if rate is not None and previous_rate is not None and rate != previous_rate:
        issues.add(
            line.path("taxRate"),
            "discount_line",
            f"discount line taxRate {format_tax_rate(rate)} differs from the discounted "
            f"line's {format_tax_rate(previous_rate)}",
            f"折扣行税率(taxRate){format_tax_rate(rate)}与被折扣行税率"
            f"{format_tax_rate(previous_rate)}不一致",
            "Use the discounted line's tax rate on its discount line.",
            "折扣行税率须与被折扣商品行一致。",
        )
    discounted = previous.get("amount")
    if amount is not None and discounted is not None and abs(amount) > abs(discounted):
        issues.add(
            line.path("amount"),
            "discount_line",
            f"discount {_money_text(amount)} exceeds the discounted line's amount "
            f"{_money_text(discounted)} ({previous.path()})",
            f"折扣金额(amount){_money_text(amount)}超过被折扣行金额{_money_text(discounted)}",
            "A discount can at most cancel its own line; lower it or spread it over lines.",
            "折扣金额不能超过被折扣行金额，请调小或分摊到多行。",
        )


def _check_bill_amounts(header: Mapping[str, Any], lines: Sequence[_Line], issues: _Issues) -> None:
    complete = all(
        line.get("amount") is not None and line.get("taxRate") is not None for line in lines
    )
    if not complete:
        return
    total = header.get("totalAmount")
    line_sum = sum((line.values["amount"] for line in lines), Decimal("0.00"))
    if total is not None and total != line_sum:
        issues.add(
            "totalAmount",
            "total_mismatch",
            f"价税合计金额不对: totalAmount {_money_text(total)} is not the sum of the line "
            f"amounts, {_money_text(line_sum)}",
            f"价税合计金额不对：单据金额(totalAmount){_money_text(total)}不等于明细金额合计"
            f"{_money_text(line_sum)}",
            f"Send totalAmount {_money_text(line_sum)}: the sum of billDetail.amount on the "
            "includeTaxFlag basis.",
            f"请将单据金额改为{_money_text(line_sum)}（按含税标识口径的明细金额合计）。",
        )
    include_flag = header.get("includeTaxFlag")
    if include_flag is None:
        return
    include_tax = include_flag == "1"
    pairs = [
        (
            line_amounts(
                line.values["amount"],
                line.values["taxRate"],
                include_tax,
                line.get("taxAmount"),
            ),
            line.values["taxRate"],
        )
        for line in lines
    ]
    error = invoice_tax_error(pairs)
    if abs(error) > INVOICE_TAX_TOLERANCE:
        issues.add(
            "billDetail",
            "invoice_tax_tolerance",
            f"the lines' tax differs from round(amount excl. tax × rate, 2) by {error} in "
            f"total; an invoice allows at most ±{INVOICE_TAX_TOLERANCE}",
            f"明细税额与按不含税金额×税率计算的税额累计误差为{error}，超过±{INVOICE_TAX_TOLERANCE}",
            "Leave taxAmount out so the cloud computes each line's tax, or fix the line tax "
            "amounts; on the tax-inclusive basis split the bill into smaller bills.",
            "请不传税额由发票云计算，或修正各行税额；含税口径下可拆分为多张单据。",
        )


# --- entry points -----------------------------------------------------------------------------


def check_bill(data: Mapping[str, Any] | Bill) -> list[Issue]:
    """Every issue of ``data`` (a bill as parsed by ``loads_exact``); empty when valid."""
    if isinstance(data, Bill):
        data = data.to_wire()
    return _inspect(data)[0]


def validate_bill(data: Mapping[str, Any] | Bill) -> Bill:
    """Run every rule; return the normalised ``Bill`` or raise ``DocumentInvalid``."""
    if isinstance(data, Bill):
        data = data.to_wire()
    issues, normalised = _inspect(data)
    if issues:
        bill_no = data.get("billNo") if isinstance(data, Mapping) else None
        raise DocumentInvalid(issues, bill_no=bill_no if isinstance(bill_no, str) else None)
    return Bill.model_validate(normalised)
