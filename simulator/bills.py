"""The simulated cloud's 开票申请单 (bills), their invoices, and double-issue detection.

A bill is keyed by ``(tenant, sellerTaxpayerId, billNo)``; every accepted push of a key is a
new *generation* (a re-push after a withdrawal or a 回退 is allowed). Bill states:

| state | live | meaning (cloud UI) | leaves by |
|---|---|---|---|
| ``accepted`` | yes | 已提交, waits for an operator (autoInvoice=0) | issue, withdraw, 回退 |
| ``issuing`` | yes | 开票中, auto issuance scheduled | issuance, 回退 |
| ``invoiced`` | yes | 已开票, every invoice issued | terminal |
| ``partially_invoiced`` | yes | some invoices issued, some failed | operator issue |
| ``failed`` | yes | 开票失败, nothing issued (``issueErrorMessage``) | issue, withdraw, 回退 |
| ``withdrawn`` | no | BILL.WITHDRAW; the billNo may be pushed again | — |
| ``returned`` | no | 回退 upstream (5.1.01); the billNo may be pushed again | — |

Issuance ends in ``invoiced``, ``partially_invoiced`` or ``failed``; withdraw → ``withdrawn``;
回退 → ``returned``.

Withdrawal is allowed only while nothing is issued or being issued (``accepted``, ``failed``).

Double-issue detection (``BillBook.violations``, both lists must stay empty):

| list | a row appears when |
|---|---|
| ``live_twice`` | a key became live while another generation of it was still live |
| ``over_issued`` | the issued invoices of a key (all generations) exceed its largest 价税合计 |

A red invoice is a reversal, not an issue: blue and red generations of a key are summed
apart (each against its own largest 价税合计), so a red invoice can neither hide a second blue
issue nor count as one, and the blue invoice it reverses stays counted as issued (its
``red_amount`` is bookkeeping for ``canRedAmount``). A voided (作废) invoice no longer counts.

After issuance (docs/CLOUD-CONTRACT.md §15): an issued invoice carries ``state_code``, its
wire ``invoiceStatus`` (``0`` 正常, ``3`` 红冲, ``6`` 作废; ``2`` for a partial 红冲 under the
dialect ``partial_red=status_2``), and ``red_amount``/``red_tax_amount``, what red invoices
reversed so far (``canRedAmount`` = ``totalAmount`` − ``red_amount``). A red invoice names the
``orderNo`` of the blue one in ``original``. A bill's ``source`` says who made it: ``push``
(BILL.PUSH), ``planted`` (``POST /_sim/bills``: a bill the bridge never pushed) or
``cloud_red`` (the 红冲单 a clerk's ``/red`` makes).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from schemas.cloud_contract import INVOICE_STATUS_NORMAL, INVOICE_STATUS_VOID

__all__ = [
    "LIVE_STATES",
    "WITHDRAWABLE_STATES",
    "BillBook",
    "BillKey",
    "BillState",
    "InvoiceLine",
    "InvoiceStatus",
    "SimBill",
    "SimInvoice",
    "SimLine",
    "now_ms",
]


class BillState(StrEnum):
    ACCEPTED = "accepted"
    ISSUING = "issuing"
    INVOICED = "invoiced"
    PARTIALLY_INVOICED = "partially_invoiced"
    FAILED = "failed"
    WITHDRAWN = "withdrawn"
    RETURNED = "returned"


LIVE_STATES: frozenset[BillState] = frozenset(
    {
        BillState.ACCEPTED,
        BillState.ISSUING,
        BillState.INVOICED,
        BillState.PARTIALLY_INVOICED,
        BillState.FAILED,
    }
)
WITHDRAWABLE_STATES: frozenset[BillState] = frozenset({BillState.ACCEPTED, BillState.FAILED})


class InvoiceStatus(StrEnum):
    ISSUED = "issued"
    FAILED = "failed"


BillKey = tuple[str, str, str]  # (tenant, sellerTaxpayerId, billNo)


@dataclass(slots=True)
class SimLine:
    """One pushed ``billDetail`` line, amounts on the bill's ``includeTaxFlag`` basis."""

    detail_id: str
    goods_name: str
    revenue_code: str
    tax_rate: Decimal
    amount: Decimal
    tax_amount: Decimal | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    units: str = ""
    specification: str = ""
    is_discount: bool = False
    zero_tax_rate_flag: str = ""
    privilege_flag: str = ""
    privilege_content: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "detail_id": self.detail_id,
            "goods_name": self.goods_name,
            "revenue_code": self.revenue_code,
            "tax_rate": str(self.tax_rate),
            "amount": str(self.amount),
            "tax_amount": _opt_str(self.tax_amount),
            "quantity": _opt_str(self.quantity),
            "price": _opt_str(self.price),
            "units": self.units,
            "specification": self.specification,
            "is_discount": self.is_discount,
            "zero_tax_rate_flag": self.zero_tax_rate_flag,
            "privilege_flag": self.privilege_flag,
            "privilege_content": self.privilege_content,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimLine:
        return cls(
            detail_id=data["detail_id"],
            goods_name=data["goods_name"],
            revenue_code=data["revenue_code"],
            tax_rate=Decimal(data["tax_rate"]),
            amount=Decimal(data["amount"]),
            tax_amount=_opt_dec(data.get("tax_amount")),
            quantity=_opt_dec(data.get("quantity")),
            price=_opt_dec(data.get("price")),
            units=data.get("units", ""),
            specification=data.get("specification", ""),
            is_discount=bool(data.get("is_discount", False)),
            zero_tax_rate_flag=data.get("zero_tax_rate_flag", ""),
            privilege_flag=data.get("privilege_flag", ""),
            privilege_content=data.get("privilege_content", ""),
        )


