"""Red-letter (红冲) documents: built from an original, checked against what the cloud says may
still be reversed, linked to the original (``documents.original_document_id``).

Two ways in, one set of rules:

| way in | what the bridge does |
|---|---|
| ``reverse`` (``fapiao reverse``, ``POST /v1/documents/{bill_no}/reverse``) | builds the red |
| | 开票申请单(s) from the stored original and the cloud's invoices, checks, stores, links |
| an ERP's own red bill (``invoiceProperty`` 1 through ``submit``) | ``RedLetterGate`` finds |
| | the original by the blue invoice's code/number, checks, links (else ``invalid``) |

What a reversal means

* A merged invoice (``autoMerge``, several bills on one invoice): a whole reversal of one
  bill reverses only that bill's lines of it (by ``detailId``).
* One red bill per blue invoice: a red invoice reverses exactly one blue invoice (§6.1:
  ``originalInvoiceCode``/``originalInvoiceNumber``), so a whole-document reversal of an
  original the cloud issued as several invoices (split over 8 lines or over the amount limit)
  makes one red document per blue invoice that still has something to reverse.
* Whole document (no lines named): each red bill mirrors its blue invoice line by line
  (amounts and tax as issued, negated; a discount line netted into its line, since a red bill
  carries none). After earlier partial reversals it takes what is left per line: the cloud's
  ``remainRedAmount`` (less red lines in flight), else the issued line less the bridge's own
  live red lines — refused when those do not add up to ``canRedAmount`` (reversed outside the
  bridge): name the lines and amounts instead. A line named without an amount: the same.
* Given lines: ``detailId`` and optionally ``amount`` (the magnitude to reverse, on the
  original's ``includeTaxFlag`` basis; absent = the whole line). Each line goes to the first
  blue invoice that holds that ``detailId`` with something left on it.
* The red bill keeps the original's buyer, seller and ``includeTaxFlag``, takes the blue
  invoice's ``invoiceType``, and carries ``redReason`` (required) and ``redInfoBillNo``
  (required for 专票 types, ``RED_NEEDS_RED_INFO_TYPES``).

Bill numbers and idempotency: ``<original>-R<k>`` for the whole reversal of the k-th blue
invoice (invoices ordered by code and number), ``<original>-R<k>-<h>`` for given lines (``h``
= 6 hex digits of the request: lines, amounts, reason), or the caller's ``red_bill_no`` (one
red bill only). A request whose red bill numbers already exist, linked to this original,
answers those documents (outcome ``unchanged``) and creates nothing — whatever the cloud says
by then. To reverse the same lines and amounts a second time, name a new ``red_bill_no``.

Limits (rule codes; ``Issue`` paths name the red bill's field)

| rule | when |
|---|---|
| ``red_reason`` | ``redReason`` missing or not 1 销货退回, 2 开票有误, 3 服务中止, 4 销售折让 |
| ``red_info_required`` | a red 专票 (004, 028, 08xdp) without ``redInfoBillNo`` (红字确认单编号) |
| ``original_unknown`` | no document of this tenant holds the blue invoice (ERP red bills) |
| ``original_not_invoiced`` | the original has no issued blue invoice (yet) |
| ``unknown_line`` | a named ``detailId`` is on none of the original's blue invoices |
| ``can_red_amount`` | ``billDetail[i].amount`` over the line's remaining amount, or |
| | ``totalAmount`` over the invoice's ``canRedAmount`` less red bills still in flight |
| ``can_red_tax_amount`` | the same for tax (``canRedTaxAmount``) |
| ``nothing_to_reverse`` | every blue invoice is reversed already |
| ``cloud_unavailable`` | the cloud could not be asked (an ERP red bill; send it again later) |
| ``red_bill_no`` | a derived red bill number would exceed 50 characters, or a caller's |
| | ``red_bill_no`` for more than one red bill |

Amounts are compared excluding tax (``canRedAmount`` is 合计金额) and tax apart. "In flight":
red documents linked to the same blue invoice that the cloud has not issued yet (draft,
pushing, in_doubt, pushed, partially_invoiced, withdrawing): the cloud's ``canRedAmount``
does not count them, the bridge does. The cloud checks again at push (-10013/-10014/-10015),
which the worker reports as ``rejected`` with the reason spelled out.

Errors

    ValueError
     ├── ReversalRefused      the request breaks a rule above; ``issues`` (HTTP 422)
     └── NotReversible        the original cannot be reversed: red itself (HTTP 409)
    RuntimeError
     └── CloudUnavailable     the cloud could not be asked what may be reversed (HTTP 503)
    (and producers.documents' DocumentNotFound / AmbiguousBillNo)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from schemas.cloud_contract import (
    INVOICE_STATUS_VOID,
    QUOTA_TIMEZONE,
    RED_INVOICE_PROPERTY,
    RED_NEEDS_RED_INFO_TYPES,
    RED_REASONS,
)
from schemas.erp import Bill, validate_bill
from schemas.errors import DocumentInvalid, Issue
from schemas.money import quantize_cents
from schemas.tax import line_amounts, parse_tax_rate
from schemas.tenants import TenantConfig, TenantsFile
from store.models import Document, Invoice, InvoiceDocument
from store.states import DocumentStatus

if TYPE_CHECKING:
    from producers.intake import SubmitResult, _Prepared
    from schemas.kingdee import InvoiceItem, InvoiceLine
    from worker.services.query import QueryAnswer

__all__ = [
    "IN_FLIGHT",
    "RED_RULES",
    "BadReversalRequest",
    "CloudUnavailable",
    "InvoiceQuery",
    "NotReversible",
    "Pending",
    "PlannedRedBill",
    "RedLetterGate",
    "RedLine",
    "ReversalRefused",
    "ReversalRequest",
    "ask_cloud",
    "check_header",
    "check_limits",
    "link_red_documents",
    "pending_by_invoice",
    "plan_reversal",
    "red_documents_of",
    "red_links",
    "runtime_query",
]

RED_RULES: Final[dict[str, str]] = {
    "red_reason": "redReason missing or not one of 1 2 3 4",
    "red_info_required": "a red special invoice (004, 028, 08xdp) needs redInfoBillNo",
    "original_unknown": "no document of this tenant holds the blue invoice",
    "original_not_invoiced": "the original has no issued blue invoice",
    "unknown_line": "the detailId is on none of the original's blue invoices",
    "can_red_amount": "more than the cloud says may still be reversed (excl. tax)",
    "can_red_tax_amount": "more tax than the cloud says may still be reversed",
    "nothing_to_reverse": "every blue invoice of the original is reversed already",
    "cloud_unavailable": "the cloud could not be asked what may still be reversed",
    "red_bill_no": "the red bill number cannot be made or used",
}

# Red documents the cloud has not issued yet: its canRedAmount does not count them.
IN_FLIGHT: Final = frozenset(
    {
        DocumentStatus.draft.value,
        DocumentStatus.pushing.value,
        DocumentStatus.in_doubt.value,
        DocumentStatus.pushed.value,
        DocumentStatus.partially_invoiced.value,
        DocumentStatus.withdrawing.value,
    }
)
# ...and those whose lines count against a line's remaining amount (issued ones too).
_LIVE: Final = IN_FLIGHT | {DocumentStatus.invoiced.value}
_BILL_NO_MAX: Final = 50
_ZERO: Final = Decimal("0.00")
# Fields of the original a red bill keeps (buyer, seller, people, routing).
_KEPT: Final = (
    "buyerName", "buyerTaxpayerId", "buyerProperty", "buyerAddressAndTel",
    "buyerBankAndAccount", "buyerRecipientMail", "buyerRecipientPhone", "buyerCode",
    "sellerTaxpayerId", "orgCode", "sellerName", "sellerAddressAndTel", "sellerBankAndAccount",
    "drawer", "payee", "reviewer", "specialType", "priority", "billSource", "pushMatchRules",
    "fillValueRule", "autoInvoice",
)  # fmt: skip
_LINE_KEPT: Final = ("goodsName", "goodsCode", "revenueCode", "units", "specification")
_SHORT_NAME = re.compile(r"^\*[^*]*\*")

# (tenant, original bill, seller, original document id) -> the cloud's answer.
InvoiceQuery = Callable[[TenantConfig, str, str, int | None], "QueryAnswer"]


class ReversalRefused(ValueError):
    """The red bill(s) break a rule of the module table; ``issues`` names each."""

    def __init__(self, bill_no: str, issues: Iterable[Issue]) -> None:
        self.bill_no = bill_no
        self.issues = tuple(issues)
        super().__init__(
            f"reversal of {bill_no} refused / 红冲未通过校验 ({bill_no}): "
            + "; ".join(str(issue) for issue in self.issues)
        )


class NotReversible(ValueError):
    def __init__(self, bill_no: str, why: str, why_zh: str) -> None:
        self.bill_no, self.why_zh = bill_no, why_zh
        super().__init__(f"{bill_no}: {why} / {why_zh}")


class CloudUnavailable(RuntimeError):
    def __init__(self, bill_no: str, reason: str) -> None:
        self.bill_no, self.reason = bill_no, reason
        super().__init__(
            f"the cloud could not be asked what may still be reversed on {bill_no} ({reason});"
            " nothing was created, try again later / 无法查询剩余可冲额度，请稍后重试"
        )


@dataclass(frozen=True, slots=True)
class RedLine:
    """A line to reverse: the original's ``detailId``; ``amount`` the magnitude to reverse on
    the original's tax basis (None: all that is left on the line)."""

    detail_id: str
    amount: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ReversalRequest:
    bill_no: str
    red_reason: str | None
    red_info_bill_no: str | None = None
    lines: tuple[RedLine, ...] = ()
    red_bill_no: str | None = None
    seller_tax_id: str | None = None
    tenant: str | None = None

    def fingerprint(self) -> str:
        text = "|".join(
            [self.red_reason or "", self.red_info_bill_no or ""]
            + [f"{line.detail_id}={line.amount}" for line in self.lines]
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:6].upper()


