"""How the simulated cloud turns an accepted bill into invoices: split, number, describe.

Splitting (拆分, docs/CLOUD-CONTRACT.md §6.4/§12 [G]): a bill becomes several invoices when it
has more lines than one invoice may hold (``max_lines_per_invoice``: 8 税控, 2000 数电) or when its
amount excluding tax exceeds the per-invoice limit (限额, configurable, off by default). A
goods line and the discount lines that follow it stay together. A line (with its discounts)
larger than the limit is cut into equal parts, cent-exact: the cents of every amount and tax
are spread so that the parts add up to the original to the cent, and totals are preserved.

Numbers (§9.1, §10.1):

| invoiceType | invoiceCode | invoiceNum | files |
|---|---|---|---|
| ``08xdp``, ``10xdp`` (数电) | empty | 20 digits | OFD, PDF and XML (a) |
| ``028`` (电子专票) | 12 digits | 8 digits | ``invoiceFileUrl`` (OFD) |
| ``026`` (电子普票) | 12 digits | 8 digits | ``invoiceFileUrl`` (PDF) |
| ``004``, ``007``, ``025`` (paper) | 12 digits | 8 digits | none |

(a) ``invoiceFileUrl`` (OFD), ``invoicePdfFileUrl``, ``invoiceXmlFileUrl``.

``orderNo`` (发票流水号) and ``serialNo`` are 19-digit numbers unique for the process (seeded
from the clock, so a restarted simulator does not reuse them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

from schemas.cloud_contract import (
    DIGITAL_INVOICE_TYPES,
    GOODS_SHORT_NAME_DEFAULT,
    GOODS_SHORT_NAMES,
    max_lines_per_invoice,
)
from schemas.tax import format_tax_rate, line_amounts
from simulator.bills import InvoiceLine, SimBill, SimInvoice, SimLine
from simulator.documents import file_url

__all__ = [
    "InvoiceNumbers",
    "bill_item_fields",
    "file_kinds_for",
    "invoice_item",
    "plan_invoices",
]

_CENT = Decimal("0.01")
_QUANTITY_STEP = Decimal("0.00000001")


@dataclass(slots=True)
class _Part:
    """A goods line with its discount lines (or a cent-exact slice of them)."""

    lines: list[InvoiceLine]

    @property
    def net(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0.00"))


def plan_invoices(
    bill: SimBill, amount_limit: Decimal | None, max_lines: int | None = None
) -> list[list[InvoiceLine]]:
    """The lines of each invoice ``bill`` is split into (at least one invoice).

    ``amount_limit`` caps each invoice's amount excluding tax (absolute value, so red bills
    split the same way); ``max_lines`` defaults to the contract's limit for the invoice type.
    """
    limit_lines = max_lines or max_lines_per_invoice(bill.invoice_type)
    parts: list[_Part] = []
    for group in _groups(bill.lines, bill.include_tax_flag):
        parts.extend(_cut(group, amount_limit))
    invoices: list[list[InvoiceLine]] = []
    current: list[InvoiceLine] = []
    current_net = Decimal("0.00")
    for part in parts:
        fits_lines = len(current) + len(part.lines) <= limit_lines
        fits_amount = amount_limit is None or abs(current_net + part.net) <= amount_limit
        if current and not (fits_lines and fits_amount):
            invoices.append(current)
            current, current_net = [], Decimal("0.00")
        current.extend(part.lines)
        current_net += part.net
    if current:
        invoices.append(current)
    for lines in invoices:
        for seq, line in enumerate(lines, start=1):
            line.seq = seq
    return invoices


def _groups(lines: list[SimLine], include_tax: bool) -> list[_Part]:
    groups: list[_Part] = []
    for line in lines:
        amounts = line_amounts(line.amount, line.tax_rate, include_tax, line.tax_amount)
        price = line.price
        if price is not None and include_tax and amounts.incl:
            # Invoices carry prices excluding tax.
            with localcontext() as ctx:
                ctx.prec = 40
                price = (price * amounts.excl / amounts.incl).quantize(Decimal("1E-10"))
        out = InvoiceLine(
            seq=0,
            detail_id=line.detail_id,
            goods_name=line.goods_name,
            revenue_code=line.revenue_code,
            tax_rate=line.tax_rate,
            amount=amounts.excl,
            tax_amount=amounts.tax,
            quantity=line.quantity,
            price=price,
            units=line.units,
            specification=line.specification,
            line_property=1 if line.is_discount else 0,
            zero_tax_rate_flag=line.zero_tax_rate_flag,
            privilege_flag=line.privilege_flag,
            privilege_content=line.privilege_content,
        )
        if line.is_discount and groups:
            groups[-1].lines.append(out)
            groups[-1].lines[0].line_property = 2  # 被折扣行
        else:
            groups.append(_Part([out]))
    return groups


def _cut(group: _Part, amount_limit: Decimal | None) -> list[_Part]:
    if amount_limit is None or abs(group.net) <= amount_limit:
        return [group]
    with localcontext() as ctx:
        ctx.prec = 40
        pieces = int((abs(group.net) / amount_limit).to_integral_value(rounding="ROUND_CEILING"))
    while True:
        parts = _slices(group, pieces)
        if all(abs(part.net) <= amount_limit for part in parts):
            return parts
        pieces += 1


def _slices(group: _Part, pieces: int) -> list[_Part]:
    """``group`` in ``pieces`` slices whose amounts, taxes and quantities add up exactly."""
    sliced: list[list[InvoiceLine]] = [[] for _ in range(pieces)]
    for line in group.lines:
        amounts = _spread(line.amount, pieces)
        taxes = _spread(line.tax_amount, pieces)
        quantities = _spread_quantity(line.quantity, line.amount, amounts)
        for index in range(pieces):
            sliced[index].append(
                InvoiceLine(
                    seq=0,
                    detail_id=line.detail_id,
                    goods_name=line.goods_name,
                    revenue_code=line.revenue_code,
                    tax_rate=line.tax_rate,
                    amount=amounts[index],
                    tax_amount=taxes[index],
                    quantity=quantities[index],
                    price=line.price,
                    units=line.units,
                    specification=line.specification,
                    line_property=line.line_property,
                    zero_tax_rate_flag=line.zero_tax_rate_flag,
                    privilege_flag=line.privilege_flag,
                    privilege_content=line.privilege_content,
                )
            )
    return [_Part(lines) for lines in sliced]


def _spread(amount: Decimal, pieces: int) -> list[Decimal]:
    """Split a cent amount into ``pieces`` parts differing by at most one cent, exact sum."""
    cents = int((abs(amount) / _CENT).to_integral_value())
    base, extra = divmod(cents, pieces)
    sign = -1 if amount < 0 else 1
    return [sign * (base + (1 if i < extra else 0)) * _CENT for i in range(pieces)]


def _spread_quantity(
    quantity: Decimal | None, amount: Decimal, amounts: list[Decimal]
) -> list[Decimal | None]:
    if quantity is None or not amount:
        return [quantity if i == 0 else None for i in range(len(amounts))]
    parts: list[Decimal | None] = []
    remaining = quantity
    with localcontext() as ctx:
        ctx.prec = 40
        for index, part in enumerate(amounts):
            if index == len(amounts) - 1:
                parts.append(remaining)
            else:
                share = (quantity * part / amount).quantize(_QUANTITY_STEP)
                parts.append(share)
                remaining -= share
    return parts


def file_kinds_for(invoice_type: str) -> dict[str, str]:
    """Which file URL fields an invoice of ``invoice_type`` carries → file kind."""
    if invoice_type in DIGITAL_INVOICE_TYPES:
        return {"invoiceFileUrl": "ofd", "invoicePdfFileUrl": "pdf", "invoiceXmlFileUrl": "xml"}
    if invoice_type == "028":
        return {"invoiceFileUrl": "ofd"}
    if invoice_type == "026":
        return {"invoiceFileUrl": "pdf"}
    return {}


class InvoiceNumbers:
    """Unique numbers for one simulator process; clock-seeded so restarts do not collide."""

    def __init__(self, clock_s: float | None = None) -> None:
        now = time.time() if clock_s is None else clock_s
        stamp = time.localtime(now)
        self._year = f"{stamp.tm_year % 100:02d}"
        # Seconds since 2020 leave room for a million numbers per second of start time.
        seconds = int(now) - 1_577_836_800
        self._digital = seconds % 10**9 * 10**6
        self._sequence = seconds % 10**9 * 10**6
        self._tax_control_batch = seconds % 1000
        self._tax_control = 0

    def order_no(self) -> str:
        self._sequence += 1
        return f"{1_000_000_000_000_000_000 + self._sequence:019d}"[:19]

    def invoice_number(self, invoice_type: str) -> tuple[str, str]:
        """``(invoiceCode, invoiceNum)`` for the next invoice of ``invoice_type``."""
        if invoice_type in DIGITAL_INVOICE_TYPES:
            self._digital += 1
            # yy + region 44 + channel 2 + 14-digit sequence = 20 digits.
            return "", f"{self._year}442{self._digital % 10**15:015d}"
        self._tax_control += 1
        batch = self._tax_control_batch + self._tax_control // 10**8
        kind = "1" if invoice_type in {"004", "028"} else "0"
        code = f"04403{self._year}{batch % 1000:03d}{kind}1"[:12].ljust(12, "0")
        return code, f"{self._tax_control % 10**8:08d}"

    def state(self) -> dict[str, int]:
        return {
            "digital": self._digital,
            "sequence": self._sequence,
            "tax_control": self._tax_control,
            "tax_control_batch": self._tax_control_batch,
        }

    def restore(self, state: dict[str, int]) -> None:
        self._digital = max(self._digital, int(state.get("digital", 0)))
        self._sequence = max(self._sequence, int(state.get("sequence", 0)))
        if "tax_control_batch" in state:
            self._tax_control_batch = int(state["tax_control_batch"])
            self._tax_control = int(state.get("tax_control", 0))


def _simplified_name(line: InvoiceLine) -> str:
    """The ``*简称*`` the cloud prefixes to goods names, from the revenue code's first digits."""
    for prefix, short in GOODS_SHORT_NAMES:
        if line.revenue_code.startswith(prefix):
            return f"*{short}*{line.goods_name}"
    return f"*{GOODS_SHORT_NAME_DEFAULT}*{line.goods_name}"


