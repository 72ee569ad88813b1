"""Pydantic models of the HTTP answers, for the OpenAPI document only.

The routes of ``producers.http`` build their bodies as plain dicts and parse request bodies
themselves (raw bytes → ``loads_exact``: numbers stay exact, never floats); these models
describe those bodies to ERP teams and to client generators. They are named in the routes'
``responses=`` and never validate or filter a live answer, so describing a field here changes
no behaviour: a test (``tests/integration/test_api_openapi.py``) checks real answers against
them instead.

The request body (the ERP document) is not a model: ``producers.json_schemas.document_schema``
is the one description, generated from the validator's own field table, and ``openapi_schemas``
places it under ``components/schemas`` as ``ErpDocument`` and ``ErpBillDetail``.

Amounts are exact decimal text (``"106.00"``); times are ISO 8601 text.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from producers.json_schemas import document_schema
from store.states import DocumentStatus

__all__ = [
    "BATCH_FORMS",
    "BatchAnswer",
    "BulkAnswer",
    "BulkRequest",
    "CallbackAck",
    "DocumentPage",
    "DocumentView",
    "ErrorAnswer",
    "FilterBody",
    "HealthAnswer",
    "NotificationPage",
    "OperatorAnswer",
    "OverviewAnswer",
    "ReasonBody",
    "RequiredReason",
    "ResendAnswer",
    "ResendRequest",
    "ReversalAnswer",
    "ReverseBody",
    "SubmitAnswer",
    "TenantView",
    "openapi_schemas",
]

_MONEY = r"^-?\d+(\.\d+)?$"

Money = Annotated[str, Field(pattern=_MONEY, description="exact decimal text", examples=["106.00"])]
Status = Annotated[DocumentStatus, Field(description="the document's state")]
Outcome = Literal["created", "new_revision", "unchanged", "invalid", "conflict"]


class _Answer(BaseModel):
    # Answers may gain members; clients ignore the ones they do not know.
    model_config = ConfigDict(extra="allow")


class Issue(_Answer):
    """One broken rule of a document."""

    path: str = Field(
        description="where: a field name, billDetail[i].field, or empty for the whole bill",
        examples=["billDetail[0].taxAmount"],
    )
    rule: str = Field(description="stable rule code (schemas.errors.RULES)", examples=["tax"])
    message: str = Field(description="what is wrong (English)")
    message_zh: str = Field(description="what is wrong (中文)")
    hint: str = Field(description="how to fix it (English)")
    hint_zh: str = Field("", description="how to fix it (中文), when given")


class ErrorDetail(_Answer):
    """A stable ``code`` and bilingual text."""

    code: str = Field(
        description="stable machine code, e.g. unauthorized, malformed_json, bad_shape, "
        "bad_batch, empty_batch, body_too_large, batch_too_large, bad_request, not_found, "
        "ambiguous_bill_no, not_replayable, not_allowed, changed_meanwhile, unavailable",
        examples=["not_found"],
    )
    message: str = Field(description="English text")
    message_zh: str = Field(description="中文说明")


class ErrorAnswer(_Answer):
    """Every refusal of a whole request. Some codes add members beside ``error``:
    ``limit_bytes`` (body_too_large), ``limit`` (batch_too_large), ``candidates`` and ``hint``
    (ambiguous_bill_no), ``current_status`` (not_replayable)."""

    error: ErrorDetail
    candidates: list[dict[str, Any]] | None = Field(
        None, description="ambiguous_bill_no: tenant, seller_tax_id, document_id, status of each"
    )
    hint: str | None = Field(None, description="ambiguous_bill_no: how to repeat the request")
    limit_bytes: int | None = Field(None, description="body_too_large: the body limit")
    limit: int | None = Field(None, description="batch_too_large: most documents per batch")
    current_status: str | None = Field(None, description="not_replayable: the document's state")
    issues: list[Issue] | None = Field(
        None, description="invalid_reversal: every broken rule (field, rule, what is left)"
    )


class Links(_Answer):
    self: str = Field(description="the document's view", examples=["/v1/documents/SO-1"])


class SubmitAnswer(_Answer):
    """What happened to one submitted document (the whole answer of a single submission).

    ``outcome``: ``created`` / ``new_revision`` (202, push owed), ``unchanged`` (200, identical
    content accepted before), ``invalid`` (422, ``issues`` lists every broken rule),
    ``conflict`` (409, different content while the bill is live)."""

    bill_no: str | None = Field(description="billNo as sent (null when unreadable)")
    outcome: Outcome
    status_code: int = Field(description="the HTTP status of this result", examples=[202])
    document_id: int | None = Field(description="the bridge's document id, once stored")
    status: Status | None = None
    tenant: str | None = None
    seller_tax_id: str | None = None
    revision: int | None = Field(None, description="1 for a new bill, +1 per accepted change")
    message: str | None = Field(None, description="conflict: why")
    issues: list[Issue] = Field(description="invalid: every broken rule; else empty")
    links: Links | None = Field(None, description="when stored")
    error: ErrorDetail | None = Field(
        None,
        description="single submissions only, outcome invalid (code invalid_document) "
        "or conflict (code revision_conflict)",
    )


class BatchItem(SubmitAnswer):
    index: int = Field(description="position in the submitted batch, from 0")


class BatchSummary(_Answer):
    """How many items had each outcome."""

    created: int
    new_revision: int
    unchanged: int
    invalid: int
    conflict: int


class BatchAnswer(_Answer):
    """A batch: 202 when every item was accepted or unchanged, else 207 (each
    ``results[i].status_code`` is the truth for item i)."""

    results: list[BatchItem]
    summary: BatchSummary
    count: int = Field(description="number of documents in the batch")


class InvoiceView(_Answer):
    merged: bool = Field(
        description="the invoice covers several bills (autoMerge=1, 合并开票): see bill_nos"
    )
    bill_nos: list[str] = Field(
        description="every bill the invoice covers, this one included (one unless merged)"
    )
    invoice_code: str | None = Field(description="发票代码 (empty for 数电)")
    invoice_num: str | None = Field(description="发票号码")
    order_no: str | None = Field(description="发票流水号")
    invoice_type: str | None
    invoice_status: str | None = Field(description="0 正常, 2 待开, 3 红冲, 6 作废")
    invoice_date: str | None = Field(description="yyyy-MM-dd")
    total_amount: Money | None
    total_tax_amount: Money | None
    include_tax_amount: Money | None
    issue_error_message: str | None
    invoice_property: int | None = Field(default=None, description="0 蓝票 blue, 1 红票 red")
    standing: Literal["normal", "partially_reversed", "reversed", "voided"] = Field(
        default="normal",
        description="after issuance: voided (作废), reversed (红冲) or partially reversed; "
        "only ever moves forward",
    )
    standing_changed_at: str | None = Field(default=None, description="when standing changed")
    can_red_amount: Money | None = Field(default=None, description="canRedAmount left")
    can_red_tax_amount: Money | None = Field(default=None, description="canRedTaxAmount left")
    original_invoice_code: str | None = Field(
        default=None, description="a red invoice: the blue invoice it reverses"
    )
    original_invoice_num: str | None = Field(
        default=None, description="a red invoice: the blue invoice it reverses"
    )
    reversed_by: list[dict[str, Any]] = Field(
        default_factory=list, description="red invoices known against this blue one"
    )
    files: dict[str, str] = Field(
        description="invoiceFileUrl, invoicePdfFileUrl, invoiceXmlFileUrl, invoiceImageUrl "
        "(those known)"
    )
    created_at: str


class RevisionRef(_Answer):
    revision: int
    document_id: int
    status: Status


class TransitionEntry(_Answer):
    at: str
    kind: Literal["transition"]
    event: str
    from_: str | None = Field(alias="from", description="the state left")
    to: str | None
    outcome: str
    actor: str | None
    reason: str | None
    attempt: int | None


class CloudCallEntry(_Answer):
    at: str
    kind: Literal["cloud_call"]
    interface: str = Field(examples=["BILL.PUSH"])
    outcome: str
    http_status: int | None
    error_code: str | None
    message: str | None
    attempt: int | None
    latency_ms: int | float | None
    request_id: str | None


class CallbackEntry(_Answer):
    at: str
    kind: Literal["callback"]
    inbox_id: int
    style: str
    state: str
    error: str | None


class InvoiceEntry(_Answer):
    at: str
    kind: Literal["invoice"]
    invoice_num: str | None
    invoice_code: str | None
    invoice_status: str | None
    issue_error_message: str | None


class InvoiceStandingEntry(_Answer):
    at: str
    kind: Literal["invoice_standing"]
    invoice_num: str | None
    invoice_code: str | None
    standing: str = Field(description="partially_reversed, reversed or voided")
    can_red_amount: Money | None


TimelineEntry = Annotated[
    TransitionEntry | CloudCallEntry | CallbackEntry | InvoiceEntry | InvoiceStandingEntry,
    Field(discriminator="kind"),
]


class OriginalRef(_Answer):
    bill_no: str
    document_id: int
    status: Status


class RedDocumentRef(_Answer):
    """A red-letter (红冲) document linked to its original."""

    bill_no: str
    document_id: int
    status: Status
    total_amount: Money | None = Field(description="negative")
    original_invoice_number: str | None = Field(description="the blue invoice it reverses")
    red_reason: str | None = Field(description="1 销货退回, 2 开票有误, 3 服务中止, 4 销售折让")


class ReversalItem(RedDocumentRef):
    outcome: Literal["created", "new_revision", "unchanged"]


class ReversalAnswer(_Answer):
    """``fapiao reverse`` / ``POST …/reverse``: the red documents of the request; ``outcome``
    ``unchanged`` when a repeat found them all made already."""

    original_bill_no: str
    original_document_id: int
    tenant: str
    outcome: Literal["created", "unchanged"]
    red_documents: list[ReversalItem]
    audit_id: int | None = Field(description="the operator_actions row (null for a repeat)")


class ReverseLine(_Answer):
    detailId: str = Field(description="the original's line (billDetail[].detailId)")
    amount: Money | None = Field(
        None,
        description="what to reverse on this line, on the original's includeTaxFlag basis "
        "(sign ignored); absent: all that is left on the line",
    )


class ReverseBody(_Answer):
    """Body of ``POST /v1/documents/{bill_no}/reverse``."""

    redReason: Literal["1", "2", "3", "4"] = Field(
        description="冲红原因: 1 销货退回, 2 开票有误, 3 服务中止, 4 销售折让"
    )
    redInfoBillNo: str | None = Field(
        None, description="红字确认单编号; required for 专票 (004, 028, 08xdp)"
    )
    lines: list[ReverseLine] | None = Field(
        None, description="lines and amounts to reverse; absent or empty: the whole document"
    )
    red_bill_no: str | None = Field(
        None, description="the red bill's billNo (one red bill only); default <bill_no>-R<k>"
    )
    reason: str | None = Field(None, description="kept in the audit trail")


class DocumentView(_Answer):
    """State, reason, invoices and one merged timeline of transitions, cloud calls, callbacks
    and invoices, oldest first."""

    document_id: int
    bill_no: str
    tenant: str
    seller_tax_id: str
    revision: int
    status: Status
    status_changed_at: str | None
    age_seconds: float | None = Field(description="seconds in the current state")
    invoice_type: str | None
    total_amount: Money | None
    total_incl_tax: Money | None
    issued_amount: Money | None
    last_error_code: str | None
    created_at: str
    reason: str | None = Field(description="why the document is in this state")
    last_error_message: str | None
    push_attempt: int
    next_attempt_at: str | None
    next_poll_at: str | None
    invoices: list[InvoiceView]
    revisions: list[RevisionRef]
    timeline: list[TimelineEntry]
    original: OriginalRef | None = Field(
        None, description="a red-letter (红冲) document: the document it reverses"
    )
    red_documents: list[RedDocumentRef] = Field(
        default_factory=list, description="the red-letter documents that reverse this one"
    )


class OperatorAnswer(_Answer):
    """Withdraw or replay: ``outcome`` ``unchanged`` when there was nothing to do."""

    document_id: int
    bill_no: str
    tenant: str
    from_status: Status
    status: Status
    outcome: Literal["applied", "unchanged"]


class ReasonBody(_Answer):
    """Optional body of withdraw and replay (an empty body is fine too)."""

    reason: str | None = Field(
        None, description="kept in the audit trail (first 500 characters)", examples=["客户取消"]
    )


class HealthCheck(_Answer):
    ok: bool
    detail: str
    hint: str | None = None
    latency_ms: float | None = None


class HealthAnswer(_Answer):
    status: Literal["ok", "unhealthy"]
    checks: dict[str, HealthCheck] = Field(description="database, and redis when configured")


class CallbackAck(_Answer):
    """Kingdee's expected acknowledgement."""

    success: bool = Field(examples=[True])
    code: str = Field(examples=["0"])
    errorCode: str = Field(examples=["0"])
    message: str = Field(examples=["success"])


