"""Every guessed part of the Kingdee Invoice Cloud contract, in one place.

docs/CLOUD-CONTRACT.md tags facts [C] confirmed in code, [D] documented, [I] inferred, [G] guess.
Whatever is not [C]/[D] and shapes behaviour lives here, so that when a real tenant (or the
official error-code list doc-3746910) shows otherwise, ONE edit of this module changes the
bridge and the simulator together. Nothing here does I/O.

Guess table (§ = docs/CLOUD-CONTRACT.md section; tag = confidence of the fact behind it)

| name here | what it decides | § | tag |
|---|---|---|---|
| ``GATEWAY_ERRORS`` | gateway errorCodes, texts, outcome class | 6.3 | [G]; -10001 [D] |
| ``classify_gateway_failure`` | failure → ``OutcomeClass`` for the worker | 6.3, 5 | [I] |
| ``classify_http_status`` | non-200 HTTP answers of the gateway | 2.1 | [I] |
| ``token_failure_body``, ``TOKEN_FAILURE_*`` | getAppToken/login failure shape | 3 | [G] |
| ``expired_token_body``, ``TOKEN_EXPIRED_*`` | expired access_token on /kapi | 5 | [G] |
| ``is_auth_failure`` | auth failure detection (HTTP/code/text) | 5 | [I] |
| ``未进行接口授权`` → auth failure | guide 常见报错2 shows it for an expired token | 6.3 | [D][I] |
| ``PUSH_SUCCESS_MESSAGE`` | text of an accepted BILL.PUSH | 6.2 | [C] |
| ``PushResultItem``, ``PUSH_ITEM_OK_MESSAGE`` | ``data`` of a push success (unused) | 6.2 | [G] |
| ``PUSH_MAX_BILLS`` | BILL.PUSH batch limit (mirrors withdraw) | 6.1 | [G] |
| ``WITHDRAW_*``, ``WithdrawItemResult`` | per-bill withdraw results and texts | 7 | [G] |
| ``WITHDRAW_MAX_SERIAL_NOS`` | at most 50 billNos per withdraw | 7 | [D] |
| ``QUERY_UNKNOWN_BILL_*``, ``is_unknown_bill`` | query of a bill the cloud lacks | 8 | [G] |
| ``UNKNOWN_INTERFACE_*`` | unknown interfaceCode (-10010) | 12 | [G] |
| ``BillReturn`` | 5.1.01 回退 payload (BILL.RETURN) | 9.3 | [G] |
| ``CALLBACK_RETRY_DELAYS_SECONDS``, ``..._TIMEOUT_...`` | cloud re-sends of callbacks | 9.1 | [G] |
| ``callback_style_for`` | ``3std1`` prefix → per bill, else per invoice | 9 | [D] |
| ``max_lines_per_invoice``, ``SINGLE_INVOICE_...`` | when the cloud splits a bill | 12 | [G] |
| ``DIALECT_SWITCHES``, ``Dialect`` | [G] parts with several plausible wire shapes | many | [G] |
| ``expired_token_answer`` | the expired-token answer under each dialect | 5 | [G]/[D] |
| ``ErrorCode``, ``failure_body``, texts | named codes, wire texts of the simulator | 6.3 | [G] |
| ``-10013``…``-10015``, ``RED_*`` | a red bill's reference to its blue invoice | 6.1, 8 | [G] |
| ``INVOICE_STATUS_*`` | invoiceStatus after 作废 / 红冲 (2: 部分红冲?) | 9.1, 10.2 | [D]/[G] |
| ``QUOTA_*``, ``BIZ_CONTROL_*`` | 授信额度 (bizControl) of the simulator | 9.1, 15 | [G] |
| ``CLOUD_RED_BILL_NO_TEMPLATE`` | billNo of a 红冲单 a clerk makes in the cloud | 10.3, 15 | [G] |

Outcome classes (``OutcomeClass``) — what the worker does with a gateway answer

| class | meaning → worker action |
|---|---|
| ``accepted`` | success (开票申请单推送成功) → document pushed |
| ``rejected`` | the cloud refused the content → rejected, needs corrected data |
| ``auth_expired`` | token missing/expired → re-login, retry once; a repeat = ``config_error`` |
| ``config_error`` | businessSystemCode/seller/encryption/permission → failed, tenant paused |
| ``transient`` | cloud-side exception, nothing created → capped jittered backoff |
| ``unknown_outcome`` | may or may not have been applied → in_doubt, a query decides |
| ``duplicate`` | billNo already live in the cloud → query it, never re-push |

Gateway error table (``GATEWAY_ERRORS``; codes are guesses except ``-10001``)

| errorCode | message | class |
|---|---|---|
| ``-10001`` | 未知业务系统编码<code> | config_error |
| ``-10002`` | 未进行接口授权 | auth_expired (see note) |
| ``401`` | access_token已过期或无效，请重新获取 | auth_expired |
| ``403`` | 无权访问，请重新获取access_token | auth_expired |
| ``-10003`` | data解密失败 | config_error (BASE64 vs AES setting) |
| ``-10004`` | <field>不能为空 | rejected |
| ``-10005`` | 销方税号<x>未在发票云维护 | config_error |
| ``-10006`` | <field>不合法 (发票种类/税率/税收分类编码) | rejected |
| ``-10007`` | 价税合计金额不对 | rejected |
| ``-10008`` | 第<n>行税额误差超过±0.06 | rejected |
| ``-10009`` | 单据编号<billNo>已存在 | duplicate |
| ``-10010`` | 接口编码不存在 | config_error |
| ``-10011`` | 单据不存在 | rejected (query: see ``is_unknown_bill``) |
| ``-10012`` | <the withdraw refusal text> | rejected (dialect ``withdraw_refusal=envelope``) |
| ``-10013`` | 原蓝票<number>不存在 | rejected (red bill: no such blue invoice here) |
| ``-10014`` | 原蓝票<number>已作废，不允许红冲 | rejected |
| ``-10015`` | 红冲金额超过可红冲金额(可红冲金额<n>) | rejected |
| ``9999`` | 系统异常 | transient |

Unknown codes fall back to the message text (auth markers, 已存在/重复, 系统异常/繁忙/超时),
else ``rejected``: the cloud answered, so nothing was created.

Note on ``-10002`` (docs/CLOUD-CONTRACT.md §6.3): 未进行接口授权 reads as a permission error,
but the vendor's integration guide (常见报错2) shows the very same text when the access_token
has expired. The only safe reading is "refresh the token and retry once"; if it survives a
fresh token the worker treats it as a configuration error (docs/ARCHITECTURE.md, retry
policy: an auth error that survives one refresh pauses the tenant).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "ACCOUNT_TEXT_MARKER",
    "AUTH_FAILURE_ERROR_CODES",
    "AUTH_FAILURE_MARKERS",
    "BILL_LABEL",
    "BIZ_CONTROL_BIZ_TYPE",
    "BIZ_CONTROL_ISSUE_BIZ_TYPE",
    "BUSINESS_SYSTEM_TEXT_MARKER",
    "CALLBACK_RETRY_DELAYS_SECONDS",
    "CALLBACK_TIMEOUT_SECONDS",
    "CLOUD_RED_BILL_NO_TEMPLATE",
    "DEFAULT_RETURN_REASON",
    "DIALECT_SWITCHES",
    "DIGITAL_INVOICE_TYPES",
    "FIELD_LABELS",
    "FILE_NOT_FOUND_MESSAGE",
    "GATEWAY_ERRORS",
    "GOODS_SHORT_NAMES",
    "GOODS_SHORT_NAME_DEFAULT",
    "INVOICE_STATUS_NORMAL",
    "INVOICE_STATUS_PARTIAL_RED",
    "INVOICE_STATUS_RED",
    "INVOICE_STATUS_VOID",
    "INVOICE_TAX_TOLERANCE",
    "ISSUE_ERROR_MESSAGES",
    "MAX_LINES_PER_INVOICE_DIGITAL",
    "MAX_LINES_PER_INVOICE_TAX_CONTROL",
    "NOT_AUTHORISED_TEXT_MARKER",
    "NOT_JSON_ERROR_CODE",
    "NOT_JSON_MESSAGE",
    "PER_BILL_CALLBACK_PREFIX",
    "PUSH_BATCH_LABEL_TEMPLATE",
    "PUSH_ITEM_OK_MESSAGE",
    "PUSH_MAX_BILLS",
    "PUSH_SUCCESS_MESSAGE",
    "QUERY_OK_MESSAGE",
    "QUERY_UNKNOWN_BILL_ERROR_CODE",
    "QUERY_UNKNOWN_BILL_MESSAGE",
    "QUOTA_ISSUE_ERROR_MESSAGE",
    "QUOTA_TIMEZONE",
    "QUOTA_WARNING_RATIO",
    "RED_INVOICE_PROPERTY",
    "RED_NEEDS_RED_INFO_TYPES",
    "RED_REASONS",
    "REQUEST_BODY_LABEL",
    "ROW_LABEL_TEMPLATE",
    "SELLER_UNKNOWN_TEXT_MARKER",
    "SINGLE_INVOICE_AMOUNT_LIMIT",
    "SUCCESS_ERROR_CODES",
    "TOKEN_EXPIRED_ERROR_CODE",
    "TOKEN_EXPIRED_MESSAGE",
    "TOKEN_FAILURE_BAD_ACCOUNT",
    "TOKEN_FAILURE_BAD_APP",
    "TOKEN_FAILURE_BAD_LOGIN",
    "UNDECODABLE_TEXT_MARKER",
    "UNKNOWN_INTERFACE_ERROR_CODE",
    "UNKNOWN_INTERFACE_MESSAGE",
    "UNLIMITED_DAY_SURPLUS",
    "UNLIMITED_MONTH_SURPLUS",
    "VOID_DEFAULT_REASON",
    "WITHDRAW_ALREADY_ISSUED",
    "WITHDRAW_ALREADY_WITHDRAWN",
    "WITHDRAW_BILL_UNKNOWN",
    "WITHDRAW_ISSUING",
    "WITHDRAW_MAX_SERIAL_NOS",
    "WITHDRAW_OK_MESSAGE",
    "WITHDRAW_REFUSAL_MARKER",
    "BillReturn",
    "CallbackStyle",
    "Dialect",
    "DialectError",
    "ErrorCode",
    "GatewayError",
    "OutcomeClass",
    "PushResultItem",
    "TokenFailure",
    "WithdrawItemResult",
    "callback_style_for",
    "classify_gateway_failure",
    "classify_http_status",
    "expired_token_answer",
    "expired_token_body",
    "failure_body",
    "gateway_error",
    "is_auth_failure",
    "is_unknown_bill",
    "max_lines_per_invoice",
    "normalise_code",
    "token_failure_body",
]


class OutcomeClass(StrEnum):
    """What a gateway answer means for the worker (table in the module docstring)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    AUTH_EXPIRED = "auth_expired"
    CONFIG_ERROR = "config_error"
    TRANSIENT = "transient"
    UNKNOWN_OUTCOME = "unknown_outcome"
    DUPLICATE = "duplicate"