@dataclass(slots=True)
class InvoiceLine:
    """One line of an issued invoice: amounts always excluding tax, plus tax."""

    seq: int
    detail_id: str
    goods_name: str
    revenue_code: str
    tax_rate: Decimal
    amount: Decimal
    tax_amount: Decimal
    quantity: Decimal | None
    price: Decimal | None
    units: str
    specification: str
    line_property: int  # output code set: 0 normal, 1 discount, 2 discounted
    zero_tax_rate_flag: str = ""
    privilege_flag: str = ""
    privilege_content: str = ""

    @property
    def include_tax_amount(self) -> Decimal:
        return self.amount + self.tax_amount

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "detail_id": self.detail_id,
            "goods_name": self.goods_name,
            "revenue_code": self.revenue_code,
            "tax_rate": str(self.tax_rate),
            "amount": str(self.amount),
            "tax_amount": str(self.tax_amount),
            "quantity": _opt_str(self.quantity),
            "price": _opt_str(self.price),
            "units": self.units,
            "specification": self.specification,
            "line_property": self.line_property,
            "zero_tax_rate_flag": self.zero_tax_rate_flag,
            "privilege_flag": self.privilege_flag,
            "privilege_content": self.privilege_content,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InvoiceLine:
        return cls(
            seq=int(data["seq"]),
            detail_id=data["detail_id"],
            goods_name=data["goods_name"],
            revenue_code=data["revenue_code"],
            tax_rate=Decimal(data["tax_rate"]),
            amount=Decimal(data["amount"]),
            tax_amount=Decimal(data["tax_amount"]),
            quantity=_opt_dec(data.get("quantity")),
            price=_opt_dec(data.get("price")),
            units=data.get("units", ""),
            specification=data.get("specification", ""),
            line_property=int(data["line_property"]),
            zero_tax_rate_flag=data.get("zero_tax_rate_flag", ""),
            privilege_flag=data.get("privilege_flag", ""),
            privilege_content=data.get("privilege_content", ""),
        )