# ---------------------------------------------------------------- operator routes

Seconds = Annotated[float | None, Field(description="seconds (None when unknown)")]


class DocumentListItem(_Answer):
    """One current document in the operator's list."""

    id: int
    bill_no: str
    tenant: str
    seller_tax_id: str
    buyer_name: str | None = Field(description="buyerName of the document")
    status: Status
    age_seconds: Seconds = Field(description="how long it has been in its state")
    reason: str | None = Field(description="why it is in its state, in plain words")
    last_error_code: str | None
    total_incl_tax: Money | None = Field(description="价税合计")
    status_changed_at: str
    updated_at: str
    revision: int


class DocumentPage(_Answer):
    """A page of ``GET /v1/documents``, oldest in its state first."""

    items: list[DocumentListItem]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null on the last page"
    )


_STATUS_HELP = (
    "states (repeatable or comma-separated); replay: failed, rejected; withdraw: draft, "
    "pushed, invoice_failed, failed (withdrawing, withdrawn: unchanged)"
)


class FilterBody(BaseModel):
    """The list's filters, plus ``bill_nos``; every criterion given must match."""

    model_config = ConfigDict(extra="forbid")

    status: list[str] | None = Field(None, description=_STATUS_HELP, examples=[["failed"]])
    tenant: str | None = None
    seller: str | None = Field(None, description="销方税号")
    older_than: str | None = Field(
        None, description="in its state at least this long: 90s, 30m, 2h, 7d or seconds"
    )
    updated_since: str | None = Field(None, description="ISO 8601; no offset means UTC")
    q: str | None = Field(None, description="bill number or buyer name contains (any case)")
    error_code: str | None = Field(None, description="the last errorCode")
    bill_nos: list[str] | None = Field(None, description="only these bill numbers")


