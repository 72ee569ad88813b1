"""Two readings of one contract: the simulator's own rules vs the bridge's ``validate_bill``.

``simulator.rules`` is written from docs/CLOUD-CONTRACT.md §6.1/§10/§11 without the bridge's code;
hypothesis generates valid and near-valid bills (amounts off by cents, taxes at the ±0.06
edge, lengths at the limits in characters and GBK bytes, missing fields, discount lines, every
invoiceType, includeTaxFlag 0/1, red bills) and both must agree: accept vs refuse, and where
both refuse, the class of the refusal: the errorCode the simulator sends must be the class of
one of the bridge's issues (the bridge lists every issue, the cloud names the first; which one
comes first when a bill has several is not part of the contract). Any other disagreement fails,
unless it is in ``KNOWN_DIFFERENCES`` with its reason (and a deterministic example, checked by
``test_every_known_difference_is_real``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.erp import validate_bill
from schemas.errors import DocumentInvalid, Issue
from simulator.rules import Refusal, check_bill

CENT = Decimal("0.01")
RATES = ("0.13", "0.09", "0.06", "0.03", "0.01", "0.05")
INVOICE_TYPES = ("004", "007", "025", "026", "028", "08xdp", "10xdp")
BUYER_TAX_ID = "91310000MA1FL0BENC"

# Outcome classes: "accept", or the errorCode of the refusal.
REQUIRED, INVALID, TOTAL, LINE_TAX = "-10004", "-10006", "-10007", "-10008"

# The bridge's issue rules → the errorCode class they correspond to (§6.3).
_BRIDGE_REQUIRED = {"required", "buyer_tax_id_required", "deduction_required", "red_reference"}
_BRIDGE_CLASS = {"total_mismatch": TOTAL, "invoice_tax_tolerance": TOTAL}
_BRIDGE_CLASS.update(dict.fromkeys(_BRIDGE_REQUIRED, REQUIRED))
_BRIDGE_CLASS["line_tax_tolerance"] = LINE_TAX


ANY: Final = "*"  # in KNOWN_DIFFERENCES: any simulator outcome


@dataclass(frozen=True, slots=True)
class Known:
    mutation: str
    simulator: str
    bridge: str
    reason: str
    example: Callable[[dict[str, Any]], None]  # turns the base bill into such a case


def _set_line(index: int, **values: Any) -> Callable[[dict[str, Any]], None]:
    def example(bill: dict[str, Any]) -> None:
        bill["billDetail"][index].update(values)
        bill["totalAmount"] = sum((x["amount"] for x in bill["billDetail"]), Decimal("0.00"))

    return example


def _set_header(**values: Any) -> Callable[[dict[str, Any]], None]:
    def example(bill: dict[str, Any]) -> None:
        bill.update(values)

    return example


# Disagreements that are accepted, with the reason. (mutation, simulator, bridge).
KNOWN_DIFFERENCES: Final[tuple[Known, ...]] = (
    Known(
        "lines_empty_string",
        REQUIRED,
        INVALID,
        'billDetail sent as "": the simulator reads an empty value as missing (-10004 like'
        " any empty required field), the bridge as the wrong type (an array is expected).",
        _set_header(billDetail=""),
    ),
    Known(
        "buyer_tax_id_bad",
        "accept",
        INVALID,
        "the bridge checks the buyer's 税号 format (15/18/20 letters and digits) on purpose, so"
        " a typo is caught before the push; §6.1 only gives ≤20 characters.",
        _set_header(buyerTaxpayerId="12345"),
    ),
    Known(
        "detail_id_33",
        "accept",
        INVALID,
        "§6.1 gives detailId ≤32 in the API text and ≤50 in the table: the bridge keeps the"
        " stricter 32, the simulator the table's 50.",
        _set_line(0, detailId="d" * 33),
    ),
    Known(
        "detail_id_duplicate",
        "accept",
        INVALID,
        "the bridge refuses two lines with one detailId (they are its line keys in callbacks);"
        " §6.1 says nothing about uniqueness.",
        _set_line(1, detailId="L0"),
    ),
)


def _known(mutation: str, simulator: str, bridge: str) -> bool:
    return any(
        (k.mutation, k.bridge) == (mutation, bridge) and k.simulator in (simulator, ANY)
        for k in KNOWN_DIFFERENCES
    )


# ---------------------------------------------------------------------- the two verdicts


def _simulator_verdict(bill: Mapping[str, Any]) -> str:
    result = check_bill(bill)
    return result.code.value if isinstance(result, Refusal) else "accept"


def _bridge_class(issue: Issue) -> str:
    return _BRIDGE_CLASS.get(issue.rule, INVALID)


def _bridge_verdicts(bill: Mapping[str, Any]) -> frozenset[str]:
    """``{"accept"}``, or the classes of every issue the bridge finds."""
    try:
        validate_bill(bill)
    except DocumentInvalid as exc:
        return frozenset(_bridge_class(issue) for issue in exc.issues) or frozenset({INVALID})
    except ValidationError as exc:
        missing = any(e["type"] == "missing" for e in exc.errors())
        return frozenset({REQUIRED if missing else INVALID})
    return frozenset({"accept"})


def _agree(simulator: str, bridge: frozenset[str]) -> bool:
    return simulator in bridge


def _bridge_verdict(bill: Mapping[str, Any]) -> str:
    """One class for messages and the table: "accept" or the sorted classes joined."""
    return "+".join(sorted(_bridge_verdicts(bill)))


# ---------------------------------------------------------------------- bills


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _tax(amount: Decimal, rate: Decimal, include_tax: bool) -> Decimal:
    if include_tax:
        return amount - _round(amount / (1 + rate))
    return _round(amount * rate)


@st.composite
def valid_bills(draw: st.DrawFn) -> dict[str, Any]:
    invoice_type = draw(st.sampled_from(INVOICE_TYPES))
    include_tax = draw(st.booleans())
    red = draw(st.integers(0, 5)) == 0
    sign = -1 if red else 1
    lines: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 4))):
        rate_text = draw(st.sampled_from(RATES))
        rate = Decimal(rate_text)
        amount = sign * Decimal(draw(st.integers(100, 5_000_000))) * CENT
        line: dict[str, Any] = {
            "detailId": f"D{index}",
            "lineProperty": 2,
            "goodsName": draw(st.sampled_from(["服务费", "Consulting", "测试商品A"])),
            "revenueCode": "3040201000000000000",
            "taxRate": rate_text,
            "amount": amount,
        }
        if draw(st.booleans()):
            line["taxAmount"] = _tax(amount, rate, include_tax)
        if draw(st.booleans()):
            quantity = Decimal(draw(st.integers(1, 50)))
            line["quantity"] = sign * quantity
            line["price"] = (abs(amount) / quantity).quantize(Decimal("1E-8"))
        lines.append(line)
        if not red and draw(st.integers(0, 3)) == 0:
            # A discount smaller than its line: a 100% discount leaves nothing to invoice.
            off = -Decimal(draw(st.integers(1, int(amount / CENT) - 1))) * CENT
            discount: dict[str, Any] = {
                "detailId": f"D{index}x",
                "lineProperty": 1,
                "goodsName": line["goodsName"],
                "revenueCode": line["revenueCode"],
                "taxRate": rate_text,
                "amount": off,
            }
            if "taxAmount" in line:
                discount["taxAmount"] = _tax(off, rate, include_tax)
            lines.append(discount)
    bill: dict[str, Any] = {
        "billNo": f"B{draw(st.integers(1, 10**9))}",
        "billDate": "2025-11-24",
        "invoiceType": invoice_type,
        "includeTaxFlag": draw(st.sampled_from(["1", 1] if include_tax else ["0", 0])),
        "totalAmount": sum((line["amount"] for line in lines), Decimal("0.00")),
        "buyerName": "上海示例贸易有限公司",
        "buyerTaxpayerId": BUYER_TAX_ID,
        "sellerTaxpayerId": "91310000SIM0000001",
        "sellerName": "上海模拟科技有限公司",
        "billDetail": lines,
    }
    if red:
        bill["invoiceProperty"] = "1"
        if invoice_type in ("08xdp", "10xdp"):
            bill["originalInvoiceNumber"] = "25442000000000000001"
        else:
            bill["originalInvoiceCode"] = "044031900111"
            bill["originalInvoiceNumber"] = "00000001"
    return bill


Mutation = Callable[[dict[str, Any], st.DrawFn], None]


def _line(bill: dict[str, Any], draw: st.DrawFn) -> dict[str, Any]:
    lines: list[dict[str, Any]] = bill["billDetail"]
    return lines[draw(st.integers(0, len(lines) - 1))]


def _goods_line(bill: dict[str, Any]) -> dict[str, Any]:
    line: dict[str, Any] = bill["billDetail"][0]
    return line


def _total_off(bill: dict[str, Any], draw: st.DrawFn) -> None:
    bill["totalAmount"] += draw(st.sampled_from([CENT, -CENT, Decimal("1.00")]))


def _line_tax_edge(bill: dict[str, Any], draw: st.DrawFn) -> None:
    line = _goods_line(bill)
    rate = Decimal(line["taxRate"])
    include = str(bill["includeTaxFlag"]) == "1"
    off = draw(st.sampled_from(["0.05", "0.06", "0.07", "-0.06", "-0.07", "0.50"]))
    line["taxAmount"] = _tax(line["amount"], rate, include) + Decimal(off)


def _drop_header(bill: dict[str, Any], draw: st.DrawFn) -> None:
    name = draw(
        st.sampled_from(
            [
                *("billNo", "billDate", "invoiceType", "includeTaxFlag", "totalAmount"),
                *("buyerName", "sellerName", "billDetail"),
            ]
        )
    )
    if name == "billDetail" or draw(st.booleans()):
        del bill[name]
    else:
        bill[name] = ""


def _lines_empty_string(bill: dict[str, Any], draw: st.DrawFn) -> None:
    bill["billDetail"] = ""


def _drop_line(bill: dict[str, Any], draw: st.DrawFn) -> None:
    name = draw(st.sampled_from(["detailId", "lineProperty", "taxRate", "amount", "goodsName"]))
    del _line(bill, draw)[name]


def _no_buyer_tax_id(bill: dict[str, Any], draw: st.DrawFn) -> None:
    del bill["buyerTaxpayerId"]


def _no_seller(bill: dict[str, Any], draw: st.DrawFn) -> None:
    del bill["sellerTaxpayerId"]
    if draw(st.booleans()):
        bill["orgCode"] = "ORG01"


def _cjk(count: int) -> str:
    return "发" * count


def _gbk_edge(bill: dict[str, Any], draw: st.DrawFn) -> None:
    name, limit = draw(st.sampled_from([("goodsName", 92), ("units", 22), ("specification", 40)]))
    size = limit + draw(st.sampled_from([0, 1, 2]))
    # CJK is 2 GBK bytes: an odd size ends with one ASCII byte.
    _line(bill, draw)[name] = _cjk(size // 2) + "x" * (size % 2)


def _gbk_header_edge(bill: dict[str, Any], draw: st.DrawFn) -> None:
    name, limit = draw(
        st.sampled_from(
            [("remark", 230), ("buyerAddressAndTel", 100), ("buyerBankAndAccount", 100)]
        )
    )
    size = limit + draw(st.sampled_from([0, 1, 2]))
    bill[name] = _cjk(size // 2) + "1" * (size % 2)


def _chars_edge(bill: dict[str, Any], draw: st.DrawFn) -> None:
    name, limit = draw(
        st.sampled_from(
            [
                *(("billNo", 50), ("buyerName", 100), ("sellerName", 100), ("drawer", 10)),
                *(("buyerRecipientMail", 300), ("textField1", 150), ("redInfoBillNo", 16)),
            ]
        )
    )
    bill[name] = "a" * (limit + draw(st.sampled_from([0, 1])))


def _bad_code(bill: dict[str, Any], draw: st.DrawFn) -> None:
    name, value = draw(
        st.sampled_from(
            [
                ("invoiceType", "999"),
                ("includeTaxFlag", "2"),
                ("autoInvoice", "yes"),
                ("buyerProperty", "3"),
                ("taxationStyle", "5"),
                ("billDate", "24/11/2025"),
            ]
        )
    )
    bill[name] = value


def _bad_rate(bill: dict[str, Any], draw: st.DrawFn) -> None:
    _line(bill, draw)["taxRate"] = draw(st.sampled_from(["0.07", "0.135", "abc", "7%"]))


def _rate_1_5(bill: dict[str, Any], draw: st.DrawFn) -> None:
    _line(bill, draw)["taxRate"] = "1.5"


def _bad_revenue_code(bill: dict[str, Any], draw: st.DrawFn) -> None:
    _line(bill, draw)["revenueCode"] = draw(st.sampled_from(["304020100000000000", "30402a"]))


def _money_precision(bill: dict[str, Any], draw: st.DrawFn) -> None:
    line = _goods_line(bill)
    line["amount"] += Decimal("0.001")
    bill["totalAmount"] += Decimal("0.001")


def _discount_first(bill: dict[str, Any], draw: st.DrawFn) -> None:
    goods = _goods_line(bill)
    discount = {**goods, "detailId": "DX", "lineProperty": 1, "amount": -goods["amount"] / 2}
    discount.pop("taxAmount", None)
    discount.pop("quantity", None)
    discount.pop("price", None)
    bill["billDetail"].insert(0, _quantized(discount))
    bill["totalAmount"] = sum((line["amount"] for line in bill["billDetail"]), Decimal("0.00"))


def _quantized(line: dict[str, Any]) -> dict[str, Any]:
    line["amount"] = _round(line["amount"])
    return line


def _discount_rate(bill: dict[str, Any], draw: st.DrawFn) -> None:
    for line in bill["billDetail"]:
        if line["lineProperty"] == 1:
            line["taxRate"] = "0.01" if line["taxRate"] != "0.01" else "0.03"
            line.pop("taxAmount", None)


def _sign(bill: dict[str, Any], draw: st.DrawFn) -> None:
    line = _goods_line(bill)
    line["amount"] = -line["amount"]
    line.pop("taxAmount", None)
    line.pop("quantity", None)
    bill["totalAmount"] = sum((x["amount"] for x in bill["billDetail"]), Decimal("0.00"))


def _qty_price(bill: dict[str, Any], draw: st.DrawFn) -> None:
    line = _goods_line(bill)
    line["quantity"] = Decimal("3") * (-1 if line["amount"] < 0 else 1)
    line["price"] = (abs(line["amount"]) / 3).quantize(CENT) + draw(
        st.sampled_from([Decimal("0"), Decimal("0.01"), Decimal("0.5")])
    )


def _unknown_field(bill: dict[str, Any], draw: st.DrawFn) -> None:
    if draw(st.booleans()):
        bill["customerRef"] = "X"
    else:
        _line(bill, draw)["colour"] = "red"


def _buyer_tax_id_bad(bill: dict[str, Any], draw: st.DrawFn) -> None:
    bill["buyerTaxpayerId"] = "12345"


def _detail_id_33(bill: dict[str, Any], draw: st.DrawFn) -> None:
    _goods_line(bill)["detailId"] = "d" * 33


def _detail_id_duplicate(bill: dict[str, Any], draw: st.DrawFn) -> None:
    lines = bill["billDetail"]
    if len(lines) > 1:
        lines[-1]["detailId"] = lines[0]["detailId"]


def _empty_lines(bill: dict[str, Any], draw: st.DrawFn) -> None:
    bill["billDetail"] = []


def _no_red_reference(bill: dict[str, Any], draw: st.DrawFn) -> None:
    bill.pop(draw(st.sampled_from(["originalInvoiceNumber", "originalInvoiceCode"])), None)


def _deduction(bill: dict[str, Any], draw: st.DrawFn) -> None:
    bill["taxationStyle"] = "2"
    if draw(st.booleans()):
        bill["deduction"] = Decimal("10.00")


MUTATIONS: Final[dict[str, Mutation]] = {
    "total_off": _total_off,
    "line_tax_edge": _line_tax_edge,
    "drop_header": _drop_header,
    "drop_line": _drop_line,
    "no_buyer_tax_id": _no_buyer_tax_id,
    "no_seller": _no_seller,
    "gbk_edge": _gbk_edge,
    "gbk_header_edge": _gbk_header_edge,
    "chars_edge": _chars_edge,
    "bad_code": _bad_code,
    "bad_rate": _bad_rate,
    "bad_revenue_code": _bad_revenue_code,
    "rate_1_5": _rate_1_5,
    "money_precision": _money_precision,
    "discount_first": _discount_first,
    "discount_rate": _discount_rate,
    "sign": _sign,
    "qty_price": _qty_price,
    "unknown_field": _unknown_field,
    "buyer_tax_id_bad": _buyer_tax_id_bad,
    "detail_id_33": _detail_id_33,
    "detail_id_duplicate": _detail_id_duplicate,
    "empty_lines": _empty_lines,
    "lines_empty_string": _lines_empty_string,
    "no_red_reference": _no_red_reference,
    "deduction": _deduction,
}


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    bill = draw(valid_bills())
    name = draw(st.sampled_from(["valid", "valid", *MUTATIONS]))
    if name != "valid":
        MUTATIONS[name](bill, draw)
    return name, bill


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_simulator_and_bridge_agree(case: tuple[str, dict[str, Any]]) -> None:
    mutation, bill = case
    simulator, bridge = _simulator_verdict(bill), _bridge_verdict(bill)
    if not _agree(simulator, _bridge_verdicts(bill)):
        assert _known(mutation, simulator, bridge), (
            f"{mutation}: simulator {simulator}, bridge {bridge} — not a known difference;"
            f" the bill: {bill!r}"
        )


def test_valid_bills_are_accepted_by_both() -> None:
    @settings(max_examples=100, deadline=None)
    @given(valid_bills())
    def check(bill: dict[str, Any]) -> None:
        assert _simulator_verdict(bill) == "accept", bill
        assert _bridge_verdict(bill) == "accept", bill

    check()


def test_every_known_difference_is_real() -> None:
    """A listed difference that no longer happens must be removed from the table."""
    bill: dict[str, Any] = {
        "billNo": "K-1",
        "billDate": "2025-11-24",
        "invoiceType": "10xdp",
        "includeTaxFlag": "0",
        "totalAmount": Decimal("150.00"),
        "buyerName": "上海示例贸易有限公司",
        "buyerTaxpayerId": BUYER_TAX_ID,
        "sellerTaxpayerId": "91310000SIM0000001",
        "sellerName": "上海模拟科技有限公司",
        "billDetail": [
            {
                "detailId": f"L{i}",
                "lineProperty": 2,
                "goodsName": "服务费",
                "revenueCode": "3040201000000000000",
                "taxRate": "0.06",
                "amount": Decimal(amount),
            }
            for i, amount in enumerate(["100.00", "50.00"])
        ],
    }
    for known in KNOWN_DIFFERENCES:
        mutated = {**bill, "billDetail": [dict(line) for line in bill["billDetail"]]}
        known.example(mutated)
        simulator, bridge = _simulator_verdict(mutated), _bridge_verdict(mutated)
        assert not _agree(simulator, _bridge_verdicts(mutated)), known
        assert bridge == known.bridge, known
        assert known.simulator in (simulator, ANY), known