CallbackStyle = Literal["per_invoice", "per_bill", "return"]

# errorCode values meaning success: "0" on the sim APIs, "0000" on some older pages [D S2,S6].
SUCCESS_ERROR_CODES: Final[frozenset[str]] = frozenset({"0", "0000"})


def normalise_code(code: object) -> str | None:
    """errorCode/returnCode as a stripped string; numbers arrive as JSON numbers too."""
    if code is None:
        return None
    if isinstance(code, bool):
        return str(code).lower()
    text = str(code).strip()
    return text or None


# --------------------------------------------------------------------------- gateway errors


@dataclass(frozen=True, slots=True)
class GatewayError:
    """One row of the §6.3 table: the simulator sends it, the worker classifies it."""

    code: str
    message_template: str
    outcome: OutcomeClass
    situation: str

    def message(self, **values: object) -> str:
        """The message text with its placeholders filled (missing ones left empty)."""
        return self.message_template.format_map(_Blank(values))


class _Blank(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return ""


GATEWAY_ERRORS: Final[tuple[GatewayError, ...]] = (
    GatewayError(
        "-10001", "未知业务系统编码{code}", OutcomeClass.CONFIG_ERROR, "unknown businessSystemCode"
    ),
    GatewayError(
        "-10002",
        "未进行接口授权",
        OutcomeClass.AUTH_EXPIRED,
        "no interface permission — or an expired access_token (vendor guide 常见报错2)",
    ),
    GatewayError(
        "401",
        "access_token已过期或无效，请重新获取",
        OutcomeClass.AUTH_EXPIRED,
        "access_token missing, expired or invalid",
    ),
    GatewayError("403", "无权访问，请重新获取access_token", OutcomeClass.AUTH_EXPIRED, "forbidden"),
    GatewayError(
        "-10003",
        "data解密失败",
        OutcomeClass.CONFIG_ERROR,
        "data not decodable (BASE64 vs AES setting of the businessSystemCode)",
    ),
    GatewayError("-10004", "{field}不能为空", OutcomeClass.REJECTED, "required field missing"),
    GatewayError(
        "-10005",
        "销方税号{tax_id}未在发票云维护",
        OutcomeClass.CONFIG_ERROR,
        "seller tax id / org not configured in the cloud",
    ),
    GatewayError(
        "-10006",
        "{field}不合法",
        OutcomeClass.REJECTED,
        "invalid invoiceType / taxRate / revenueCode",
    ),
    GatewayError(
        "-10007", "价税合计金额不对", OutcomeClass.REJECTED, "totalAmount differs from the lines"
    ),
    GatewayError(
        "-10008",
        "第{row}行税额误差超过±0.06",
        OutcomeClass.REJECTED,
        "line tax differs from amount × rate by more than 0.06",
    ),
    GatewayError(
        "-10009",
        "单据编号{bill_no}已存在",
        OutcomeClass.DUPLICATE,
        "billNo already live in the cloud",
    ),
    GatewayError("-10010", "接口编码不存在", OutcomeClass.CONFIG_ERROR, "unknown interfaceCode"),
    GatewayError(
        "-10011", "单据不存在", OutcomeClass.REJECTED, "bill unknown to the cloud (query/withdraw)"
    ),
    GatewayError(
        "-10012",
        "{reason}",
        OutcomeClass.REJECTED,
        "BILL.WITHDRAW refused for the only/all bill(s), at the envelope level"
        " (dialect withdraw_refusal=envelope); the text is the per-bill reason",
    ),
    GatewayError(
        "-10013",
        "原蓝票{number}不存在",
        OutcomeClass.REJECTED,
        "red bill: no issued blue invoice with originalInvoiceCode/Number in this tenant",
    ),
    GatewayError(
        "-10014",
        "原蓝票{number}已作废，不允许红冲",
        OutcomeClass.REJECTED,
        "red bill: the blue invoice it reverses was voided (作废)",
    ),
    GatewayError(
        "-10015",
        "红冲金额超过可红冲金额(可红冲金额{available})",
        OutcomeClass.REJECTED,
        "red bill: its amount (excl. tax) or tax exceeds the blue invoice's"
        " canRedAmount/canRedTaxAmount",
    ),
    GatewayError("9999", "系统异常", OutcomeClass.TRANSIENT, "cloud-side exception"),
)

_ERRORS_BY_CODE: Final[dict[str, GatewayError]] = {e.code: e for e in GATEWAY_ERRORS}


def gateway_error(code: str) -> GatewayError:
    """The table row for ``code``; KeyError for a code not in the table."""
    return _ERRORS_BY_CODE[code]


UNKNOWN_INTERFACE_ERROR_CODE: Final = "-10010"
UNKNOWN_INTERFACE_MESSAGE: Final = "接口编码不存在"

# --------------------------------------------------------------------------- auth failures

TOKEN_EXPIRED_ERROR_CODE: Final = "401"
TOKEN_EXPIRED_MESSAGE: Final = "access_token已过期或无效，请重新获取"
AUTH_FAILURE_ERROR_CODES: Final[frozenset[str]] = frozenset({"401", "403"})
# Lower-case substrings; "未进行接口授权" is what the vendor guide shows for an expired token.
AUTH_FAILURE_MARKERS: Final[tuple[str, ...]] = ("token", "登录", "过期", "失效", "未进行接口授权")


def expired_token_body() -> dict[str, Any]:
    """The §5 proposal: HTTP 200 with a failure envelope naming the token [G]."""
    return {
        "success": False,
        "errorCode": TOKEN_EXPIRED_ERROR_CODE,
        "message": TOKEN_EXPIRED_MESSAGE,
        "data": None,
    }


def expired_token_answer(reading: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of a missing/expired access_token under dialect ``expired_token``.

    ``invented_401``: §5's proposal [G]; ``unauthorized_text``: the vendor guide's 常见报错2,
    ``-10002`` 未进行接口授权 [D]; ``http_401``: an infrastructure 401 (§2.1 [I]) whose body
    repeats the §5 proposal.
    """
    if reading == "unauthorized_text":
        return 200, failure_body(ErrorCode.NOT_AUTHORISED)
    if reading == "http_401":
        return 401, expired_token_body()
    return 200, expired_token_body()


def is_auth_failure(http_status: int | None, errorCode: object, message: str | None) -> bool:
    """§5 middleware rule: HTTP 401/403, errorCode 401/403, or a message about the token/login."""
    if http_status in (401, 403):
        return True
    if normalise_code(errorCode) in AUTH_FAILURE_ERROR_CODES:
        return True
    text = (message or "").lower()
    return any(marker in text for marker in AUTH_FAILURE_MARKERS)


@dataclass(frozen=True, slots=True)
class TokenFailure:
    """A getAppToken.do / login.do refusal the simulator sends (codes and texts invented)."""

    code: str
    text: str


TOKEN_FAILURE_BAD_ACCOUNT: Final = TokenFailure("accountId_error", "数据中心不存在")
TOKEN_FAILURE_BAD_APP: Final = TokenFailure("appSecret_error", "第三方应用校验失败")
TOKEN_FAILURE_BAD_LOGIN: Final = TokenFailure(
    "login_error", "参数错误:形式应该为 用户账号、密码、租户代码、登陆类型和accountId。"
)


def token_failure_body(failure: TokenFailure, token_field: str = "app_token") -> dict[str, Any]:
    """§3 proposed failure shape: every field a real client may read carries the reason [G]."""
    return {
        "state": "error",
        "status": False,
        "errorCode": failure.code,
        "errorMsg": failure.text,
        "message": failure.text,
        "data": {
            token_field: "",
            "success": False,
            "error_code": failure.code,
            "error_desc": failure.text,
            "expire_time": 0,
        },
    }


# --------------------------------------------------------------------------- classification

_DUPLICATE_MARKERS: Final = ("已存在", "重复")
_TRANSIENT_MARKERS: Final = ("系统异常", "系统繁忙", "稍后重试", "超时")


def classify_gateway_failure(errorCode: object, message: str | None) -> OutcomeClass:
    """Map a failure answer (HTTP 200, ``success`` not true) to what the worker must do.

    Known codes win; an unknown code falls back to the message, and a plain refusal with
    nothing recognisable is ``rejected``: the cloud answered, so nothing was created, and an
    operator can replay once the cause is known.
    """
    code = normalise_code(errorCode)
    if code is not None and code in _ERRORS_BY_CODE:
        return _ERRORS_BY_CODE[code].outcome
    text = message or ""
    if is_auth_failure(None, code, text):
        return OutcomeClass.AUTH_EXPIRED
    if any(m in text for m in _DUPLICATE_MARKERS):
        return OutcomeClass.DUPLICATE
    if "未知业务系统编码" in text or "未在发票云维护" in text:
        return OutcomeClass.CONFIG_ERROR
    if any(m in text for m in _TRANSIENT_MARKERS):
        return OutcomeClass.TRANSIENT
    return OutcomeClass.REJECTED


def classify_http_status(http_status: int) -> OutcomeClass | None:
    """Non-200 answers are infrastructure, not the cloud's verdict (§2.1).

    None for 200 (read the envelope). 5xx after the request was sent is ``unknown_outcome``:
    a proxy may time out while the cloud still creates the bill.
    """
    if http_status == 200:
        return None
    if http_status in (401, 403):
        return OutcomeClass.AUTH_EXPIRED
    if http_status in (408, 425, 429):
        return OutcomeClass.TRANSIENT
    if http_status >= 500:
        return OutcomeClass.UNKNOWN_OUTCOME
    # 404 (wrong base URL / tenant path), 405, 400 on the envelope itself, redirects.
    return OutcomeClass.CONFIG_ERROR


# --------------------------------------------------------------------------- BILL.PUSH

PUSH_SUCCESS_MESSAGE: Final = "开票申请单推送成功"
PUSH_ITEM_OK_MESSAGE: Final = "推送成功"
PUSH_MAX_BILLS: Final = 50


def _text(value: object) -> object:
    return "" if value is None else (str(value) if isinstance(value, int | Decimal) else value)


WireText = Annotated[str, BeforeValidator(_text)]


class PushResultItem(BaseModel):
    """One element of a BILL.PUSH success ``data`` [G]; the bridge must not depend on it."""

    model_config = ConfigDict(extra="allow")

    billNo: WireText
    success: bool
    message: WireText = ""


# --------------------------------------------------------------------------- BILL.WITHDRAW

WITHDRAW_MAX_SERIAL_NOS: Final = 50  # [D S5]
WITHDRAW_OK_MESSAGE: Final = "撤回成功"
WITHDRAW_BILL_UNKNOWN: Final = "单据不存在"
WITHDRAW_ALREADY_ISSUED: Final = "单据已开票，不允许撤回"
WITHDRAW_ISSUING: Final = "单据开票中，不允许撤回"
WITHDRAW_ALREADY_WITHDRAWN: Final = "单据已撤回"
# The part every "will not withdraw" reason shares (已开票 / 开票中 …, §7 [G]).
WITHDRAW_REFUSAL_MARKER: Final = "不允许撤回"


class WithdrawItemResult(BaseModel):
    """Per-bill result of BILL.WITHDRAW (§7 [G]); top-level success=false only for the envelope."""

    model_config = ConfigDict(extra="allow")

    serialNo: WireText
    success: bool
    message: WireText = ""

    @property
    def already_withdrawn(self) -> bool:
        """A refusal that still means the bill is gone from the cloud."""
        return not self.success and WITHDRAW_ALREADY_WITHDRAWN in self.message


# --------------------------------------------------------------------------- BILL.INVOICE.QUERY

QUERY_UNKNOWN_BILL_ERROR_CODE: Final = "-10011"
QUERY_UNKNOWN_BILL_MESSAGE: Final = "单据不存在"


def is_unknown_bill(errorCode: object, message: str | None) -> bool:
    """A query failure saying the cloud has no such bill (§8: success:false 单据不存在 [G]).

    Matches the text as well as the invented code, because the real code is unknown.
    """
    if normalise_code(errorCode) == QUERY_UNKNOWN_BILL_ERROR_CODE:
        return True
    return QUERY_UNKNOWN_BILL_MESSAGE in (message or "")


# --------------------------------------------------------------------------- callbacks


class BillReturn(BaseModel):
    """Payload of the 5.1.01 回退 callback, interfaceCode BILL.RETURN (§9.3 [G])."""

    model_config = ConfigDict(extra="allow")

    billNo: WireText = Field(min_length=1)
    sellerTaxpayerId: WireText = ""
    reason: WireText = ""


# The cloud's re-send schedule for unacknowledged callbacks is undocumented (§9.1 [G]).
CALLBACK_RETRY_DELAYS_SECONDS: Final[tuple[int, ...]] = (60, 300, 900, 3600, 21600)
CALLBACK_TIMEOUT_SECONDS: Final = 5.0

PER_BILL_CALLBACK_PREFIX: Final = "3std1"


def callback_style_for(business_system_code: str) -> Literal["per_invoice", "per_bill"]:
    """5.1.03 按单回调 when the businessSystemCode starts with ``3std1``, else 5.1.02 按票 (§9)."""
    if business_system_code.strip().startswith(PER_BILL_CALLBACK_PREFIX):
        return "per_bill"
    return "per_invoice"


# --------------------------------------------------------------------------- splitting

# Σ(line tax − round(amount × rate, 2)) of one invoice must stay within this (§11 [C S19]).
INVOICE_TAX_TOLERANCE: Final = Decimal("1.27")

DIGITAL_INVOICE_TYPES: Final[frozenset[str]] = frozenset({"08xdp", "10xdp"})
MAX_LINES_PER_INVOICE_TAX_CONTROL: Final = 8
MAX_LINES_PER_INVOICE_DIGITAL: Final = 2000
# Per-invoice amount limit (限额) is tenant-specific; None = split on line count only.
SINGLE_INVOICE_AMOUNT_LIMIT: Final[Decimal | None] = None


def max_lines_per_invoice(invoice_type: str) -> int:
    """Line count above which the cloud splits a bill (§12 [G]): 2000 for 数电, else 8."""
    if invoice_type in DIGITAL_INVOICE_TYPES:
        return MAX_LINES_PER_INVOICE_DIGITAL
    return MAX_LINES_PER_INVOICE_TAX_CONTROL


# --------------------------------------------------------------------------- wire texts
# Texts the simulated cloud writes that are not in ``GATEWAY_ERRORS``; kept here so that
# tests/unit/test_cloud_contract_literals.py can hold every contract text in one module.

QUERY_OK_MESSAGE: Final = "查询成功"  # [G] message of a successful BILL.INVOICE.QUERY
NOT_JSON_MESSAGE: Final = "请求报文不是合法的JSON"  # [G] HTTP 400 for a body that is not JSON
NOT_JSON_ERROR_CODE: Final = "400"  # [G] errorCode of that HTTP 400 answer
REQUEST_BODY_LABEL: Final = "请求报文"  # field name in -10004 when the envelope is no object
BILL_LABEL: Final = "单据"  # field name in -10006 when no better field is known
FILE_NOT_FOUND_MESSAGE: Final = "文件不存在"  # [G] invoice file URL of an unknown orderNo
ROW_LABEL_TEMPLATE: Final = "第{row}行"  # prefix naming a 1-based line in -10004/-10006
PUSH_BATCH_LABEL_TEMPLATE: Final = "单次推送单据数量(最多{limit}张)"  # -10006 on a batch > limit
FIELD_LABELS: Final[Mapping[str, str]] = {
    "invoiceType": "发票种类",
    "taxRate": "税率",
    "revenueCode": "税收分类编码",
}
QUOTA_ISSUE_ERROR_MESSAGE: Final = "授信额度不足"  # [G] issuance refused by the quota (§12)
# Texts seen in Kingdee's 待开单据 list and integrators' logs for failed issuance (§12 [G]).
ISSUE_ERROR_MESSAGES: Final[tuple[str, ...]] = (
    "税局登录失效，请重新登录电子税务局",
    QUOTA_ISSUE_ERROR_MESSAGE,
    "税控设备离线",
    "发票领用存不足",
    "购方税号校验不通过",
    "开票超时，请稍后重试",
)
DEFAULT_RETURN_REASON: Final = "开票信息有误，退回上游修改"  # [G] 5.1.01 回退 reason
# The *简称* the cloud prefixes to goods names, by revenue code prefix (§8 goodsName [D]; the
# table itself is [G]: the real one is the tax bureau's 商品和服务税收分类编码表).
GOODS_SHORT_NAMES: Final[tuple[tuple[str, str], ...]] = (
    ("304", "信息技术服务"),
    ("3", "现代服务"),
    ("1090", "计算机配套产品"),
    ("109", "电子设备"),
    ("103", "食品"),
)
GOODS_SHORT_NAME_DEFAULT: Final = "货物"


class ErrorCode(StrEnum):
    """The errorCodes of ``GATEWAY_ERRORS`` by name (all [G] but ``-10001`` [D])."""

    UNKNOWN_BUSINESS_SYSTEM = "-10001"
    NOT_AUTHORISED = "-10002"
    TOKEN_EXPIRED = "401"
    FORBIDDEN = "403"
    DATA_UNDECODABLE = "-10003"
    REQUIRED = "-10004"
    SELLER_UNKNOWN = "-10005"
    INVALID = "-10006"
    TOTAL_MISMATCH = "-10007"
    LINE_TAX = "-10008"
    DUPLICATE = "-10009"
    UNKNOWN_INTERFACE = "-10010"
    BILL_UNKNOWN = "-10011"
    WITHDRAW_REFUSED = "-10012"
    ORIGINAL_UNKNOWN = "-10013"
    ORIGINAL_VOIDED = "-10014"
    RED_OVER_LIMIT = "-10015"
    SYSTEM_ERROR = "9999"


def failure_body(error_code: str, /, **values: object) -> dict[str, Any]:
    """The §6.3 failure envelope for ``error_code`` with its message placeholders filled."""
    return {
        "success": False,
        "errorCode": str(error_code),
        "message": gateway_error(str(error_code)).message(**values),
        "data": None,
    }


# --------------------------------------------------------------------------- after issuance
# 作废 (void), 红冲 (red-letter) and the 授信额度 (credit quota) as the simulator plays them
# (docs/CLOUD-CONTRACT.md §15).

# invoiceStatus of an issued invoice (§9.1 [D S7], §10.2): 0 正常, 3 红冲, 6 作废. One
# integrator's DTO labels 2 as 部分红冲 [S13/S14, unverified]; 5.1.03 calls 2 待开 (dialect
# ``partial_red``).
INVOICE_STATUS_NORMAL: Final = "0"
INVOICE_STATUS_PARTIAL_RED: Final = "2"
INVOICE_STATUS_RED: Final = "3"
INVOICE_STATUS_VOID: Final = "6"
# 红冲 reference rules of a red bill (invoiceProperty 1), checked at BILL.PUSH and again at
# issuance (an issuance refused then fails with the same text as issueErrorMessage) [G].
RED_INVOICE_PROPERTY: Final = "1"
# 专票 (§10.1): a red one needs redInfoBillNo, the 红字信息表/确认单 number (§6.1 [C S10][D S7]).
RED_NEEDS_RED_INFO_TYPES: Final[frozenset[str]] = frozenset({"004", "028", "08xdp"})
# 冲红原因 ``redReason`` (§10.5 [C S18], Kingdee's 开票申请单 table; not in the §6.1 field list).
RED_REASONS: Final[frozenset[str]] = frozenset({"1", "2", "3", "4"})
VOID_DEFAULT_REASON: Final = "开票信息有误，作废重开"  # [G] abolishReason of a clerk's 作废
# billNo of the 红冲单 (单据类型 B, §10.3 [C S18]) a clerk makes in the cloud UI; its real
# numbering is unknown [G]. It has no businessSystemCode, so only INVOICE.RED is called back.
CLOUD_RED_BILL_NO_TEMPLATE: Final = "{bill_no}-HC{n}"
# 授信额度: bizControl of INVOICE.OPEN callbacks (§9.1 [D S7]); amounts in yuan incl. tax, the
# day and month of Asia/Shanghai; isWarning below this share of a limit [G].
QUOTA_TIMEZONE: Final = "Asia/Shanghai"
QUOTA_WARNING_RATIO: Final = Decimal("0.10")
BIZ_CONTROL_ISSUE_BIZ_TYPE: Final = "1"  # [G] values of the two codes are not public
BIZ_CONTROL_BIZ_TYPE: Final = "0"
# Without a configured quota the simulator reports a limit nobody reaches [G].
UNLIMITED_MONTH_SURPLUS: Final = Decimal("9999999.00")
UNLIMITED_DAY_SURPLUS: Final = Decimal("999999.00")


# --------------------------------------------------------------------------- config hints
# Substrings of failure texts that name the setting to fix (the worker's ``config_reason``);
# each is part of a text above, so one edit here follows a real tenant's wording.

ACCOUNT_TEXT_MARKER: Final = "数据中心"  # TOKEN_FAILURE_BAD_ACCOUNT: wrong accountId
BUSINESS_SYSTEM_TEXT_MARKER: Final = "业务系统编码"  # -10001 未知业务系统编码
SELLER_UNKNOWN_TEXT_MARKER: Final = "未在发票云维护"  # -10005
UNDECODABLE_TEXT_MARKER: Final = "解密"  # -10003 data解密失败
NOT_AUTHORISED_TEXT_MARKER: Final = "授权"  # -10002 未进行接口授权


# --------------------------------------------------------------------------- dialects
#
# A dialect is one reading of every [G] fact below that has more than one plausible shape on
# the wire. The simulator plays any of them (``fapiao simulator --dialect NAME=VALUE``,
# ``GET/PUT /_sim/dialect``); the bridge must be right under all of them. The first value of
# each switch is the default (the reading the simulator played before dialects existed).
#
# | switch | values | § | tag |
# |---|---|---|---|
# | unknown_bill | error · empty_list · empty_data | 8 | [G] |
# | withdraw_refusal | per_item · envelope | 7 | [G] |
# | expired_token | invented_401 · unauthorized_text · http_401 | 5, guide 常见报错2 | [G]/[D] |
# | success_data | plain · base64 | 2.4, 6.2 | [G] |
# | status_field | absent · present | 2.4 | [C S13,S14] |
# | query_lines | goods · invoiceDetail | 8 | [D]/[I] |
# | duplicate_bill | refused · accepted | 6.5 | [G] |
# | unknown_fields | refused · ignored | 6.1 | [G] |
# | request_id | required · optional | 2.3 | [D] |
# | merge | never · when_asked | 6, 6.4 | [D S4]/[G] |
# | callback_data | base64 · plain | 9 | [D S7]/[C S13,S14] |
# | failed_in_query | listed · omitted | 8 | [G] |
# | biz_control | per_bill · every_open · when_warning | 9.1, 9.2 | [D S7]/[I]/[G] |
# | cancel_item | own_fields · original_only | 9.1 | [I]/[G] |
# | partial_red | keeps_0 · status_2 | 10.2 | [D S7]/[S13,S14 DTO] |

DIALECT_SWITCHES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "unknown_bill": ("error", "empty_list", "empty_data"),
        "withdraw_refusal": ("per_item", "envelope"),
        "expired_token": ("invented_401", "unauthorized_text", "http_401"),
        "success_data": ("plain", "base64"),
        "status_field": ("absent", "present"),
        "query_lines": ("goods", "invoiceDetail"),
        "duplicate_bill": ("refused", "accepted"),
        "unknown_fields": ("refused", "ignored"),
        "request_id": ("required", "optional"),
        "merge": ("never", "when_asked"),
        "callback_data": ("base64", "plain"),
        "failed_in_query": ("listed", "omitted"),
        "biz_control": ("per_bill", "every_open", "when_warning"),
        "cancel_item": ("own_fields", "original_only"),
        "partial_red": ("keeps_0", "status_2"),
    }
)


class DialectError(ValueError):
    """An unknown switch or value; the message names it and lists the choices."""


def _check_switch(name: str, value: object) -> str:
    if name not in DIALECT_SWITCHES:
        raise DialectError(
            f"unknown dialect switch {name!r}; switches: {', '.join(DIALECT_SWITCHES)}"
        )
    choices = DIALECT_SWITCHES[name]
    if not isinstance(value, str) or value not in choices:
        raise DialectError(
            f"unknown value {value!r} for dialect switch {name!r}; choices: {', '.join(choices)}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Dialect:
    """One reading of the contract's [G] parts: one attribute per ``DIALECT_SWITCHES`` key."""

    unknown_bill: str = "error"
    withdraw_refusal: str = "per_item"
    expired_token: str = "invented_401"
    success_data: str = "plain"
    status_field: str = "absent"
    query_lines: str = "goods"
    duplicate_bill: str = "refused"
    unknown_fields: str = "refused"
    request_id: str = "required"
    merge: str = "never"
    callback_data: str = "base64"
    failed_in_query: str = "listed"
    biz_control: str = "per_bill"
    cancel_item: str = "own_fields"
    partial_red: str = "keeps_0"

    def __post_init__(self) -> None:
        for name in DIALECT_SWITCHES:
            _check_switch(name, getattr(self, name))

    @classmethod
    def default(cls) -> Dialect:
        """The first value of every switch."""
        return cls(**{name: values[0] for name, values in DIALECT_SWITCHES.items()})

    @classmethod
    def parse(cls, specs: Iterable[str], base: Dialect | None = None) -> Dialect:
        """``["NAME=VALUE", ...]`` (the ``--dialect`` option) applied to ``base`` (default)."""
        changes: dict[str, str] = {}
        for spec in specs:
            name, sep, value = spec.partition("=")
            if not sep:
                raise DialectError(
                    f"{spec!r} is not NAME=VALUE; switches: {', '.join(DIALECT_SWITCHES)}"
                )
            changes[name.strip()] = value.strip()
        return (base or cls.default()).replace(changes)

    def replace(self, changes: Mapping[str, object]) -> Dialect:
        """A copy with ``changes`` applied; any unknown name or value raises ``DialectError``."""
        for name, value in changes.items():
            _check_switch(str(name), value)
        return dataclasses.replace(self, **{str(k): str(v) for k, v in changes.items()})

    def as_dict(self) -> dict[str, str]:
        """Every switch and its value, in ``DIALECT_SWITCHES`` order."""
        return {name: getattr(self, name) for name in DIALECT_SWITCHES}

    def differences(self) -> dict[str, str]:
        """Only the switches that differ from the default."""
        default = Dialect.default().as_dict()
        return {k: v for k, v in self.as_dict().items() if default[k] != v}
