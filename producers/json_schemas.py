"""JSON Schema (draft 2020-12) of what the ERP sends and of what the bridge sends back.

| schema | route | file in ``docs/schemas/`` |
|---|---|---|
| the ERP document (开票申请单) | ``GET /v1/schema/document`` | ``erp-document.schema.json`` |
| the ERP notification | ``GET /v1/schema/notification`` | ``erp-notification.schema.json`` |

The document schema is generated from the field table of ``schemas.erp`` (the same table the
validator runs), so lengths, codes and required fields cannot drift from what is enforced.
It describes the *shape*; business rules (tax tolerance, totals, signs, discount lines, GBK
byte lengths) are checked by the bridge and reported as issues (HTTP 422), not expressible
here. Numbers may be sent as JSON numbers or numeric strings; the bridge never reads them
through a float.

The notification schema describes the body ``fapiao.notify_erp`` posts to a tenant's
``erp_webhook_url`` (built by ``worker.services.erp_outbox.owe_notification``; signed as described
in ``worker.services.notify``).

``python -m producers.json_schemas [DIR]`` rewrites the files (default ``docs/schemas``);
a test fails when they differ from what this module generates.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from schemas.erp import (
    HEADER_FIELDS,
    HEADER_REQUIRED,
    LINE_FIELDS,
    LINE_REQUIRED,
    MAX_BILL_LINES,
    InvoiceType,
)
from schemas.tax import ACCEPTED_TAX_RATES, format_tax_rate
from store.states import DocumentStatus, InvoiceStanding

__all__ = [
    "DOCUMENT_SCHEMA_FILE",
    "NOTIFICATION_SCHEMA_FILE",
    "document_schema",
    "notification_schema",
    "render",
    "write_schema_files",
]

DOCUMENT_SCHEMA_FILE: Final = "erp-document.schema.json"
NOTIFICATION_SCHEMA_FILE: Final = "erp-notification.schema.json"
SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
_ID_BASE: Final = "https://fapiao-bridge.invalid/schemas/"

_NUMERIC_TEXT: Final = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
_MONEY_TEXT: Final = r"^\s*[+-]?\d{1,12}(\.\d{0,2})?\s*$"
_PRICE_TEXT: Final = r"^\s*[+-]?\d{1,12}(\.\d{0,8})?\s*$"


def _number(description: str, text_pattern: str = _NUMERIC_TEXT) -> dict[str, Any]:
    return {
        "description": description,
        "anyOf": [{"type": "number"}, {"type": "string", "pattern": text_pattern}],
    }


def _field_schema(name: str, spec: Any) -> dict[str, Any]:
    label = spec.zh
    kind = spec.kind
    out: dict[str, Any]
    if kind == "text":
        out = {"type": ["string", "integer"], "description": label}
        if spec.chars is not None:
            out["maxLength"] = spec.chars
            out["description"] += f"; at most {spec.chars} characters"
        if spec.gbk_bytes is not None:
            out["description"] += f"; at most {spec.gbk_bytes} GBK bytes (a Chinese character is 2)"
        if spec.printed:
            out["description"] += "; printed on the invoice, GBK characters only"
    elif kind == "code":
        out = {"type": ["string", "integer"], "description": label}
        if spec.codes:
            codes = list(spec.codes)
            out["enum"] = codes + [int(code) for code in codes if code.isdigit()]
            out["description"] += ": " + ", ".join(f"{c} {z}" for c, z in spec.codes.items())
    elif kind == "line_property":
        out = {
            "description": f"{label}: 2 正常商品行, 1 折扣行 (follows the line it discounts)",
            "enum": [1, 2, "1", "2"],
        }
    elif kind == "money":
        out = _number(f"{label}; at most 2 decimals, (14,2)", _MONEY_TEXT)
    elif kind == "price":
        out = _number(f"{label}; at most 8 decimals", _PRICE_TEXT)
    elif kind == "quantity":
        out = _number(f"{label}; at most 20 characters when written")
    elif kind == "date":
        out = {
            "type": "string",
            "pattern": r"^\s*\d{4}-\d{1,2}-\d{1,2}\s*$",
            "description": f"{label}, yyyy-MM-dd",
        }
    elif kind == "invoice_type":
        out = {
            "type": "string",
            "enum": [kind_.value for kind_ in InvoiceType],
            "description": f"{label}: "
            + ", ".join(f"{kind_.value} {kind_.name_zh}" for kind_ in InvoiceType),
        }
    elif kind == "tax_rate":
        rates = [format_tax_rate(rate) for rate in sorted(ACCEPTED_TAX_RATES)]
        out = {
            "type": ["string", "number"],
            "description": f"{label}: one of {', '.join(rates)} (also written as 13%, 13)",
        }
    elif kind == "taxpayer_id":
        out = {
            "type": "string",
            "pattern": r"^([0-9A-Z]{15}|[0-9A-Z]{18}|[0-9A-Z]{20})$",
            "description": f"{label}: 15, 18 or 20 upper-case letters and digits",
        }
    elif kind == "lines":
        out = {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_BILL_LINES,
            "items": {"$ref": "#/$defs/billDetail"},
            "description": label,
        }
    else:  # pragma: no cover - a new kind in schemas.erp must be described here
        raise ValueError(f"no JSON Schema for field kind {kind!r} ({name})")
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    # Optional fields may be sent empty or null: both mean "absent".
    return {"anyOf": [schema, {"type": "null"}, {"const": ""}]}


def document_schema() -> dict[str, Any]:
    """The ERP document: one BILL.PUSH bill, field names exactly as Kingdee spells them."""
    header_props = {
        name: _field_schema(name, spec)
        if name in HEADER_REQUIRED
        else _nullable(_field_schema(name, spec))
        for name, spec in HEADER_FIELDS.items()
    }
    line_props = {
        name: _field_schema(name, spec)
        if name in LINE_REQUIRED
        else _nullable(_field_schema(name, spec))
        for name, spec in LINE_FIELDS.items()
    }
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": _ID_BASE + DOCUMENT_SCHEMA_FILE,
        "title": "fapiao-bridge ERP document (开票申请单, Kingdee BILL.PUSH bill)",
        "description": (
            "POST /v1/documents takes one such object, an array of them, or "
            '{"documents": [...]}. Business rules (tax tolerance, totals, signs, discount '
            "lines, GBK lengths) are checked by the bridge and answered with HTTP 422 issues."
        ),
        "type": "object",
        "additionalProperties": False,
        "required": list(HEADER_REQUIRED),
        "anyOf": [{"required": ["sellerTaxpayerId"]}, {"required": ["orgCode"]}],
        "properties": header_props,
        "$defs": {
            "billDetail": {
                "type": "object",
                "additionalProperties": False,
                "required": list(LINE_REQUIRED),
                "anyOf": [
                    {"required": ["goodsCode"]},
                    {"required": ["goodsName", "revenueCode"]},
                ],
                "properties": line_props,
            }
        },
    }


def _text(description: str, *, nullable: bool = False) -> dict[str, Any]:
    return {"type": ["string", "null"] if nullable else "string", "description": description}


def _money_text(description: str) -> dict[str, Any]:
    return {
        "type": ["string", "null"],
        "pattern": r"^-?\d+(\.\d+)?$",
        "description": description + " (exact decimal text)",
    }


def notification_schema() -> dict[str, Any]:
    """The body of the webhook call to the ERP (one per user-visible state change)."""
    states = [state.value for state in DocumentStatus]
    standings = [standing.value for standing in InvoiceStanding]
    changed = [standing for standing in standings if standing != InvoiceStanding.normal.value]
    invoice = {
        "type": "object",
        "properties": {
            "orderNo": _text("发票流水号", nullable=True),
            "invoiceCode": _text("发票代码 (empty for 数电)", nullable=True),
            "invoiceNum": _text("发票号码 (20 digits 数电, 8 税控)", nullable=True),
            "invoiceType": _text("发票种类", nullable=True),
            "invoiceStatus": _text("0 正常, 2 待开, 3 红冲, 6 作废", nullable=True),
            "invoiceDate": _text("yyyy-MM-dd", nullable=True),
            "totalAmount": _money_text("合计金额 (excl. tax)"),
            "totalTaxAmount": _money_text("合计税额"),
            "includeTaxAmount": _money_text("价税合计"),
            "invoiceFileUrl": _text("版式文件 URL", nullable=True),
            "invoicePdfFileUrl": _text("PDF URL", nullable=True),
            "invoiceXmlFileUrl": _text("XML URL", nullable=True),
            "issueErrorMessage": _text("开票失败原因", nullable=True),
            "invoiceProperty": {
                "type": ["integer", "null"],
                "description": "0 蓝票 (blue), 1 红票 (red)",
            },
            "standing": {
                "type": "string",
                "enum": standings,
                "description": (
                    "after issuance: normal, partially_reversed (部分红冲), reversed (红冲),"
                    " voided (作废); only ever moves forward"
                ),
            },
            "standingChangedAt": {"type": ["string", "null"], "format": "date-time"},
            "canRedAmount": _money_text("可红冲金额 left to reverse (excl. tax)"),
            "canRedTaxAmount": _money_text("可红冲税额 left to reverse"),
            "originalInvoiceCode": _text("a red invoice: the blue invoice's code", nullable=True),
            "originalInvoiceNum": _text("a red invoice: the blue invoice's number", nullable=True),
            "reversedBy": {
                "type": "array",
                "items": {"type": "object", "additionalProperties": True},
                "description": "red invoices known against this blue one (code, number, amounts)",
            },
            "billNos": {
                "type": "array",
                "items": {"type": "string"},
                "description": (
                    "every bill the invoice covers, this one included: more than one for a"
                    " merged invoice (autoMerge=1, 合并开票)"
                ),
            },
        },
        "additionalProperties": True,
    }
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": _ID_BASE + NOTIFICATION_SCHEMA_FILE,
        "title": "fapiao-bridge ERP notification (webhook body)",
        "description": (
            "POSTed to the tenant's erp_webhook_url on every user-visible outcome. Headers: "
            "X-Fapiao-Event, X-Fapiao-Delivery (same on every retry: deduplicate on it), "
            "X-Fapiao-Timestamp and X-Fapiao-Signature = sha256=HMAC-SHA256(erp_webhook_secret, "
            "timestamp + '.' + body); and the same as Standard Webhooks headers: webhook-id "
            "(= X-Fapiao-Delivery), webhook-timestamp, webhook-signature = v1,base64 "
            "HMAC-SHA256(erp_webhook_secret, id + '.' + timestamp + '.' + body)."
        ),
        "type": "object",
        "required": [
            "event",
            "documentId",
            "tenant",
            "sellerTaxpayerId",
            "billNo",
            "revision",
            "status",
            "occurredAt",
        ],
        "properties": {
            "event": {
                "type": "string",
                "enum": [
                    *(f"document.{state}" for state in states),
                    *(f"invoice.{standing}" for standing in changed),
                ],
                "description": (
                    "document.<status> when the document's state changed; invoice.<standing>"
                    " when an issued invoice was voided or (partly) reversed after issuance"
                    " (the invoice is under `invoice`, the document's state is unchanged)"
                ),
            },
            "invoice": {
                **invoice,
                "description": "invoice.* events: the invoice whose standing changed",
            },
            "documentId": {"type": "integer", "description": "the bridge's document id"},
            "tenant": _text("tenant name (tenants file)"),
            "sellerTaxpayerId": _text("销方税号 (or orgCode)"),
            "billNo": _text("单据编号, as the ERP sent it"),
            "revision": {"type": "integer", "minimum": 1},
            "status": {"type": "string", "enum": states},
            "previousStatus": {"type": ["string", "null"], "enum": [*states, None]},
            "reason": _text("why (the cloud's message, an operator's reason)", nullable=True),
            "errorCode": _text("the cloud's errorCode, when it refused", nullable=True),
            "errorMessage": _text("the last error message", nullable=True),
            "issuedAmount": _money_text(
                "Σ issued invoices on the bill's basis (of a merged invoice, this bill's share)"
            ),
            "invoices": {"type": "array", "items": invoice},
            "occurredAt": {"type": "string", "format": "date-time"},
        },
        "additionalProperties": True,
    }


def render(schema: dict[str, Any]) -> str:
    """The file text: sorted keys, 2-space indent, UTF-8 characters kept, final newline."""
    return json.dumps(schema, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def write_schema_files(directory: str | Path) -> list[Path]:
    """Write both schema files into ``directory``; returns their paths."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in (
        (DOCUMENT_SCHEMA_FILE, document_schema()),
        (NOTIFICATION_SCHEMA_FILE, notification_schema()),
    ):
        path = target / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover
    for written_path in write_schema_files(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas"):
        print(written_path)
