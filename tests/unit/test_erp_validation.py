"""schemas.erp: every validation rule has a passing and a failing example.

The cases are tables: ``FAILING`` maps a mutation of a valid bill to the exact
``(path, rule)`` issues it must produce, ``PASSING`` to none. A test checks that both tables
cover every rule code of ``schemas.errors.RULES``.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

import schemas.errors
from schemas.erp import (
    MAX_BILL_LINES,
    Bill,
    InvoiceType,
    check_bill,
    validate_bill,
    wire_content_hash,
)
from schemas.errors import RULES, DocumentInvalid, Issue
from schemas.money import dumps_exact, loads_exact

SELLER_ID = "91330106MA2H07XK4J"
BUYER_ID = "91330106MA2CRW5N99"
REVENUE = "1090511010000000000"
CJK = re.compile(r"[\u4e00-\u9fff]")

Doc = dict[str, Any]
Mutation = Callable[[Doc], None]


def goods(detail_id: str, amount: str, **extra: Any) -> Doc:
    line: Doc = {
        "detailId": detail_id,
        "lineProperty": 2,
        "goodsName": "智能会议平板",
        "revenueCode": REVENUE,
        "taxRate": "0.13",
        "amount": Decimal(amount),
    }
    line.update(extra)
    return line


def discount(detail_id: str, amount: str, **extra: Any) -> Doc:
    return goods(detail_id, amount, lineProperty=1, **extra)


def valid_bill() -> Doc:
    """A valid 电子普票 bill on the tax-exclusive basis, as loads_exact would give it."""
    return {
        "billNo": "HZYF-SO-1001",
        "billDate": "2025-07-24",
        "invoiceType": "026",
        "includeTaxFlag": "0",
        "totalAmount": Decimal("1500.00"),
        "buyerName": "杭州西溪文化传媒有限公司",
        "sellerTaxpayerId": SELLER_ID,
        "sellerName": "杭州云帆智能科技有限公司",
        "billDetail": [
            goods("1", "1000.00", quantity=2, price=Decimal("500")),
            goods("2", "500.00", goodsName="无线传屏器"),
        ],
    }


def red_bill() -> Doc:
    doc = valid_bill()
    doc.update(
        invoiceType="10xdp",
        invoiceProperty="1",
        originalInvoiceNumber="25332000000012345678",
        billDetail=[goods("1", "-1000.00", quantity=-2, price=Decimal("500"))],
        totalAmount=Decimal("-1000.00"),
    )
    return doc


# --- mutation helpers -------------------------------------------------------------------------

_STEP = re.compile(r"([A-Za-z0-9_]+)(?:\[(\d+)\])?")


def _locate(doc: Doc, path: str) -> tuple[Any, str]:
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        match = _STEP.fullmatch(part)
        assert match
        node = node[match.group(1)]
        if match.group(2) is not None:
            node = node[int(match.group(2))]
    return node, last


def put(path: str, value: Any) -> Mutation:
    def mutate(doc: Doc) -> None:
        node, key = _locate(doc, path)
        node[key] = value

    return mutate


def drop(path: str) -> Mutation:
    def mutate(doc: Doc) -> None:
        node, key = _locate(doc, path)
        del node[key]

    return mutate


def lines(*items: Doc) -> Mutation:
    """Replace the lines and set totalAmount to their sum (so only the rule under test fires)."""

    def mutate(doc: Doc) -> None:
        doc["billDetail"] = [copy.deepcopy(item) for item in items]
        doc["totalAmount"] = sum((Decimal(item["amount"]) for item in items), Decimal("0.00"))

    return mutate


def start(base: Callable[[], Doc]) -> Mutation:
    def mutate(doc: Doc) -> None:
        doc.clear()
        doc.update(base())

    return mutate


def both(*steps: Mutation) -> Mutation:
    def mutate(doc: Doc) -> None:
        for step in steps:
            step(doc)

    return mutate


def apply(mutation: Mutation) -> Doc:
    doc = valid_bill()
    mutation(doc)
    return doc


def found(doc: Any) -> set[tuple[str, str]]:
    return {(issue.path, issue.rule) for issue in check_bill(doc)}


def many_lines(count: int, tax: str | None = None) -> Mutation:
    items = [
        goods(str(n), "100.00", **({"taxAmount": Decimal(tax)} if tax else {}))
        for n in range(count)
    ]
    return lines(*items)


han = "汉"  # 2 GBK bytes, 1 character
EVERY_FIELD: Doc = {
    "billNo": "HZYF-SO-1002",
    "billDate": "2025-7-4",
    "invoiceType": "028",
    "includeTaxFlag": 0,
    "totalAmount": "900",
    "autoInvoice": 1,
    "autoMerge": "0",
    "invoiceProperty": "",
    "buyerName": "杭州西溪文化传媒有限公司",
    "buyerTaxpayerId": BUYER_ID,
    "buyerProperty": "0",
    "buyerAddressAndTel": "杭州市西湖区天目山路398号 0571-88888888",
    "buyerBankAndAccount": "中国银行杭州西湖支行 367758392017",
    "buyerRecipientMail": "finance@xixi-media.example.cn",
    "buyerRecipientPhone": "13857112046",
    "buyerCode": "C-00812",
    "sellerTaxpayerId": SELLER_ID,
    "orgCode": "ORG-HZ-01",
    "sellerName": "杭州云帆智能科技有限公司",
    "sellerAddressAndTel": "杭州市西湖区文三路478号 0571-88276615",
    "sellerBankAndAccount": "招商银行杭州分行营业部 571908765410802",
    "drawer": "李敏",
    "payee": "赵晓燕",
    "reviewer": "陈刚",
    "remark": "合同号：YF-2025-031",
    "specialType": "",
    "taxationStyle": "2",
    "deduction": "200.00",
    "priority": "1",
    "billSource": 2,
    "pushMatchRules": "0",
    "fillValueRule": "goodsCode",
    "textField1": "ERP-ORDER-77",
    "textField2": "华东区",
    "textField3": "x",
    "textField4": "y",
    "textField5": "z",
    "originalInvoiceCode": None,
    "originalInvoiceNumber": None,
    "redInfoBillNo": None,
    "billDetail": [
        {
            "detailId": 7,
            "lineProperty": "2",
            "goodsName": "智能会议平板",
            "goodsCode": "MAT-0001",
            "revenueCode": REVENUE,
            "taxRate": "13%",
            "amount": "1000",
            "taxAmount": "130.00",
            "quantity": "2",
            "price": "500.00000000",
            "units": "台",
            "specification": "YF-86MAX",
            "discountAmount": "0",
            "privilegeFlag": "0",
            "privilegeContent": "",
            "zeroTaxRateFlag": None,
            "extraField": "行扩展",
            "remark": "行备注",
        },
        {
            "detailId": 8,
            "lineProperty": 1,
            "goodsCode": "MAT-0001",
            "taxRate": "0.13",
            "amount": "-100",
        },
    ],
}


# --- the tables -------------------------------------------------------------------------------

FAILING: list[Any] = [
    # required
    *(
        pytest.param("required", drop(name), {(name, "required")}, id=f"required-{name}")
        for name in (
            "billNo",
            "billDate",
            "invoiceType",
            "includeTaxFlag",
            "totalAmount",
            "buyerName",
            "sellerName",
            "billDetail",
        )
    ),
    pytest.param("required", put("billNo", "  "), {("billNo", "required")}, id="required-blank"),
    pytest.param(
        "required", put("billDetail", []), {("billDetail", "required")}, id="required-no-lines"
    ),
    pytest.param(
        "required",
        drop("sellerTaxpayerId"),
        {("sellerTaxpayerId", "required")},
        id="required-seller",
    ),
    *(
        pytest.param(
            "required",
            drop(f"billDetail[1].{name}"),
            {(f"billDetail[1].{name}", "required")},
            id=f"required-line-{name}",
        )
        for name in ("detailId", "lineProperty", "taxRate")
    ),
    pytest.param(
        "required",
        drop("billDetail[1].amount"),
        {("billDetail[1].amount", "required")},
        id="required-line-amount",
    ),
    pytest.param(
        "required",
        drop("billDetail[0].goodsName"),
        {("billDetail[0].goodsName", "required")},
        id="required-goods-name",
    ),
    pytest.param(
        "required",
        put("billDetail[0].revenueCode", ""),
        {("billDetail[0].revenueCode", "required")},
        id="required-revenue-code",
    ),
    # date_format
    *(
        pytest.param(
            "date_format", put("billDate", value), {("billDate", "date_format")}, id=f"date-{value}"
        )
        for value in ("2025/07/24", "2025-02-30", "20250724", "2025-13-01", 20250724)
    ),
    # invoice_type
    *(
        pytest.param(
            "invoice_type",
            put("invoiceType", value),
            {("invoiceType", "invoice_type")},
            id=f"type-{value}",
        )
        for value in ("01", "10xpp", 26, "增值税电子普通发票")
    ),
    # enum
    *(
        pytest.param("enum", put(path, value), {(path, "enum")}, id=f"enum-{path}")
        for path, value in (
            ("includeTaxFlag", "2"),
            ("buyerProperty", "2"),
            ("invoiceProperty", "3"),
            ("taxationStyle", "3"),
            ("priority", 2),
            ("autoInvoice", "Y"),
            ("autoMerge", "2"),
            ("billSource", "8"),
            ("billDetail[0].privilegeFlag", "2"),
            ("billDetail[0].zeroTaxRateFlag", "0"),
            ("billDetail[0].lineProperty", 0),
        )
    ),
    # tax_rate
    *(
        pytest.param(
            "tax_rate",
            put("billDetail[1].taxRate", value),
            {("billDetail[1].taxRate", "tax_rate")},
            id=f"rate-{value}",
        )
        for value in ("0.14", "abc", "0.0135", "-13%")
    ),
    # revenue_code
    *(
        pytest.param(
            "revenue_code",
            put("billDetail[0].revenueCode", value),
            {("billDetail[0].revenueCode", "revenue_code")},
            id=f"revenue-{value}",
        )
        for value in ("10905110100", "109051101000000000A", "10905110100000000000")
    ),
    # max_length (characters)
    pytest.param(
        "max_length", put("billNo", "N" * 51), {("billNo", "max_length")}, id="len-billNo"
    ),
    pytest.param(
        "max_length", put("buyerName", han * 101), {("buyerName", "max_length")}, id="len-buyer"
    ),
    pytest.param(
        "max_length",
        put("billDetail[1].detailId", "D" * 33),
        {("billDetail[1].detailId", "max_length")},
        id="len-detailId",
    ),
    pytest.param(
        "max_length",
        both(
            put("billDetail[1].quantity", Decimal("1.0000000000000000000")),
            put("billDetail[1].price", Decimal("500")),
        ),
        {("billDetail[1].quantity", "max_length")},
        id="len-quantity",
    ),
    pytest.param(
        "max_length", put("drawer", "李" * 11), {("drawer", "max_length")}, id="len-drawer"
    ),
    # max_bytes_gbk
    *(
        pytest.param("max_bytes_gbk", put(path, value), {(path, "max_bytes_gbk")}, id=f"gbk-{path}")
        for path, value in (
            ("billDetail[0].goodsName", han * 47),
            ("billDetail[0].goodsName", "g" * 93),
            ("billDetail[0].goodsName", han * 46 + "g"),
            ("remark", han * 116),
            ("buyerAddressAndTel", han * 51),
            ("buyerBankAndAccount", "工商银行" + "9" * 93),
            ("billDetail[0].units", han * 12),
            ("billDetail[0].specification", han * 21),
        )
    ),
    # gbk_encodable
    pytest.param(
        "gbk_encodable",
        put("buyerName", "西溪文化😀有限公司"),
        {("buyerName", "gbk_encodable")},
        id="gbk-emoji",
    ),
    pytest.param(
        "gbk_encodable",
        put("billDetail[0].goodsName", "𠮷野家牛肉饭"),
        {("billDetail[0].goodsName", "gbk_encodable")},
        id="gbk-rare-han",
    ),
    # money_precision
    pytest.param(
        "money_precision",
        put("billDetail[1].amount", Decimal("500.001")),
        {("billDetail[1].amount", "money_precision")},
        id="money-3-places",
    ),
    pytest.param(
        "money_precision",
        put("totalAmount", "1000000000000.00"),
        {("totalAmount", "money_precision")},
        id="money-too-big",
    ),
    pytest.param(
        "money_precision",
        put("billDetail[1].taxAmount", "65.005"),
        {("billDetail[1].taxAmount", "money_precision")},
        id="money-tax-3-places",
    ),
    # price_precision
    pytest.param(
        "price_precision",
        put("billDetail[1].price", Decimal("0.123456789")),
        {("billDetail[1].price", "price_precision")},
        id="price-9-places",
    ),
    # line_tax_tolerance
    pytest.param(
        "line_tax_tolerance",
        put("billDetail[0].taxAmount", Decimal("130.07")),
        {("billDetail[0].taxAmount", "line_tax_tolerance")},
        id="line-tax-exclusive",
    ),
    pytest.param(
        "line_tax_tolerance",
        both(
            put("includeTaxFlag", "1"),
            lines(goods("1", "1598.00", taxAmount=Decimal("183.91"))),
        ),
        {("billDetail[0].taxAmount", "line_tax_tolerance")},
        id="line-tax-inclusive",
    ),
    pytest.param(
        "line_tax_tolerance",
        put("billDetail[0].taxAmount", Decimal("-130.00")),
        {
            ("billDetail[0].taxAmount", "line_tax_tolerance"),
            ("billDetail", "invoice_tax_tolerance"),
        },
        id="line-tax-wrong-sign",
    ),
    pytest.param(
        "sign",  # within ±0.06 of 0.03, but a blue line's tax is never negative
        lines(goods("1", "1.00", taxRate=Decimal("0.03"), taxAmount=Decimal("-0.03"))),
        {("billDetail[0].taxAmount", "sign")},
        id="line-tax-tiny-wrong-sign",
    ),
    # invoice_tax_tolerance: each line is within ±0.06, together they are 1.50 off
    pytest.param(
        "invoice_tax_tolerance",
        many_lines(30, tax="13.05"),
        {("billDetail", "invoice_tax_tolerance")},
        id="invoice-tax",
    ),
    # total_mismatch
    pytest.param(
        "total_mismatch",
        put("totalAmount", Decimal("1500.01")),
        {("totalAmount", "total_mismatch")},
        id="total-cent-off",
    ),
    pytest.param(
        "total_mismatch",
        put("totalAmount", Decimal("1695.00")),  # the tax-inclusive total on a 0 basis
        {("totalAmount", "total_mismatch")},
        id="total-wrong-basis",
    ),
    # qty_price
    pytest.param(
        "qty_price",
        lines(goods("1", "1000.02", quantity=2, price=Decimal("500"))),
        {("billDetail[0].amount", "qty_price")},
        id="qty-price",
    ),
    # discount_line
    pytest.param(
        "discount_line",
        lines(discount("1", "-100.00"), goods("2", "1000.00")),
        {("billDetail[0].lineProperty", "discount_line")},
        id="discount-first",
    ),
    pytest.param(
        "discount_line",
        lines(goods("1", "1000.00"), discount("2", "-100.00"), discount("3", "-50.00")),
        {("billDetail[2].lineProperty", "discount_line")},
        id="discount-after-discount",
    ),
    pytest.param(
        "discount_line",
        lines(goods("1", "1000.00"), discount("2", "100.00")),
        {("billDetail[1].amount", "discount_line")},
        id="discount-positive",
    ),
    pytest.param(
        "discount_line",
        lines(goods("1", "1000.00"), discount("2", "-100.00", taxRate="0.06")),
        {("billDetail[1].taxRate", "discount_line")},
        id="discount-other-rate",
    ),
    pytest.param(
        "discount_line",
        lines(goods("1", "100.00"), discount("2", "-100.01"), goods("3", "500.00")),
        {("billDetail[1].amount", "discount_line")},
        id="discount-too-big",
    ),
    pytest.param(
        "discount_line",
        both(start(red_bill), lines(goods("1", "-1000.00"), discount("2", "100.00"))),
        {("billDetail[1].lineProperty", "discount_line")},
        id="discount-on-red",
    ),
    # sign
    pytest.param(
        "sign",
        lines(goods("1", "1000.00"), goods("2", "-100.00")),
        {("billDetail[1].amount", "sign")},
        id="sign-blue-negative-line",
    ),
    pytest.param(
        "sign",
        lines(goods("1", "1000.00"), goods("2", "0.00")),
        {("billDetail[1].amount", "sign")},
        id="sign-blue-zero-line",
    ),
    pytest.param(
        "sign",
        lines(goods("1", "-10.00")),
        {("billDetail[0].amount", "sign"), ("totalAmount", "sign")},
        id="sign-blue-negative-total",
    ),
    pytest.param(
        "sign",
        both(start(red_bill), lines(goods("1", "-1000.00"), goods("2", "100.00"))),
        {("billDetail[1].amount", "sign")},
        id="sign-red-positive-line",
    ),
    pytest.param(
        "sign",
        both(start(red_bill), lines(goods("1", "5.00"))),
        {("billDetail[0].amount", "sign"), ("totalAmount", "sign")},
        id="sign-red-positive-total",
    ),
    # red_reference
    pytest.param(
        "red_reference",
        both(start(red_bill), drop("originalInvoiceNumber")),
        {("originalInvoiceNumber", "red_reference")},
        id="red-without-number",
    ),
    pytest.param(
        "red_reference",
        both(start(red_bill), put("invoiceType", "026")),
        {("originalInvoiceCode", "red_reference")},
        id="red-tax-control-without-code",
    ),
    # buyer_tax_id_required
    *(
        pytest.param(
            "buyer_tax_id_required",
            put("invoiceType", kind),
            {("buyerTaxpayerId", "buyer_tax_id_required")},
            id=f"buyer-id-{kind}",
        )
        for kind in ("004", "028", "08xdp")
    ),
    # taxpayer_id_format
    *(
        pytest.param(
            "taxpayer_id_format",
            put(path, value),
            {(path, "taxpayer_id_format")},
            id=f"tax-id-{value}",
        )
        for path, value in (
            ("sellerTaxpayerId", SELLER_ID.lower()),
            ("sellerTaxpayerId", SELLER_ID[:17]),
            ("sellerTaxpayerId", SELLER_ID[:9] + " " + SELLER_ID[9:]),
            ("buyerTaxpayerId", BUYER_ID + "0"),
            ("buyerTaxpayerId", "91330106-MA2CRW5N9"),
        )
    ),
    # detail_id_unique
    pytest.param(
        "detail_id_unique",
        put("billDetail[1].detailId", "1"),
        {("billDetail[1].detailId", "detail_id_unique")},
        id="detail-id-repeated",
    ),
    pytest.param(
        "detail_id_unique",
        both(put("billDetail[0].detailId", 1), put("billDetail[1].detailId", "1")),
        {("billDetail[1].detailId", "detail_id_unique")},
        id="detail-id-int-and-text",
    ),
    # deduction_required
    pytest.param(
        "deduction_required",
        put("taxationStyle", "2"),
        {("deduction", "deduction_required")},
        id="deduction",
    ),
    # too_many_lines
    pytest.param(
        "too_many_lines",
        many_lines(MAX_BILL_LINES + 1),
        {("billDetail", "too_many_lines")},
        id="too-many-lines",
    ),
    # unknown_field
    pytest.param(
        "unknown_field",
        both(put("totalAmout", Decimal("1500.00"))),
        {("totalAmout", "unknown_field")},
        id="unknown-typo",
    ),
    pytest.param(
        "unknown_field",
        put("billDetail[0].goodName", "x"),
        {("billDetail[0].goodName", "unknown_field")},
        id="unknown-line-field",
    ),
    pytest.param(
        "unknown_field",
        put("billno", "X"),
        {("billno", "unknown_field")},
        id="unknown-case",
    ),
    # type
    pytest.param("type", put("buyerName", {"zh": "x"}), {("buyerName", "type")}, id="type-object"),
    pytest.param(
        "type", put("billDetail", {"0": {}}), {("billDetail", "type")}, id="type-lines-object"
    ),
    pytest.param(
        "type",
        put("billDetail[1].amount", "五百"),
        {("billDetail[1].amount", "type")},
        id="type-amount-text",
    ),
    pytest.param(
        "type",
        put("billDetail[1].amount", True),
        {("billDetail[1].amount", "type")},
        id="type-amount-bool",
    ),
    pytest.param(
        "type", put("includeTaxFlag", False), {("includeTaxFlag", "type")}, id="type-code-bool"
    ),
    # float_number
    pytest.param(
        "float_number",
        put("billDetail[1].amount", 500.0),
        {("billDetail[1].amount", "float_number")},
        id="float-amount",
    ),
    pytest.param(
        "float_number",
        put("billDetail[1].taxRate", 0.13),
        {("billDetail[1].taxRate", "float_number")},
        id="float-rate",
    ),
]

PASSING: list[Any] = [
    pytest.param("required", lambda doc: None, id="baseline"),
    pytest.param(
        "required",
        both(drop("sellerTaxpayerId"), put("orgCode", "ORG-HZ-01")),
        id="required-orgCode-instead",
    ),
    pytest.param(
        "required",
        both(drop("billDetail[0].goodsName"), put("billDetail[0].goodsCode", "MAT-0001")),
        id="required-goodsCode-for-name",
    ),
    pytest.param(
        "required",
        both(drop("billDetail[0].revenueCode"), put("billDetail[0].goodsCode", "MAT-0001")),
        id="required-goodsCode-for-revenue",
    ),
    *(
        pytest.param("date_format", put("billDate", value), id=f"date-{value}")
        for value in ("2025-7-4", "2024-02-29", dt.date(2025, 7, 4), " 2025-07-04 ")
    ),
    *(
        pytest.param(
            "invoice_type",
            both(put("invoiceType", kind), put("buyerTaxpayerId", BUYER_ID)),
            id=f"type-{kind}",
        )
        for kind in (*InvoiceType, "08XDP", " 10xdp")
    ),
    *(
        pytest.param("enum", put(path, value), id=f"enum-{path}-{value}")
        for path, value in (
            ("includeTaxFlag", 0),
            ("buyerProperty", "1"),
            ("invoiceProperty", ""),
            ("invoiceProperty", 0),
            ("taxationStyle", "1"),
            ("priority", 1),
            ("autoInvoice", "1"),
            ("autoMerge", 0),
            ("billSource", "7"),
            ("billDetail[0].privilegeFlag", 1),
            ("billDetail[0].zeroTaxRateFlag", "3"),
            ("billDetail[0].lineProperty", "2"),
        )
    ),
    *(
        pytest.param("tax_rate", put("billDetail[1].taxRate", value), id=f"rate-{value}")
        for value in ("13%", 13, "13", Decimal("0.13"), "0.130")
    ),
    pytest.param(
        "tax_rate",
        lines(goods("1", "100.00", taxRate="1.5%"), goods("2", "100.00", taxRate="0")),
        id="rate-1.5-and-zero",
    ),
    pytest.param("revenue_code", put("billDetail[0].revenueCode", "3040201010000000000"), id="rev"),
    pytest.param("max_length", put("billNo", "N" * 50), id="len-billNo-50"),
    pytest.param("max_length", put("buyerName", han * 100), id="len-buyer-100-characters"),
    pytest.param("max_length", put("billDetail[1].detailId", "D" * 32), id="len-detailId-32"),
    pytest.param("max_length", put("drawer", "李" * 10), id="len-drawer-10"),
    pytest.param(
        "max_length",
        both(
            put("billDetail[1].quantity", Decimal("1.000000000000000000")),
            put("billDetail[1].price", Decimal("500")),
        ),
        id="len-quantity-20",
    ),
    *(
        pytest.param("max_bytes_gbk", put(path, value), id=f"gbk-{path}-{len(value)}")
        for path, value in (
            ("billDetail[0].goodsName", han * 46),
            ("billDetail[0].goodsName", "g" * 92),
            ("remark", han * 115),
            ("buyerAddressAndTel", han * 50),
            ("billDetail[0].units", han * 11),
            ("billDetail[0].specification", han * 20),
            # characters, not bytes: sellerAddressAndTel counts 100 characters
            ("sellerAddressAndTel", han * 100),
        )
    ),
    pytest.param(
        "gbk_encodable",
        put("buyerName", "杭州西溪（文化）传媒有限公司·分公司"),
        id="gbk-full-width-punctuation",
    ),
    pytest.param(
        "money_precision",
        put("billDetail[1].amount", Decimal("500.000")),
        id="money-trailing-zero",
    ),
    pytest.param(
        "money_precision",
        both(
            put("totalAmount", "999999999999.99"),
            lines(goods("1", "999999999999.99")),
        ),
        id="money-largest",
    ),
    pytest.param(
        "price_precision",
        put("billDetail[1].price", Decimal("0.12345678")),
        id="price-8-places",
    ),
    pytest.param(
        "line_tax_tolerance",
        put("billDetail[0].taxAmount", Decimal("130.06")),
        id="line-tax-exclusive-edge",
    ),
    pytest.param(
        "line_tax_tolerance",
        put("billDetail[0].taxAmount", Decimal("129.94")),
        id="line-tax-exclusive-edge-below",
    ),
    pytest.param(
        "line_tax_tolerance",
        both(put("includeTaxFlag", "1"), lines(goods("1", "1598.00", taxAmount=Decimal("183.90")))),
        id="line-tax-inclusive-edge",
    ),
    pytest.param(
        "line_tax_tolerance",
        both(put("includeTaxFlag", 1), lines(goods("1", "1598.00", taxAmount=Decimal("183.84")))),
        id="line-tax-worked-example",
    ),
    pytest.param("invoice_tax_tolerance", many_lines(25, tax="13.05"), id="invoice-tax-1.25"),
    pytest.param("total_mismatch", put("totalAmount", "1500"), id="total-as-text"),
    pytest.param("total_mismatch", put("totalAmount", 1500), id="total-as-int"),
    pytest.param(
        "qty_price",
        lines(goods("1", "8000.00", quantity=3, price=Decimal("2666.67"))),
        id="qty-price-cent-off",
    ),
    pytest.param(
        "qty_price",
        lines(goods("1", "84952.85", quantity=Decimal("22.415"), price=Decimal("3790"))),
        id="qty-price-fractional",
    ),
    pytest.param(
        "discount_line",
        lines(goods("1", "1000.00"), discount("2", "-100.00"), goods("3", "500.00")),
        id="discount",
    ),
    pytest.param(
        "discount_line",
        lines(goods("1", "100.00"), discount("2", "-100.00"), goods("3", "500.00")),
        id="discount-whole-line",
    ),
    pytest.param("sign", start(red_bill), id="sign-red"),
    pytest.param("red_reference", start(red_bill), id="red-digital-number-only"),
    pytest.param(
        "red_reference",
        both(
            start(red_bill),
            put("invoiceType", "026"),
            put("originalInvoiceCode", "033002300111"),
            put("originalInvoiceNumber", "01234567"),
        ),
        id="red-tax-control-code-and-number",
    ),
    *(
        pytest.param(
            "buyer_tax_id_required",
            both(put("invoiceType", kind), put("buyerTaxpayerId", BUYER_ID)),
            id=f"buyer-id-{kind}",
        )
        for kind in ("004", "028", "08xdp")
    ),
    *(
        pytest.param("buyer_tax_id_required", put("invoiceType", kind), id=f"no-buyer-id-{kind}")
        for kind in ("007", "025", "026", "10xdp")
    ),
    *(
        pytest.param("taxpayer_id_format", put("buyerTaxpayerId", value), id=f"tax-id-{len(value)}")
        for value in ("330106123456789", SELLER_ID, "91330106MA2H07XK4J01")
    ),
    pytest.param("detail_id_unique", put("billDetail[1].detailId", "1-b"), id="detail-ids"),
    pytest.param(
        "deduction_required",
        both(put("taxationStyle", "2"), put("deduction", Decimal("200.00"))),
        id="deduction",
    ),
    pytest.param("too_many_lines", many_lines(MAX_BILL_LINES), id="max-lines"),
    pytest.param("unknown_field", start(lambda: copy.deepcopy(EVERY_FIELD)), id="all-6.1-fields"),
    pytest.param("type", put("billDetail[1].detailId", 2), id="type-int-id"),
    pytest.param("type", put("billDetail[1].amount", "500.00"), id="type-amount-text"),
    pytest.param("float_number", put("billDetail[1].amount", 500), id="int-not-float"),
]


@pytest.mark.parametrize(("rule", "mutation", "expected"), FAILING)
def test_failing_example(rule: str, mutation: Mutation, expected: set[tuple[str, str]]) -> None:
    doc = apply(mutation)
    assert found(doc) == expected
    with pytest.raises(DocumentInvalid) as caught:
        validate_bill(doc)
    assert rule in caught.value.rules


@pytest.mark.parametrize(("rule", "mutation"), PASSING)
def test_passing_example(rule: str, mutation: Mutation) -> None:
    doc = apply(mutation)
    assert check_bill(doc) == []
    assert isinstance(validate_bill(doc), Bill)


def _rules(table: list[Any]) -> set[str]:
    return {param.values[0] for param in table}


def test_every_rule_has_a_failing_and_a_passing_example() -> None:
    assert _rules(FAILING) == set(RULES)
    assert _rules(PASSING) == set(RULES)


def test_every_rule_is_documented_in_the_errors_module() -> None:
    doc = schemas.errors.__doc__ or ""
    for rule in RULES:
        assert f"``{rule}``" in doc


def test_line_that_is_not_an_object() -> None:
    doc = apply(put("billDetail", [goods("1", "1500.00"), "second line"]))
    assert found(doc) == {("billDetail[1]", "type")}


def test_document_that_is_not_an_object() -> None:
    issues = check_bill(["not", "a", "bill"])  # type: ignore[arg-type]
    assert [(issue.path, issue.rule) for issue in issues] == [("", "type")]


# --- messages ---------------------------------------------------------------------------------


def _bad_everywhere() -> Doc:
    doc = valid_bill()
    doc.update(
        billDate="2025-02-30",
        invoiceType="004",
        includeTaxFlag="3",
        totalAmout="1",
        buyerName="西溪😀",
        sellerTaxpayerId="abc",
        remark=han * 200,
        taxationStyle="2",
        invoiceProperty="1",
    )
    doc["billDetail"] = [
        discount("1", "100.00", taxRate="0.14", revenueCode="123", units=han * 30),
        goods("1", "500.001", price=Decimal("0.123456789"), quantity=1),
        {**goods("3", "1.00"), "amount": 1.5},
        "x",
    ]
    doc["billDetail"] += [goods(str(n), "1.00") for n in range(10, 12)]
    return doc


def test_validate_bill_reports_every_issue_not_just_the_first() -> None:
    with pytest.raises(DocumentInvalid) as caught:
        validate_bill(_bad_everywhere())
    rules = caught.value.rules
    assert rules >= {
        "date_format",
        "buyer_tax_id_required",
        "enum",
        "unknown_field",
        "gbk_encodable",
        "taxpayer_id_format",
        "max_bytes_gbk",
        "deduction_required",
        "red_reference",
        "tax_rate",
        "revenue_code",
        "money_precision",
        "price_precision",
        "float_number",
        "type",
        "detail_id_unique",
        "discount_line",
        "sign",
    }
    assert len(caught.value.issues) >= 18


def test_every_issue_names_path_rule_and_what_to_do_in_english_and_chinese() -> None:
    issues = check_bill(_bad_everywhere())
    for param in FAILING:
        issues += check_bill(apply(param.values[1]))
    assert {issue.rule for issue in issues} == set(RULES)
    for issue in issues:
        assert issue.path, issue
        assert issue.rule in RULES, issue
        assert re.search(r"[A-Za-z]{3}", issue.message), issue
        assert CJK.search(issue.message_zh), issue
        assert re.search(r"[A-Za-z]{3}", issue.hint), issue
        assert CJK.search(issue.hint_zh), issue
        field = issue.path.rsplit(".", 1)[-1].split("[")[0]
        # the field is named in both languages
        if field != "billDetail":
            assert field in issue.message and field in issue.message_zh, issue
        assert issue.as_dict()["rule"] == issue.rule


def test_total_mismatch_speaks_the_clouds_words_and_gives_the_sum() -> None:
    issues = check_bill(apply(put("totalAmount", Decimal("1130.00"))))
    (issue,) = issues
    assert issue.rule == "total_mismatch"
    assert "价税合计金额不对" in issue.message
    assert "价税合计金额不对" in issue.message_zh
    assert "1500.00" in issue.message and "1500.00" in issue.message_zh
    assert "1500.00" in issue.hint


def test_line_tax_issue_gives_the_expected_tax() -> None:
    (issue,) = check_bill(apply(put("billDetail[0].taxAmount", Decimal("131.00"))))
    assert "130.00" in issue.message and "130.00" in issue.hint and "130.00" in issue.hint_zh


def test_unknown_field_suggests_the_right_name() -> None:
    (issue, _) = check_bill(apply(both(drop("totalAmount"), put("totalAmout", Decimal("1500.00")))))
    assert issue.rule == "unknown_field"
    assert "did you mean totalAmount?" in issue.message
    assert "totalAmount" in issue.message_zh


def test_document_invalid_is_a_readable_value_error() -> None:
    with pytest.raises(ValueError) as caught:
        validate_bill(apply(both(put("billDate", "24/07/2025"), put("totalAmount", "1"))))
    error = caught.value
    assert isinstance(error, DocumentInvalid)
    assert error.bill_no == "HZYF-SO-1001"
    text = str(error)
    assert text.startswith("2 issues in bill 'HZYF-SO-1001'")
    assert "billDate [date_format]" in text and "totalAmount [total_mismatch]" in text
    assert [d["rule"] for d in error.as_dicts()] == ["date_format", "total_mismatch"]
    assert all(isinstance(issue, Issue) for issue in error.issues)


def test_float_numbers_from_json_loads_are_refused_and_loads_exact_fixes_it() -> None:
    text = dumps_exact(valid_bill())
    careless = json.loads(text)  # parses 1500.00 as a float
    assert ("totalAmount", "float_number") in found(careless)
    assert check_bill(loads_exact(text)) == []


# --- normalisation, wire form, hash, totals ---------------------------------------------------


def test_validate_bill_normalises_the_document() -> None:
    bill = validate_bill(EVERY_FIELD)
    assert bill.billDate == "2025-07-04"
    assert bill.includeTaxFlag == "0" and bill.autoInvoice == "1" and bill.billSource == "2"
    assert bill.invoiceProperty is None and bill.specialType is None
    assert bill.invoiceType is InvoiceType.SPECIAL_ELECTRONIC
    assert bill.totalAmount == Decimal("900.00") and str(bill.totalAmount) == "900.00"
    first, second = bill.billDetail
    assert first.detailId == "7" and first.lineProperty == 2 and second.lineProperty == 1
    assert first.taxRate == Decimal("0.13") and second.is_discount
    assert str(first.amount) == "1000.00" and str(first.discountAmount) == "0.00"
    assert first.privilegeContent is None


def test_to_wire_is_the_bill_push_shape() -> None:
    wire = validate_bill(EVERY_FIELD).to_wire()
    assert wire["includeTaxFlag"] == "0" and wire["invoiceType"] == "028"
    assert wire["totalAmount"] == Decimal("900.00")
    assert "invoiceProperty" not in wire and "originalInvoiceCode" not in wire
    line = wire["billDetail"][0]
    assert line["lineProperty"] == 2 and type(line["lineProperty"]) is int
    assert line["taxRate"] == "0.13"
    assert isinstance(line["amount"], Decimal) and isinstance(line["price"], Decimal)
    assert "zeroTaxRateFlag" not in line
    text = dumps_exact(wire)
    assert '"totalAmount":900.00' in text and '"taxRate":"0.13"' in text
    assert '"lineProperty":2' in text and '"lineProperty":1' in text


def test_wire_form_validates_to_the_same_bill() -> None:
    bill = validate_bill(EVERY_FIELD)
    again = validate_bill(loads_exact(dumps_exact(bill.to_wire())))
    assert again == bill
    assert validate_bill(bill) == bill  # a Bill is accepted as input too


def test_bill_model_validate_json_keeps_numbers_exact() -> None:
    doc = apply(lines(goods("1", "12345678901.57"), goods("2", "0.10")))
    bill = Bill.model_validate_json(dumps_exact(doc))
    assert bill.totalAmount == Decimal("12345678901.67")
    assert bill.billDetail[1].amount == Decimal("0.10")


def test_bill_model_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="totalAmout"):
        Bill.model_validate({**valid_bill(), "totalAmout": Decimal("1")})


def test_content_hash_ignores_key_order_and_number_spelling() -> None:
    doc = valid_bill()
    reference = validate_bill(doc).content_hash()
    assert len(reference) == 64 and int(reference, 16) >= 0

    shuffled = dict(reversed(list(copy.deepcopy(doc).items())))
    shuffled["billDetail"] = [dict(reversed(list(line.items()))) for line in shuffled["billDetail"]]
    respelled = copy.deepcopy(doc)
    respelled.update(totalAmount="1500", includeTaxFlag=0, billDate="2025-7-24", invoiceProperty="")
    respelled["billDetail"][0].update(amount=1000, taxRate="13%", price="500.000", lineProperty="2")
    for variant in (shuffled, respelled):
        assert validate_bill(variant).content_hash() == reference


@pytest.mark.parametrize(
    "mutation",
    [
        put("billNo", "HZYF-SO-1002"),
        both(put("billDetail[1].amount", "500.01"), put("totalAmount", "1500.01")),
        put("billDetail[0].goodsName", "智能会议平板 "),
        put("billDetail[1].taxRate", "0.06"),
        put("remark", "x"),
    ],
)
def test_content_hash_changes_with_content(mutation: Mutation) -> None:
    assert (
        validate_bill(apply(mutation)).content_hash() != validate_bill(valid_bill()).content_hash()
    )


def _reference_hash(value: Any) -> str:
    """The documented definition: sorted keys, Decimals normalised (zero is 0), dumps_exact."""

    def canonical(item: Any) -> Any:
        if isinstance(item, Decimal):
            return Decimal(0) if item.is_zero() else item.normalize()
        if isinstance(item, dict):
            return {key: canonical(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [canonical(inner) for inner in item]
        return item

    text = dumps_exact(canonical(value), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_content_hash_is_the_reference_definition() -> None:
    for doc in (valid_bill(), EVERY_FIELD):
        bill = validate_bill(doc)
        assert bill.content_hash() == _reference_hash(bill.to_wire())
        assert wire_content_hash(bill.to_wire()) == bill.content_hash()
    odd: list[Any] = [
        Decimal("0.00"), Decimal("-0"), Decimal("1E+5"), Decimal("123.4500"), Decimal("-0.001"),
        Decimal("1234567890123456789012345678901.5"), 'q"b\\c\n\u2028中文\x01', "", 0, -7, True,
        False, None, ("t", Decimal("1.10")), InvoiceType.DIGITAL_NORMAL,
    ]  # fmt: skip
    value: dict[str, Any] = {f"k{index:02d}": item for index, item in enumerate(odd)}
    value["nested"] = [dict(reversed(list(value.items()))), [Decimal("2.50"), {"b": 1, "a": "x"}]]
    assert wire_content_hash(value) == _reference_hash(value)
    refusals: list[Any] = [{"x": 1.5}, {"x": Decimal("NaN")}, {1: "x"}]
    for refused in refusals:
        with pytest.raises((TypeError, ValueError)):
            wire_content_hash(refused)


def test_unprintable_text_over_the_byte_limit_gets_both_issues() -> None:
    text = "😀" + "中" * 50  # GBK with a replacement character: 1 + 100 bytes
    found = check_bill(apply(put("buyerAddressAndTel", text)))
    assert {(issue.path, issue.rule) for issue in found} == {
        ("buyerAddressAndTel", "gbk_encodable"),
        ("buyerAddressAndTel", "max_bytes_gbk"),
    }
    assert "101 bytes in GBK" in next(i.message for i in found if i.rule == "max_bytes_gbk")
    assert check_bill(apply(put("buyerAddressAndTel", "中" * 50))) == []


def test_total_on_the_exclusive_basis() -> None:
    total = validate_bill(valid_bill()).total()
    assert (total.excl, total.tax, total.incl) == (
        Decimal("1000.00") + Decimal("500.00"),
        Decimal("195.00"),
        Decimal("1695.00"),
    )


def test_total_on_the_inclusive_basis_is_the_sum_of_line_splits() -> None:
    doc = apply(
        both(put("includeTaxFlag", "1"), lines(goods("1", "1598.00"), goods("2", "100.00")))
    )
    total = validate_bill(doc).total()
    assert total.incl == Decimal("1698.00")
    assert total.excl == Decimal("1414.16") + Decimal("88.50")
    assert total.tax == Decimal("183.84") + Decimal("11.50")


def test_total_uses_supplied_line_tax() -> None:
    total = validate_bill(apply(put("billDetail[0].taxAmount", Decimal("130.05")))).total()
    assert total.tax == Decimal("195.05") and total.incl == Decimal("1695.05")


def test_invoice_type_helpers() -> None:
    special = {kind.value for kind in InvoiceType if kind.is_special}
    digital = {kind.value for kind in InvoiceType if kind.is_digital}
    assert special == {"004", "028", "08xdp"}
    assert digital == {"08xdp", "10xdp"}
    assert {kind.value for kind in InvoiceType} == {
        "004", "007", "025", "026", "028", "08xdp", "10xdp",
    }  # fmt: skip
    assert InvoiceType("026").max_lines == 8
    assert InvoiceType("10xdp").max_lines == 2000
    assert InvoiceType("10xdp") is InvoiceType.DIGITAL_NORMAL
    assert f"{InvoiceType.DIGITAL_NORMAL}" == "10xdp"
    assert all(CJK.search(kind.name_zh) for kind in InvoiceType)


def test_bill_helpers() -> None:
    bill = validate_bill(red_bill())
    assert bill.is_red and not bill.include_tax
    assert bill.bill_date == dt.date(2025, 7, 24)


@pytest.mark.parametrize(
    "path", ["totalAmount", "billDetail[0].price", "billDetail[0].quantity", "billDetail[0].amount"]
)
@pytest.mark.parametrize("number", ["1E+9999999", "-1e999999", "1e-9999999"])
def test_absurd_json_numbers_give_a_short_type_issue(path: str, number: str) -> None:
    # Valid JSON that overflows Decimal arithmetic: one clear issue, never an exception and
    # never a megabyte of digits echoed back to the ERP.
    doc = apply(put(path, loads_exact(number)))
    issues = [issue for issue in check_bill(doc) if issue.path == path]
    assert [issue.rule for issue in issues] == ["type"]
    assert "digits of the point" in issues[0].message
    assert all(len(issue.message) < 300 for issue in check_bill(doc))