@dataclass(slots=True)
class SimInvoice:
    """One invoice a bill was split into; ``status`` None until the first issuance attempt."""

    index: int
    order_no: str
    serial_no: str
    lines: list[InvoiceLine]
    status: InvoiceStatus | None = None
    invoice_code: str = ""
    invoice_num: str = ""
    invoice_date: str = ""
    issue_error_message: str = ""
    check_code: str = ""
    # A merged invoice (dialect merge=when_asked): bill id → that bill's 价税合计 on it.
    shares: dict[str, str] = field(default_factory=dict)
    state_code: str = INVOICE_STATUS_NORMAL  # wire invoiceStatus once issued (docstring)
    red_amount: Decimal = Decimal("0.00")
    red_tax_amount: Decimal = Decimal("0.00")
    original: str = ""  # red invoice: orderNo of the blue invoice it reverses
    abolish_reason: str = ""

    @property
    def voided(self) -> bool:
        return self.state_code == INVOICE_STATUS_VOID

    @property
    def can_red_amount(self) -> Decimal:
        """``canRedAmount``: what red invoices may still reverse (0 for red/voided/unissued)."""
        if self.status is not InvoiceStatus.ISSUED or self.voided or self.original:
            return Decimal("0.00")
        return self.total_amount - self.red_amount

    @property
    def can_red_tax_amount(self) -> Decimal:
        if self.status is not InvoiceStatus.ISSUED or self.voided or self.original:
            return Decimal("0.00")
        return self.total_tax_amount - self.red_tax_amount

    @property
    def total_amount(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0.00"))

    @property
    def total_tax_amount(self) -> Decimal:
        return sum((line.tax_amount for line in self.lines), Decimal("0.00"))

    @property
    def include_tax_amount(self) -> Decimal:
        return self.total_amount + self.total_tax_amount

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "order_no": self.order_no,
            "serial_no": self.serial_no,
            "lines": [line.to_json() for line in self.lines],
            "status": self.status.value if self.status else None,
            "invoice_code": self.invoice_code,
            "invoice_num": self.invoice_num,
            "invoice_date": self.invoice_date,
            "issue_error_message": self.issue_error_message,
            "check_code": self.check_code,
            "shares": dict(self.shares),
            "state_code": self.state_code,
            "red_amount": str(self.red_amount),
            "red_tax_amount": str(self.red_tax_amount),
            "original": self.original,
            "abolish_reason": self.abolish_reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimInvoice:
        status = data.get("status")
        return cls(
            index=int(data["index"]),
            order_no=data["order_no"],
            serial_no=data["serial_no"],
            lines=[InvoiceLine.from_json(line) for line in data["lines"]],
            status=InvoiceStatus(status) if status else None,
            invoice_code=data.get("invoice_code", ""),
            invoice_num=data.get("invoice_num", ""),
            invoice_date=data.get("invoice_date", ""),
            issue_error_message=data.get("issue_error_message", ""),
            check_code=data.get("check_code", ""),
            shares=dict(data.get("shares", {})),
            state_code=data.get("state_code", INVOICE_STATUS_NORMAL),
            red_amount=Decimal(data.get("red_amount", "0.00")),
            red_tax_amount=Decimal(data.get("red_tax_amount", "0.00")),
            original=data.get("original", ""),
            abolish_reason=data.get("abolish_reason", ""),
        )


@dataclass(slots=True)
class SimBill:
    """One generation of a pushed bill."""

    id: int
    tenant: str
    seller_tax_id: str
    bill_no: str
    generation: int
    business_system_code: str
    invoice_type: str
    include_tax_flag: bool
    auto_invoice: bool
    header: dict[str, Any]  # buyer/seller/remark fields echoed into invoices
    lines: list[SimLine]
    amount_with_tax: Decimal  # 价税合计 of the bill
    state: BillState = BillState.ACCEPTED
    invoices: list[SimInvoice] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    pushed_at: int = 0  # epoch ms
    source: str = "push"  # push, planted, cloud_red (module docstring)

    @property
    def key(self) -> BillKey:
        return (self.tenant, self.seller_tax_id, self.bill_no)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def red(self) -> bool:
        return self.amount_with_tax < 0

    @property
    def issued_amount(self) -> Decimal:
        """价税合计 issued for this bill (voided invoices excluded); of a merged invoice only
        this bill's share."""
        return sum(
            (
                Decimal(inv.shares[str(self.id)])
                if str(self.id) in inv.shares
                else inv.include_tax_amount
                for inv in self.invoices
                if inv.status is InvoiceStatus.ISSUED and not inv.voided
            ),
            Decimal("0.00"),
        )

    def record(self, event: str, **detail: Any) -> None:
        self.events.append({"at": now_ms(), "event": event, **detail})

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "seller_tax_id": self.seller_tax_id,
            "bill_no": self.bill_no,
            "generation": self.generation,
            "business_system_code": self.business_system_code,
            "invoice_type": self.invoice_type,
            "include_tax_flag": self.include_tax_flag,
            "auto_invoice": self.auto_invoice,
            "header": self.header,
            "lines": [line.to_json() for line in self.lines],
            "amount_with_tax": str(self.amount_with_tax),
            "state": self.state.value,
            "invoices": [inv.to_json() for inv in self.invoices],
            "events": self.events,
            "pushed_at": self.pushed_at,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimBill:
        return cls(
            id=int(data["id"]),
            tenant=data["tenant"],
            seller_tax_id=data["seller_tax_id"],
            bill_no=data["bill_no"],
            generation=int(data["generation"]),
            business_system_code=data["business_system_code"],
            invoice_type=data["invoice_type"],
            include_tax_flag=bool(data["include_tax_flag"]),
            auto_invoice=bool(data["auto_invoice"]),
            header=dict(data["header"]),
            lines=[SimLine.from_json(line) for line in data["lines"]],
            amount_with_tax=Decimal(data["amount_with_tax"]),
            state=BillState(data["state"]),
            invoices=[SimInvoice.from_json(inv) for inv in data["invoices"]],
            events=list(data["events"]),
            pushed_at=int(data["pushed_at"]),
            source=data.get("source", "push"),
        )


class BillBook:
    """All bill generations, indexed by key, with the double-issue detector."""

    def __init__(self) -> None:
        self._bills: dict[int, SimBill] = {}
        self._by_key: dict[BillKey, list[int]] = {}
        self._by_order_no: dict[str, tuple[int, int]] = {}
        self._next_id = 1
        self.live_twice: list[dict[str, Any]] = []
        self.over_issued: list[dict[str, Any]] = []
        self._flagged: set[tuple[BillKey, Decimal]] = set()

    def __len__(self) -> int:
        return len(self._bills)

    def __iter__(self) -> Iterator[SimBill]:
        return iter(self._bills.values())

    def next_id(self) -> int:
        value = self._next_id
        self._next_id += 1
        return value

    def generations(self, key: BillKey) -> list[SimBill]:
        """Every generation of ``key``, oldest first."""
        return [self._bills[i] for i in self._by_key.get(key, ())]

    def live(self, key: BillKey) -> list[SimBill]:
        return [bill for bill in self.generations(key) if bill.live]

    def get(self, bill_id: int) -> SimBill | None:
        return self._bills.get(bill_id)

    def find(
        self, bill_no: str, tenant: str | None = None, seller_tax_id: str | None = None
    ) -> list[SimBill]:
        """Latest generation of each key with ``bill_no`` matching the optional filters."""
        found: list[SimBill] = []
        for key, ids in self._by_key.items():
            if key[2] != bill_no:
                continue
            if tenant is not None and key[0] != tenant:
                continue
            if seller_tax_id is not None and key[1] != seller_tax_id:
                continue
            found.append(self._bills[ids[-1]])
        return found

    def by_order_no(self, order_no: str) -> tuple[SimBill, SimInvoice] | None:
        where = self._by_order_no.get(order_no)
        if where is None:
            return None
        bill = self._bills[where[0]]
        return bill, bill.invoices[where[1]]

    def add(self, bill: SimBill) -> None:
        """Store a new live generation; detects a key live twice."""
        already_live = self.live(bill.key)
        if already_live:
            self.live_twice.append(
                {
                    "tenant": bill.tenant,
                    "sellerTaxpayerId": bill.seller_tax_id,
                    "billNo": bill.bill_no,
                    "generations": [b.generation for b in already_live] + [bill.generation],
                    "at": now_ms(),
                }
            )
        self._insert(bill)

    def load(self, bill: SimBill) -> None:
        """Insert a bill read back from the state file (no detection: it was done then)."""
        self._insert(bill)
        self._next_id = max(self._next_id, bill.id + 1)

    def _insert(self, bill: SimBill) -> None:
        self._bills[bill.id] = bill
        self._by_key.setdefault(bill.key, []).append(bill.id)
        self.index_invoices(bill)

    def index_invoices(self, bill: SimBill) -> None:
        for position, invoice in enumerate(bill.invoices):
            self._by_order_no[invoice.order_no] = (bill.id, position)

    def find_issued(self, tenant: str, code: str, number: str) -> tuple[SimBill, SimInvoice] | None:
        """The issued invoice ``code``/``number`` of ``tenant`` (数电: no code; any code matches
        when ``code`` is empty), newest bill first."""
        for bill in reversed(list(self._bills.values())):
            if bill.tenant != tenant:
                continue
            for invoice in bill.invoices:
                if (
                    invoice.status is InvoiceStatus.ISSUED
                    and invoice.invoice_num == number
                    and (not code or invoice.invoice_code == code)
                ):
                    return bill, invoice
        return None

    def check_issued_amount(self, bill: SimBill) -> None:
        """After an issuance: flag a key whose issued total exceeds what it was ever billed.

        Blue and red generations are summed apart (module docstring): a red invoice is a
        reversal, never a second issue, and never offsets one.
        """
        generations = [b for b in self.generations(bill.key) if b.red == bill.red]
        issued = sum((b.issued_amount for b in generations), Decimal("0.00"))
        ceiling = max(abs(b.amount_with_tax) for b in generations)
        if abs(issued) > ceiling and (bill.key, issued) not in self._flagged:
            self._flagged.add((bill.key, issued))
            self.over_issued.append(
                {
                    "tenant": bill.tenant,
                    "sellerTaxpayerId": bill.seller_tax_id,
                    "billNo": bill.bill_no,
                    "billAmount": str(ceiling),
                    "issuedAmount": str(issued),
                    "at": now_ms(),
                }
            )

    def violations(self) -> dict[str, list[dict[str, Any]]]:
        return {"live_twice": list(self.live_twice), "over_issued": list(self.over_issued)}

    def clear(self) -> None:
        self._bills.clear()
        self._by_key.clear()
        self._by_order_no.clear()
        self._next_id = 1
        self.live_twice.clear()
        self.over_issued.clear()
        self._flagged.clear()


def now_ms() -> int:
    """Wall-clock epoch milliseconds: the simulator's timestamps (JSON-safe, no floats)."""
    return int(time.time() * 1000)


def _opt_str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _opt_dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