class BulkRequest(BaseModel):
    """Body of ``POST /v1/operations/replay`` and ``/withdraw``."""

    model_config = ConfigDict(extra="forbid")

    filter: FilterBody = Field(default_factory=FilterBody)
    dry_run: bool = Field(False, description="answer what a real run would do; change nothing")
    reason: str = Field(
        min_length=1, max_length=500, description="why (audit trail)", examples=["客户已更正"]
    )
    limit: int | None = Field(None, ge=1, description="at most this many, oldest first")


class BulkDocument(_Answer):
    document_id: int
    bill_no: str
    tenant: str
    seller_tax_id: str
    status: Status = Field(description="the state before the action")
    outcome: Literal[
        "replayed",
        "not_replayable",
        "withdrawn",
        "withdrawal_owed",
        "unchanged",
        "not_allowed",
        "changed_meanwhile",
    ]
    to_status: Status = Field(description="the state after (predicted on a dry run)")


class BulkAnswer(_Answer):
    dry_run: bool
    action: Literal["replay", "withdraw"]
    count: int = Field(description="documents selected")
    changed: int = Field(description="documents the action changes (or would)")
    documents: list[BulkDocument]
    audit_id: int | None = Field(description="operator_actions row; null on a dry run")


class NotificationItem(_Answer):
    id: int
    document_id: int
    bill_no: str
    tenant: str
    event: str = Field(examples=["document.invoiced"])
    state: Literal["pending", "delivered", "parked"]
    attempts: int
    last_error: str | None
    created_at: str
    updated_at: str
    delivered_at: str | None
    next_attempt_at: str | None