def _number(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def bill_item_fields(bill: SimBill) -> dict[str, Any]:
    """Fields every invoice item of ``bill`` shares (buyer, seller, flags)."""
    header = bill.header
    return {
        "billNo": bill.bill_no,
        "batch": "",
        "invoiceProperty": 1 if bill.amount_with_tax < 0 else 0,
        "invoiceType": bill.invoice_type,
        "buyerProperty": int(header.get("buyerProperty") or 0),
        "buyerName": header.get("buyerName", ""),
        "buyerTaxpayerId": header.get("buyerTaxpayerId", ""),
        "buyerAddressAndTel": header.get("buyerAddressAndTel", ""),
        "buyerBankAndAccount": header.get("buyerBankAndAccount", ""),
        "buyerRecipientMail": header.get("buyerRecipientMail", ""),
        "buyerRecipientPhone": header.get("buyerRecipientPhone", ""),
        "sellerName": header.get("sellerName", ""),
        "sellerTaxpayerId": bill.seller_tax_id,
        "sellerAddressAndTel": header.get("sellerAddressAndTel", ""),
        "sellerBankAndAccount": header.get("sellerBankAndAccount", ""),
        "drawer": header.get("drawer", ""),
        "payee": header.get("payee", ""),
        "reviewer": header.get("reviewer", ""),
        "remark": header.get("remark", ""),
        "includeTaxFlag": 0,
        "taxedType": int(header.get("taxationStyle") or 0),
        "systemSource": bill.business_system_code,
    }


def invoice_item(bill: SimBill, invoice: SimInvoice, origin: str) -> dict[str, Any]:
    """The §9.1 item (callback ``data`` element / query ``invoiceList`` element).

    File URLs are built from ``origin`` (the tenant's base URL) when the item is written, so
    a simulator restarted on another port hands out working URLs for old invoices.

    A failed invoice has empty ``invoiceCode``/``invoiceNum``/``invoiceStatus`` and the reason
    in ``issueErrorMessage``; money is Decimal (write it with ``dumps_exact``).
    """
    issued = invoice.status is not None and invoice.status.value == "issued"
    item = bill_item_fields(bill)
    item.update(
        {
            "orderNo": invoice.order_no,
            "serialNo": invoice.serial_no,
            "invoiceStatus": invoice.state_code if issued else "",
            "invoiceCode": invoice.invoice_code if issued else "",
            "invoiceNum": invoice.invoice_num if issued else "",
            "invoiceDate": invoice.invoice_date if issued else "",
            "totalAmount": invoice.total_amount,
            "totalTaxAmount": invoice.total_tax_amount,
            "includeTaxAmount": invoice.include_tax_amount,
            "issueErrorMessage": "" if issued else invoice.issue_error_message,
            "inventoryMark": "1" if len(invoice.lines) > 8 else "0",
            "checkCode": invoice.check_code if issued else "",
            "printFlag": 0,
            "deviceNo": "" if bill.invoice_type in DIGITAL_INVOICE_TYPES else "661234567890",
            "terminalNo": "",
            "invoiceFileUrl": "",
            "invoicePdfFileUrl": "",
            "invoiceXmlFileUrl": "",
            "invoiceImageUrl": "",
            "originalInvoiceCode": bill.header.get("originalInvoiceCode", ""),
            "originalInvoiceNumber": bill.header.get("originalInvoiceNumber", ""),
            "redInfoBillNo": bill.header.get("redInfoBillNo", ""),
            "canRedAmount": invoice.can_red_amount,
            "canRedTaxAmount": invoice.can_red_tax_amount,
            "abolishReason": invoice.abolish_reason if issued else "",
            "invoiceDetail": [_detail(line) for line in invoice.lines],
        }
    )
    if issued:
        for name, kind in file_kinds_for(bill.invoice_type).items():
            item[name] = file_url(origin, invoice.order_no, kind)
    return item


def _detail(line: InvoiceLine) -> dict[str, Any]:
    return {
        "seq": line.seq,
        "billSourceId": line.detail_id,
        "detailId": line.detail_id,
        "goodsName": _simplified_name(line),
        "revenueCode": line.revenue_code,
        "revenueName": "",
        "specification": line.specification,
        "units": line.units,
        "quantity": _number(line.quantity),
        "price": _number(line.price),
        "includeTaxPrice": "",
        "amount": line.amount,
        "taxRate": format_tax_rate(line.tax_rate),
        "taxAmount": line.tax_amount,
        "includeTaxAmount": line.include_tax_amount,
        "lineProperty": line.line_property,
        "taxFlag": 0,
        "zeroTaxRateFlag": line.zero_tax_rate_flag,
        "privilegeFlag": line.privilege_flag,
        "privilegeContent": line.privilege_content,
    }