class BadReversalRequest(ValueError):
    """A malformed reversal request (HTTP 400); ``field`` names what is wrong."""

    def __init__(self, field: str, message: str, message_zh: str) -> None:
        self.field, self.message_zh = field, message_zh
        super().__init__(message)


def _amount(value: object, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise BadReversalRequest(
            field, f'{field} must be a decimal number like "40.00"', f"{field} 必须是金额"
        )
    try:
        number = Decimal(str(value).strip())
    except ArithmeticError:
        number = Decimal("NaN")
    if not number.is_finite() or number == 0 or number != number.quantize(Decimal("0.01")):
        raise BadReversalRequest(
            field,
            f"{field} must be a non-zero amount with at most 2 decimals, got {value!r}",
            f"{field} 必须是非零金额，最多两位小数",
        )
    return abs(number)


def _text(value: object, field: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise BadReversalRequest(field, f"{field} must be given as text", f"{field} 必须是文本")
    return value.strip() or None


def reversal_request(
    bill_no: str,
    body: Mapping[str, Any],
    *,
    seller_tax_id: str | None = None,
    tenant: str | None = None,
) -> ReversalRequest:
    """A ``ReversalRequest`` from the HTTP body / CLI options (``ReverseBody``'s fields);
    raises BadReversalRequest naming the field."""
    known = {"redReason", "redInfoBillNo", "lines", "red_bill_no", "reason"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadReversalRequest(
            unknown[0],
            f"unknown field {unknown[0]!r}; the body may hold {', '.join(sorted(known))}",
            f"未知字段 {unknown[0]}",
        )
    raw_lines = body.get("lines") or []
    if not isinstance(raw_lines, list):
        raise BadReversalRequest("lines", "lines must be a list", "lines 必须是数组")
    lines: list[RedLine] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_lines):
        path = f"lines[{index}]"
        if not isinstance(raw, Mapping) or set(raw) - {"detailId", "amount"}:
            raise BadReversalRequest(
                path, f'{path} must be {{"detailId": …, "amount": …}}', f"{path} 格式错误"
            )
        detail_id = _text(raw.get("detailId"), f"{path}.detailId")
        if detail_id is None:
            raise BadReversalRequest(
                f"{path}.detailId",
                f"{path}.detailId is required: name the line",
                f"{path}.detailId 必须填写",
            )
        if detail_id in seen:
            raise BadReversalRequest(
                f"{path}.detailId",
                f"detailId {detail_id!r} is named twice",
                f"明细id {detail_id} 重复",
            )
        seen.add(detail_id)
        amount = raw.get("amount")
        lines.append(
            RedLine(detail_id, None if amount is None else _amount(amount, f"{path}.amount"))
        )
    return ReversalRequest(
        bill_no=bill_no,
        red_reason=_text(body.get("redReason"), "redReason"),
        red_info_bill_no=_text(body.get("redInfoBillNo"), "redInfoBillNo"),
        lines=tuple(lines),
        red_bill_no=_text(body.get("red_bill_no"), "red_bill_no"),
        seller_tax_id=seller_tax_id,
        tenant=tenant,
    )


def _issue(path: str, rule: str, en: str, zh: str, hint: str, hint_zh: str) -> Issue:
    return Issue(path, rule, en, zh, hint, hint_zh)


def _money(value: Decimal) -> str:
    return format(quantize_cents(value), "f")


# --------------------------------------------------------------------------- the cloud's view


@dataclass(frozen=True, slots=True)
class _NetLine:
    """A blue invoice line with its discount line netted in (excl. tax, tax; positive)."""

    detail_id: str
    rate: Decimal
    excl: Decimal
    tax: Decimal
    goods_name: str
    revenue_code: str
    remain_excl: Decimal | None  # the cloud's remainRedAmount, when it gives one
    remain_tax: Decimal | None


@dataclass(frozen=True, slots=True)
class _Blue:
    """An issued blue invoice as the cloud answers it: what may still be reversed."""

    position: int  # 1-based, invoices ordered by code and number
    code: str
    number: str
    invoice_type: str
    total_excl: Decimal
    total_tax: Decimal
    can_red: Decimal
    can_red_tax: Decimal
    lines: tuple[_NetLine, ...]

    @property
    def reversed_before(self) -> bool:
        return self.can_red < self.total_excl


def _net_lines(lines: Sequence[InvoiceLine]) -> tuple[_NetLine, ...]:
    out: list[_NetLine] = []
    for line in lines:
        excl, tax = line.amount or _ZERO, line.taxAmount or _ZERO
        if line.lineProperty == 1 and out:  # output code set: 1 = discount line (§10.4)
            last = out[-1]
            out[-1] = replace(last, excl=last.excl + excl, tax=last.tax + tax)
            continue
        out.append(
            _NetLine(
                detail_id=line.detailId or line.billSourceId or "",
                rate=parse_tax_rate(line.taxRate or "0"),
                excl=excl,
                tax=tax,
                goods_name=_SHORT_NAME.sub("", line.goodsName or ""),
                revenue_code=line.revenueCode or "",
                remain_excl=line.remainRedAmount,
                remain_tax=line.remainRedTax,
            )
        )
    return tuple(out)


def _blue_invoices(items: Sequence[InvoiceItem], fallback_type: str) -> list[_Blue]:
    issued = [
        item
        for item in items
        if item.is_issued
        and str(item.invoiceProperty or 0) != RED_INVOICE_PROPERTY
        and (item.invoiceStatus or "") != INVOICE_STATUS_VOID
    ]
    issued.sort(key=lambda item: (item.invoiceCode or "", item.invoiceNum or ""))
    out: list[_Blue] = []
    for position, item in enumerate(issued, start=1):
        excl, tax = item.totalAmount or _ZERO, item.totalTaxAmount or _ZERO
        out.append(
            _Blue(
                position=position,
                code=item.invoiceCode or "",
                number=item.invoiceNum or "",
                invoice_type=item.invoiceType or fallback_type,
                total_excl=excl,
                total_tax=tax,
                # Absent: nothing reversed yet is the only reading that refuses nothing wrongly;
                # the cloud checks again at push.
                can_red=excl if item.canRedAmount is None else item.canRedAmount,
                can_red_tax=tax if item.canRedTaxAmount is None else item.canRedTaxAmount,
                lines=_net_lines(list(item.goods or item.invoiceDetail or [])),
            )
        )
    return out


# --------------------------------------------------------------------------- red documents so far


@dataclass(slots=True)
class Pending:
    """What red documents of the bridge reverse on one blue invoice (positive, excl. tax)."""

    excl: Decimal = _ZERO  # in flight (not in the cloud's canRedAmount yet)
    tax: Decimal = _ZERO
    lines_in_flight: dict[str, Decimal] = field(default_factory=dict)  # detailId -> excl
    lines_live: dict[str, Decimal] = field(default_factory=dict)  # in flight and issued


def _red_amounts(payload: Mapping[str, Any]) -> Bill | None:
    try:
        return validate_bill(payload)
    except (DocumentInvalid, ValueError):
        return None


def _add(into: dict[str, Decimal], key: str, value: Decimal) -> None:
    into[key] = into.get(key, _ZERO) + value


def pending_by_invoice(
    reds: Sequence[Document], *, skip: tuple[str, str, str] | None = None
) -> dict[str, Pending]:
    """Per blue invoice number: what the bridge's live red documents reverse on it."""
    out: dict[str, Pending] = {}
    for red in reds:
        if (red.tenant, red.seller_tax_id, red.bill_no) == skip or red.status not in _LIVE:
            continue
        bill = _red_amounts(red.payload)
        if bill is None:
            continue
        pending = out.setdefault(bill.originalInvoiceNumber or "", Pending())
        in_flight = red.status in IN_FLIGHT
        for line, amount in zip(bill.billDetail, bill.line_amounts(), strict=True):
            _add(pending.lines_live, line.detailId, abs(amount.excl))
            if in_flight:
                _add(pending.lines_in_flight, line.detailId, abs(amount.excl))
                pending.excl += abs(amount.excl)
                pending.tax += abs(amount.tax)
    return out


def red_documents_of(session: Session, original_ids: Sequence[int]) -> list[Document]:
    """Current red documents linked to any of ``original_ids``."""
    if not original_ids:
        return []
    return list(
        session.scalars(
            select(Document)
            .where(
                Document.original_document_id.in_(list(original_ids)),
                Document.is_current.is_(True),
            )
            .order_by(Document.id)
        )
    )


# --------------------------------------------------------------------------- the checks


def check_limits(red: Bill, blue: _Blue, pending: Pending, original_bill_no: str) -> list[Issue]:
    """Every line and the total of ``red`` against what may still be reversed on ``blue``."""
    issues: list[Issue] = []
    by_id = {line.detail_id: line for line in blue.lines}
    amounts = red.line_amounts()
    for index, (line, amount) in enumerate(zip(red.billDetail, amounts, strict=True)):
        blue_line = by_id.get(line.detailId)
        if blue_line is None:
            continue  # an ERP's own line ids: only the total can be checked
        if blue_line.remain_excl is not None:
            # remainRedAmount counts issued red invoices already; ours in flight it cannot.
            left = blue_line.remain_excl - pending.lines_in_flight.get(line.detailId, _ZERO)
        else:
            left = blue_line.excl - pending.lines_live.get(line.detailId, _ZERO)
        if abs(amount.excl) > left:
            issues.append(
                _issue(
                    f"billDetail[{index}].amount",
                    "can_red_amount",
                    f"line {line.detailId} reverses {_money(abs(amount.excl))} (excl. tax) of "
                    f"invoice {blue.number}, but only {_money(max(left, _ZERO))} of that line "
                    "may still be reversed",
                    f"明细 {line.detailId} 红冲金额(不含税) {_money(abs(amount.excl))} 超过发票 "
                    f"{blue.number} 该行剩余可红冲金额 {_money(max(left, _ZERO))}",
                    f"Reverse at most {_money(max(left, _ZERO))} (excl. tax) on this line; "
                    f"`fapiao show {original_bill_no}` lists the red documents made already.",
                    f"该行最多可红冲 {_money(max(left, _ZERO))}（不含税）；"
                    f"用 fapiao show {original_bill_no} 查看已有的红字单据。",
                )
            )
    total = red.total()
    left = blue.can_red - pending.excl
    if abs(total.excl) > left:
        issues.append(
            _issue(
                "totalAmount",
                "can_red_amount",
                f"the red bill reverses {_money(abs(total.excl))} (excl. tax) of invoice "
                f"{blue.number}; the cloud's canRedAmount is {_money(blue.can_red)} and "
                f"{_money(pending.excl)} is in red documents not yet issued, so at most "
                f"{_money(max(left, _ZERO))} may still be reversed",
                f"红冲金额(不含税) {_money(abs(total.excl))} 超过发票 {blue.number} 的可红冲金额："
                f"发票云 canRedAmount 为 {_money(blue.can_red)}，尚未开具的红字单据占用 "
                f"{_money(pending.excl)}，剩余 {_money(max(left, _ZERO))}",
                f"Reverse at most {_money(max(left, _ZERO))} (excl. tax) of this invoice, or "
                "wait for the red documents in flight to settle.",
                f"最多可红冲 {_money(max(left, _ZERO))}（不含税），或等待在途红字单据完成。",
            )
        )
    left_tax = blue.can_red_tax - pending.tax
    if abs(total.tax) > left_tax:
        issues.append(
            _issue(
                "totalAmount",
                "can_red_tax_amount",
                f"the red bill reverses {_money(abs(total.tax))} of tax on invoice "
                f"{blue.number}; canRedTaxAmount is {_money(blue.can_red_tax)}, "
                f"{_money(pending.tax)} is in flight: at most {_money(max(left_tax, _ZERO))}",
                f"红冲税额 {_money(abs(total.tax))} 超过发票 {blue.number} 的可红冲税额 "
                f"{_money(max(left_tax, _ZERO))}",
                "Lower the amounts (the tax follows them), or wait for the red documents in "
                "flight to settle.",
                "请减少红冲金额，或等待在途红字单据完成。",
            )
        )
    return issues


def check_header(red_reason: str | None, red_info: str | None, invoice_type: str) -> list[Issue]:
    issues: list[Issue] = []
    if red_reason not in RED_REASONS:
        issues.append(
            _issue(
                "redReason",
                "red_reason",
                f"redReason {red_reason!r} is missing or unknown; a red bill says why it "
                "reverses: 1 销货退回 (goods returned), 2 开票有误 (wrong invoice), "
                "3 服务中止 (service stopped), 4 销售折让 (sales allowance)",
                "红字单据必须填写冲红原因(redReason)："
                "1 销货退回、2 开票有误、3 服务中止、4 销售折让",
                'Send redReason 1, 2, 3 or 4 (--red-reason / "redReason").',
                "请填写冲红原因 1、2、3 或 4。",
            )
        )
    if invoice_type in RED_NEEDS_RED_INFO_TYPES and not (red_info or "").strip():
        issues.append(
            _issue(
                "redInfoBillNo",
                "red_info_required",
                f"a red {invoice_type} (专票) needs redInfoBillNo, the number of the confirmed "
                "红字确认单 / 红字信息表",
                f"红字专票({invoice_type})必须填写红字确认单编号(redInfoBillNo)",
                "Have the 红字确认单 confirmed in the tax system, then send its number "
                '(--red-info-bill-no / "redInfoBillNo").',
                "请先在税务系统确认红字确认单，再填写其编号。",
            )
        )
    return issues


# --------------------------------------------------------------------------- building


def _today() -> str:
    return datetime.now(UTC).astimezone(ZoneInfo(QUOTA_TIMEZONE)).date().isoformat()


def _payload_lines(payload: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {
        str(line.get("detailId")): line
        for line in payload.get("billDetail") or []
        if isinstance(line, Mapping)
    }


def _red_line(
    line: _NetLine, original: Mapping[str, Any] | None, amount: Decimal, tax: Decimal | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"detailId": line.detail_id, "lineProperty": 2}
    for name in _LINE_KEPT:
        value = (original or {}).get(name)
        if value not in (None, ""):
            out[name] = value
    out.setdefault("goodsName", line.goods_name)
    if line.revenue_code:
        out.setdefault("revenueCode", line.revenue_code)
    out["taxRate"] = format(line.rate, "f")
    out["amount"] = -quantize_cents(amount)
    if tax is not None:
        out["taxAmount"] = -quantize_cents(tax)
    return out


def _red_header(
    payload: Mapping[str, Any], blue: _Blue, request: ReversalRequest, bill_no: str
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "billNo": bill_no,
        "billDate": _today(),
        "invoiceType": blue.invoice_type,
        "includeTaxFlag": payload.get("includeTaxFlag", "0"),
        "invoiceProperty": RED_INVOICE_PROPERTY,
    }
    for name in _KEPT:
        if payload.get(name) not in (None, ""):
            out[name] = payload[name]
    if blue.code:
        out["originalInvoiceCode"] = blue.code
    out["originalInvoiceNumber"] = blue.number
    if request.red_reason is not None:
        out["redReason"] = request.red_reason
    if request.red_info_bill_no:
        out["redInfoBillNo"] = request.red_info_bill_no
    return out


@dataclass(frozen=True, slots=True)
class PlannedRedBill:
    bill_no: str
    blue: _Blue
    wire: dict[str, Any]


def _left_on_line(line: _NetLine, pending: Pending) -> tuple[Decimal, Decimal | None]:
    """(excl, tax or None = to be computed) still to reverse on ``line``: the cloud's
    remainRedAmount less red lines in flight, else the issued amount less the bridge's live
    red lines."""
    if line.remain_excl is not None:
        in_flight = pending.lines_in_flight.get(line.detail_id, _ZERO)
        tax = line.remain_tax if not in_flight else None
        return line.remain_excl - in_flight, tax
    excl = line.excl - pending.lines_live.get(line.detail_id, _ZERO)
    return excl, (line.tax if excl == line.excl else None)


def _on_basis(
    excl: Decimal, tax: Decimal | None, rate: Decimal, include_tax: bool
) -> tuple[Decimal, Decimal]:
    """(amount on the original's tax basis, tax) of an amount excl. tax."""
    if tax is None:
        tax = line_amounts(excl, rate, False, None).tax
    return (excl + tax if include_tax else excl), tax


def _whole(
    payload: Mapping[str, Any], blue: _Blue, pending: Pending, include_tax: bool
) -> list[dict[str, Any]] | None:
    """The red lines reversing all that is left of ``blue``; None when what is left per line
    does not add up to what the cloud says is left (reversed outside the bridge)."""
    originals = _payload_lines(payload)
    # A merged invoice (autoMerge) also carries other bills' lines: reverse only ours.
    ours = [line for line in blue.lines if not originals or line.detail_id in originals]
    merged = len(ours) < len(blue.lines)
    left: list[tuple[_NetLine, Decimal, Decimal | None]]
    if not blue.reversed_before and not pending.lines_live:
        left = [(line, line.excl, line.tax) for line in ours]
    else:
        left = [(line, *_left_on_line(line, pending)) for line in ours]
        if not merged and sum((e for _, e, _ in left), _ZERO) != blue.can_red - pending.excl:
            return None
    lines = []
    for line, excl, tax in left:
        if excl <= 0:
            continue
        amount, tax = _on_basis(excl, tax, line.rate, include_tax)
        lines.append(_red_line(line, originals.get(line.detail_id), amount, tax))
    return lines


def plan_reversal(
    request: ReversalRequest,
    payload: Mapping[str, Any],
    blues: Sequence[_Blue],
    pending: Mapping[str, Pending],
) -> list[PlannedRedBill] | list[Issue]:
    """The red bills ``request`` makes from the original's ``payload`` and its ``blues``
    (module docstring), or the issues that prevent them. No limits are checked here."""
    include_tax = str(payload.get("includeTaxFlag", "0")) == "1"
    original = str(payload.get("billNo", request.bill_no))
    groups: dict[int, list[dict[str, Any]]] = {}
    issues: list[Issue] = []
    if not request.lines:
        for blue in blues:
            if blue.can_red <= 0:
                continue
            lines = _whole(payload, blue, pending.get(blue.number, Pending()), include_tax)
            if lines is None:
                issues.append(
                    _issue(
                        "lines",
                        "can_red_amount",
                        f"invoice {blue.number} was partly reversed outside this bridge "
                        f"(canRedAmount {_money(blue.can_red)} of {_money(blue.total_excl)}) and "
                        "the cloud does not say what is left per line, so a whole reversal "
                        "cannot be built",
                        f"发票 {blue.number} 已在桥接服务之外部分红冲"
                        f"（剩余 {_money(blue.can_red)}），无法整单红冲",
                        "Name the lines and amounts to reverse (--line DETAIL_ID=AMOUNT).",
                        "请指定要红冲的明细和金额（--line 明细id=金额）。",
                    )
                )
                continue
            if lines:
                groups[blue.position] = lines
    else:
        originals = _payload_lines(payload)
        for index, wanted in enumerate(request.lines):
            target = next(
                (
                    (blue, line)
                    for blue in blues
                    if blue.can_red > 0
                    for line in blue.lines
                    if line.detail_id == wanted.detail_id
                ),
                None,
            ) or next(
                ((blue, line) for blue in blues for line in blue.lines
                 if line.detail_id == wanted.detail_id),
                None,
            )  # fmt: skip
            if target is None:
                issues.append(
                    _issue(
                        f"lines[{index}].detailId",
                        "unknown_line",
                        f"detailId {wanted.detail_id!r} is on none of the issued blue invoices "
                        f"of {original}",
                        f"明细id {wanted.detail_id} 不在 {original} 已开具的蓝字发票上",
                        f"Use a detailId of {original}'s lines (`fapiao show {original}`).",
                        "请使用原单据的明细id。",
                    )
                )
                continue
            blue, line = target
            tax: Decimal | None
            if wanted.amount is None:
                excl, left_tax = _left_on_line(line, pending.get(blue.number, Pending()))
                amount, tax = _on_basis(max(excl, _ZERO), left_tax, line.rate, include_tax)
            else:
                full = line.excl + line.tax if include_tax else line.excl
                amount = abs(wanted.amount)
                tax = line.tax if amount == full else None
            groups.setdefault(blue.position, []).append(
                _red_line(line, originals.get(line.detail_id), amount, tax)
            )
    if issues:
        return issues
    if not groups:
        return [
            _issue(
                "",
                "nothing_to_reverse",
                f"every blue invoice of {original} is reversed already (canRedAmount 0)",
                f"{original} 的蓝字发票均已红冲完毕",
                f"Nothing to do; `fapiao show {original}` lists its red documents.",
                "无需操作。",
            )
        ]
    by_position = {blue.position: blue for blue in blues}
    if request.red_bill_no and len(groups) > 1:
        return [
            _issue(
                "red_bill_no",
                "red_bill_no",
                f"this reversal makes {len(groups)} red bills (one per blue invoice), so one "
                "red_bill_no cannot name them",
                f"本次红冲生成 {len(groups)} 张红字单据（每张蓝票一张），不能共用一个红字单据编号",
                "Leave red_bill_no out (numbers are derived), or reverse one invoice's lines "
                "at a time.",
                "请不指定红字单据编号，或每次只红冲一张蓝票的明细。",
            )
        ]
    planned: list[PlannedRedBill] = []
    for position, lines in sorted(groups.items()):
        blue = by_position[position]
        if request.red_bill_no:
            bill_no = request.red_bill_no
        elif request.lines:
            bill_no = f"{original}-R{position}-{request.fingerprint()}"
        else:
            bill_no = f"{original}-R{position}"
        if len(bill_no) > _BILL_NO_MAX:
            return [
                _issue(
                    "red_bill_no",
                    "red_bill_no",
                    f"the derived red bill number {bill_no!r} is longer than {_BILL_NO_MAX}",
                    f"生成的红字单据编号超过 {_BILL_NO_MAX} 个字符",
                    'Name the red bill number yourself (--red-bill-no / "red_bill_no").',
                    "请自行指定红字单据编号。",
                )
            ]
        wire = _red_header(payload, blue, request, bill_no)
        wire["billDetail"] = lines
        wire["totalAmount"] = sum((line["amount"] for line in lines), _ZERO)
        planned.append(PlannedRedBill(bill_no, blue, wire))
    return planned


# --------------------------------------------------------------------------- linking


def link_red_documents(session: Session, links: Mapping[int, int]) -> None:
    """``documents.original_document_id`` of each red document id -> its original's id."""
    for red_id, original_id in links.items():
        session.execute(
            update(Document)
            .where(Document.id == red_id, Document.original_document_id.is_(None))
            .values(original_document_id=original_id)
        )


def red_links(session: Session, document: Document) -> dict[str, Any]:
    """The view's link fields: ``original`` (of a red document) and ``red_documents``."""
    original = None
    if document.original_document_id is not None:
        row = session.get(Document, document.original_document_id)
        if row is not None:
            original = {"bill_no": row.bill_no, "document_id": row.id, "status": row.status}
    reds = red_documents_of(session, [document.id])
    return {
        "original": original,
        "red_documents": [
            {
                "bill_no": red.bill_no,
                "document_id": red.id,
                "status": red.status,
                "total_amount": red.total_amount,
                "original_invoice_number": (red.payload or {}).get("originalInvoiceNumber"),
                "red_reason": (red.payload or {}).get("redReason"),
            }
            for red in reds
        ],
    }


# --------------------------------------------------------------------------- the cloud


def ask_cloud(
    query: InvoiceQuery, tenant: TenantConfig, original: Document, fallback_type: str
) -> list[_Blue]:
    answer = query(tenant, original.bill_no, original.seller_tax_id, original.id)
    if answer.kind != "present":
        raise CloudUnavailable(original.bill_no, f"{answer.kind}: {answer.reason}")
    return _blue_invoices(answer.items, fallback_type)


def runtime_query(runtime_of: Callable[[], Any]) -> InvoiceQuery:
    """An ``InvoiceQuery`` over the worker's Kingdee client and token cache (BILL.INVOICE.QUERY,
    recorded in the call ledger like the worker's own queries)."""

    def query(
        tenant: TenantConfig, bill_no: str, seller_tax_id: str, document_id: int | None
    ) -> QueryAnswer:
        from worker.services.query import query_bill

        return query_bill(
            runtime_of(),
            tenant,
            bill_no=bill_no,
            seller_tax_id=seller_tax_id,
            document_id=document_id,
            attempt=None,
        )

    return query


# --------------------------------------------------------------------------- ERP red bills


def _find_original(session: Session, tenant: str, code: str | None, number: str) -> Document | None:
    """The current document of ``tenant`` whose issued invoice has this code and number."""
    statement = (
        select(Document)
        .join(InvoiceDocument, InvoiceDocument.document_id == Document.id)
        .join(Invoice, Invoice.id == InvoiceDocument.invoice_id)
        .where(Invoice.invoice_num == number, Document.tenant == tenant)
    )
    if code:
        statement = statement.where(Invoice.invoice_code == code)
    found = session.scalars(statement).first()
    if found is None:
        legacy = (
            select(Document)
            .join(Invoice, Invoice.document_id == Document.id)
            .where(Invoice.invoice_num == number, Document.tenant == tenant)
        )
        if code:
            legacy = legacy.where(Invoice.invoice_code == code)
        found = session.scalars(legacy).first()
    return found


@dataclass
class RedLetterGate:
    """Admits an ERP's own red bills (module table): the original found, the rules checked,
    the link carried on the prepared bill; a refused one becomes an ``invalid`` result."""

    sessions: sessionmaker[Session]
    tenants: TenantsFile
    query: InvoiceQuery

    def admit(self, prepared: Sequence[_Prepared | SubmitResult]) -> list[_Prepared | SubmitResult]:
        from producers.intake import SubmitOutcome, SubmitResult, _Prepared

        out: list[_Prepared | SubmitResult] = list(prepared)
        reds = [
            index
            for index, item in enumerate(out)
            if isinstance(item, _Prepared) and item.bill.is_red
        ]
        if not reds:
            return out
        # Read what the checks need, close the session, then ask the cloud: no database
        # transaction stays open across a cloud call.
        looked: dict[int, _Looked | None] = {}
        with self.sessions() as session:
            for index in reds:
                item = out[index]
                assert isinstance(item, _Prepared)
                looked[index] = _look_up(session, item)
        cache: dict[int, list[_Blue] | CloudUnavailable] = {}
        for index in reds:
            item = out[index]
            assert isinstance(item, _Prepared)
            found = looked[index]
            issues = self._unlinked(item) if found is None else self._check(item, found, cache)
            if issues is None:
                continue  # accepted unlinked (the tenant's unlinked_red_bills = "accept")
            if isinstance(issues, int):
                out[index] = replace(item, original_document_id=issues)
            else:
                out[index] = SubmitResult(
                    item.bill.billNo,
                    SubmitOutcome.invalid,
                    issues=tuple(issues),
                    tenant=item.tenant,
                    seller_tax_id=item.seller_tax_id,
                )
        return out

    def _unlinked(self, item: _Prepared) -> list[Issue] | None:
        """A red bill whose blue invoice no document holds: the issues, or None to take it
        unlinked (its header still checked) where the tenant accepts such bills."""
        bill = item.bill
        tenant = self.tenants.by_name(item.tenant)
        if tenant is not None and tenant.unlinked_red_bills == "accept":
            issues = check_header(bill.redReason, bill.redInfoBillNo, bill.invoiceType.value)
            return issues or None
        code = f"{bill.originalInvoiceCode} " if bill.originalInvoiceCode else ""
        number = bill.originalInvoiceNumber or ""
        return [
            _issue(
                "originalInvoiceNumber",
                "original_unknown",
                f"no document of tenant {item.tenant} holds the blue invoice {code}{number}, "
                "so the red bill cannot be linked to its original",
                f"本租户没有开具过蓝字发票 {number} 的单据，红字单据无法关联原单据",
                "Check originalInvoiceCode/originalInvoiceNumber against the issued invoice, or "
                "reverse through the bridge (`fapiao reverse ORIGINAL_BILL_NO`); for invoices "
                'issued before the bridge, the tenant may set unlinked_red_bills = "accept".',
                "请核对原蓝票代码/号码，或使用 fapiao reverse 原单据编号 进行红冲；"
                '对接入前开具的发票，可在租户配置中设置 unlinked_red_bills = "accept"。',
            )
        ]

    def _check(
        self, item: _Prepared, looked: _Looked, cache: dict[int, list[_Blue] | CloudUnavailable]
    ) -> int | list[Issue]:
        """The original's document id, or the issues."""
        bill = item.bill
        number = bill.originalInvoiceNumber or ""
        original = looked.original
        if looked.unchanged:
            return original.id  # an identical resubmission: acceptance answers unchanged
        issues = check_header(bill.redReason, bill.redInfoBillNo, bill.invoiceType.value)
        if original.id not in cache:
            tenant = self.tenants.by_name(item.tenant)
            try:
                if tenant is None:
                    raise CloudUnavailable(original.bill_no, f"unknown tenant {item.tenant}")
                cache[original.id] = ask_cloud(
                    self.query, tenant, original, original.invoice_type or ""
                )
            except CloudUnavailable as exc:
                cache[original.id] = exc
        blues = cache[original.id]
        if isinstance(blues, CloudUnavailable):
            return [
                *issues,
                _issue(
                    "",
                    "cloud_unavailable",
                    str(blues),
                    "无法向发票云查询可红冲金额，单据未接收",
                    "Send the red bill again in a minute.",
                    "请稍后重新提交该红字单据。",
                ),
            ]
        blue = next((b for b in blues if b.number == number), None)
        if blue is None:
            return [
                *issues,
                _issue(
                    "originalInvoiceNumber",
                    "original_not_invoiced",
                    f"the cloud lists no issued, unvoided blue invoice {number} on "
                    f"{original.bill_no}",
                    f"发票云中 {original.bill_no} 没有可红冲的蓝字发票 {number}",
                    "Check the invoice number; a voided (作废) invoice cannot be reversed.",
                    "请核对发票号码；已作废的发票不能红冲。",
                ),
            ]
        pending = pending_by_invoice(
            looked.reds, skip=(item.tenant, item.seller_tax_id, bill.billNo)
        ).get(number, Pending())
        issues.extend(check_limits(bill, blue, pending, original.bill_no))
        return issues if issues else original.id


@dataclass(frozen=True, slots=True)
class _Looked:
    original: Document  # detached
    unchanged: bool  # the same bill with the same content is stored already
    reds: list[Document]  # detached


def _look_up(session: Session, item: _Prepared) -> _Looked | None:
    bill = item.bill
    number = bill.originalInvoiceNumber or ""
    original = _find_original(session, item.tenant, bill.originalInvoiceCode, number)
    if original is None:
        return None
    same = session.scalars(
        select(Document).where(
            Document.tenant == item.tenant,
            Document.seller_tax_id == item.seller_tax_id,
            Document.bill_no == bill.billNo,
            Document.is_current.is_(True),
        )
    ).first()
    unchanged = same is not None and same.content_hash == bill.content_hash()
    reds = red_documents_of(session, [original.id])
    session.expunge_all()
    return _Looked(original, unchanged, reds)