class NotificationPage(_Answer):
    items: list[NotificationItem]
    next_cursor: str | None


class ResendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[int] = Field(min_length=1, max_length=500, description="outbox ids")
    reason: str = Field(min_length=1, max_length=500, description="why (audit trail)")


class ResendItem(_Answer):
    id: int
    bill_no: str | None
    tenant: str | None
    was: Literal["pending", "delivered", "parked"] | None
    outcome: Literal["requeued", "already_pending", "delivered", "not_found"]


class ResendAnswer(_Answer):
    count: int = Field(description="notifications put back to pending")
    notifications: list[ResendItem]
    audit_id: int


class RequiredReason(BaseModel):
    """Body of tenant pause/resume."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, description="why (audit trail)")


class QuotaSeller(_Answer):
    """The credit quota (授信额度) the cloud last reported for one seller of the tenant."""

    seller_tax_id: str
    day_surplus: Money | None = Field(description="daySurplusLimit, yuan incl. tax")
    month_surplus: Money | None = Field(description="monthSurplusLimit, yuan incl. tax")
    is_warning: bool = Field(description="isWarning (kept until the Asia/Shanghai day turns)")
    issue_biz_type: str | None
    biz_type: str | None
    observed_at: str | None
    observed_on: str | None = Field(description="the Asia/Shanghai day of the answer")
    source: str | None = Field(description="callback, issuance_error or operator_resume")
    held: bool = Field(description="pushes for this seller wait (documents stay draft)")
    hold_reason: str | None
    held_until: str | None


class TenantQuota(_Answer):
    warning: bool
    held: bool
    sellers: list[QuotaSeller]


class TenantView(_Answer):
    name: str
    base_url: str
    business_system_code: str
    callback_style: Literal["per_invoice", "per_bill"]
    seller_tax_ids: list[str]
    auto_invoice: bool
    rate_limit_per_second: float
    erp_webhook: bool
    paused: bool
    paused_reason: str | None
    paused_at: str | None
    token_health: Literal["ok", "expiring", "expired", "absent", "unknown"]
    quota: TenantQuota | None = Field(
        description="the credit quota (授信额度) per seller; null: the cloud reported none yet"
    )


class OverviewCell(_Answer):
    status: Status
    tenant: str
    count: int
    oldest_age_seconds: Seconds
    stuck_count: int = Field(description="documents past FAPIAO_STUCK_ALERT__<STATE>")


class Attention(_Answer):
    stuck: int
    failed: int
    rejected: int
    in_doubt: int
    invoice_failed: int
    paused_tenants: list[str]
    parked_notifications: int


class OverviewAnswer(_Answer):
    generated_at: str
    states: list[OverviewCell]
    attention: Attention
    callbacks: dict[str, int] = Field(description="callback inbox rows by state")


_DOCUMENT_REF: Final = {"$ref": "#/components/schemas/ErpDocument"}

BATCH_FORMS: Final[dict[str, Any]] = {
    "oneOf": [
        _DOCUMENT_REF,
        {
            "title": "batch (array)",
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": _DOCUMENT_REF,
        },
        {
            "title": "batch (object)",
            "type": "object",
            "required": ["documents"],
            "additionalProperties": False,
            "properties": {
                "documents": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": _DOCUMENT_REF,
                }
            },
        },
    ]
}
"""The body of POST /v1/documents: one document, an array, or ``{"documents": [...]}``."""


def openapi_schemas() -> dict[str, dict[str, Any]]:
    """``ErpDocument``, ``ErpBillDetail`` and ``ReasonBody`` for ``components/schemas``: the
    document JSON
    Schema with its ``$defs`` lifted out (a ``#/$defs`` reference would not resolve inside
    the OpenAPI document) and its standalone ``$schema``/``$id`` dropped."""
    schema = document_schema()
    detail = schema.pop("$defs")["billDetail"]
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    return {
        "ErpDocument": _relink(schema),
        "ErpBillDetail": _relink(detail),
        # Named by withdraw/replay's openapi_extra (their bodies are read raw, not by a model).
        "ReasonBody": ReasonBody.model_json_schema(),
        "ReverseBody": _lift(ReverseBody.model_json_schema()),
    }


def _lift(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON Schema with its ``$defs`` inlined (one level, as ReverseBody has)."""
    defs = schema.pop("$defs", {})

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            ref = value.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    lifted: dict[str, Any] = walk(schema)
    return lifted


def _relink(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("$ref") == "#/$defs/billDetail":
            return {**value, "$ref": "#/components/schemas/ErpBillDetail"}
        return {key: _relink(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_relink(item) for item in value]
    return value
