"""Kingdee Invoice Cloud wire formats: one definition shared by the bridge and the simulator.

Pure models and codecs, no I/O. Field names are spelled exactly as the cloud spells them
(camelCase, ``apptoken``, ``tenantid`` …). Facts cite docs/CLOUD-CONTRACT.md sections; everything
the docs leave open is decided in ``schemas.cloud_contract``.

Messages (docs/CLOUD-CONTRACT.md section, model or helper)

| § | message | model / helper |
|---|---|---|
| 3 | POST ``/api/getAppToken.do`` | ``AppTokenRequest`` → ``TokenResponse`` |
| 4, 5 | POST ``/api/login.do`` | ``LoginRequest`` → ``TokenResponse`` |
| 2.3, 2.4 | POST ``/kapi/app/sim/openApi`` | ``GatewayRequest`` → ``GatewayResponse`` |
| 6 | ``BILL.PUSH`` data | bills (``Bill.to_wire()``): ``push_request``, ``push_accepted`` |
| 7 | ``BILL.WITHDRAW`` data | ``WithdrawRequestData`` → ``withdraw_results`` |
| 8 | ``BILL.INVOICE.QUERY`` data | ``InvoiceQueryRequestData`` → ``query_results`` |
| 9 | callbacks 5.1.01/02/03 | ``build_callback`` ↔ ``parse_callback`` → ``ParsedCallback`` |
| 9.1 | our ACK | ``CALLBACK_ACK``, ``is_ack`` |

The ``data`` field: UTF-8 JSON (decimals exact) → optional AES → standard base64 (§2.3).
``DataCodec`` is the seam for AES; only ``Base64Codec`` exists today. Decoding tolerates a
value that is already a JSON object/array (doc examples, some tenants, §2.3/§9).

Callback styles (``ParsedCallback.style``); interfaceCode INVOICE.OPEN/.CANCEL/.RED/FILLIN
unless noted

| style | ``data`` decodes to | doc |
|---|---|---|
| ``per_invoice`` | one invoice object | 5.1.02 按票回调 (the default) |
| ``per_bill`` | array of invoice objects, plus ``bizControl`` | 5.1.03 按单 (``3std1…`` codes) |
| ``return`` | ``{"billNo","sellerTaxpayerId","reason"}`` [G] | 5.1.01 回退, BILL.RETURN |

Errors: ``DataDecodeError`` (a ``data`` value that is not base64/JSON/the expected shape) and
``CallbackParseError`` (a callback body we cannot use); both subclass ``ValueError`` and
carry an English + Chinese message naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Protocol

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
)

from schemas.cloud_contract import (
    PUSH_MAX_BILLS,
    PUSH_SUCCESS_MESSAGE,
    SUCCESS_ERROR_CODES,
    WITHDRAW_MAX_SERIAL_NOS,
    BillReturn,
    CallbackStyle,
    OutcomeClass,
    PushResultItem,
    WithdrawItemResult,
    classify_gateway_failure,
    normalise_code,
)
from schemas.money import dumps_exact, loads_exact

__all__ = [
    "ACCESS_TOKEN_PARAM",
    "APP_TOKEN_PATH",
    "BASE64_CODEC",
    "CALLBACK_ACK",
    "LOGIN_PATH",
    "OPENAPI_PATH",
    "AppTokenRequest",
    "Base64Codec",
    "BillInvoices",
    "BillReturn",
    "BizControl",
    "CallbackInterfaceCode",
    "CallbackParseError",
    "CallbackStyle",
    "DataCodec",
    "DataDecodeError",
    "GatewayRequest",
    "GatewayResponse",
    "InterfaceCode",
    "InvoiceItem",
    "InvoiceLine",
    "InvoiceQueryRequestData",
    "LoginRequest",
    "ParsedCallback",
    "PushResultItem",
    "TokenData",
    "TokenResponse",
    "WithdrawItemResult",
    "WithdrawRequestData",
    "build_callback",
    "decode_data",
    "decode_push_bills",
    "encode_data",
    "is_ack",
    "new_request_id",
    "parse_callback",
    "parse_callback_with",
    "push_accepted",
    "push_request",
    "push_results",
    "query_results",
    "token_success_body",
    "withdraw_results",
]

APP_TOKEN_PATH: Final = "/api/getAppToken.do"
LOGIN_PATH: Final = "/api/login.do"
OPENAPI_PATH: Final = "/kapi/app/sim/openApi"
# Query parameter AND header name carrying the access_token on /kapi calls (§2.2).
ACCESS_TOKEN_PARAM: Final = "access_token"


class InterfaceCode(StrEnum):
    """Operations on the one gateway, chosen by the body field ``interfaceCode`` (§2.3)."""

    BILL_PUSH = "BILL.PUSH"
    BILL_WITHDRAW = "BILL.WITHDRAW"
    BILL_INVOICE_QUERY = "BILL.INVOICE.QUERY"


class CallbackInterfaceCode(StrEnum):
    """``interfaceCode`` of callbacks the cloud sends us (§9)."""

    INVOICE_OPEN = "INVOICE.OPEN"
    INVOICE_CANCEL = "INVOICE.CANCEL"
    INVOICE_RED = "INVOICE.RED"
    FILLIN = "FILLIN"
    BILL_RETURN = "BILL.RETURN"


# --------------------------------------------------------------------------- errors


class DataDecodeError(ValueError):
    """A ``data`` value that is not base64, not JSON, or not the shape the message needs."""


class CallbackParseError(ValueError):
    """A callback body we cannot use; the message names what is wrong."""


# --------------------------------------------------------------------------- exact JSON


def _exact(value: Any) -> Any:
    # Floats only appear when a caller parsed JSON without parse_float=Decimal; repr() is the
    # shortest round-tripping text, so Decimal(repr(f)) keeps what the sender wrote.
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _plain(value.model_dump(mode="python", exclude_none=True))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- data codec


class DataCodec(Protocol):
    """How the JSON bytes of ``data`` become the string on the wire (BASE64 or AES, §2.3)."""

    name: str

    def encode(self, payload: bytes) -> str: ...

    def decode(self, value: str) -> bytes: ...


class Base64Codec:
    """Standard base64 (the default 加密策略). Decoding forgives line breaks and lost padding."""

    name = "BASE64"

    def encode(self, payload: bytes) -> str:
        return base64.b64encode(payload).decode("ascii")

    def decode(self, value: str) -> bytes:
        compact = "".join(value.split())
        compact += "=" * (-len(compact) % 4)
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DataDecodeError(
                f"data is not valid base64 ({exc}) / data不是有效的base64字符串"
            ) from exc


BASE64_CODEC: Final = Base64Codec()


def encode_data(obj: Any, codec: DataCodec = BASE64_CODEC) -> str:
    """``obj`` → UTF-8 JSON with exact decimals → ``codec`` (base64 by default).

    Pydantic models anywhere inside are written as their non-None fields; floats are refused
    by ``dumps_exact`` (money is never float).
    """
    return codec.encode(dumps_exact(_plain(obj)).encode("utf-8"))


def decode_data(value: str | list[Any] | dict[str, Any], codec: DataCodec = BASE64_CODEC) -> Any:
    """A ``data`` value → JSON with Decimals; an already-decoded array/object is used as is."""
    if isinstance(value, dict | list):
        return _exact(value)
    if not isinstance(value, str):
        raise DataDecodeError(
            f"data must be a base64 string, an object or an array, not {type(value).__name__}"
            " / data类型错误"
        )
    text = value.strip()
    if not text:
        raise DataDecodeError("data is empty / data为空")
    if text[0] in "{[":
        # Raw JSON text: '{' and '[' are not base64 characters, so this cannot be misread.
        raw: bytes | str = text
    else:
        raw = codec.decode(text)
    try:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8-sig")
        return loads_exact(raw)
    except UnicodeDecodeError as exc:
        raise DataDecodeError(f"decoded data is not UTF-8 ({exc}) / data不是UTF-8编码") from exc
    except ValueError as exc:  # JSONDecodeError, or NaN/Infinity refused by loads_exact
        raise DataDecodeError(f"decoded data is not JSON ({exc}) / data不是合法的JSON") from exc


# --------------------------------------------------------------------------- wire scalars


def _as_text(value: Any) -> Any:
    if type(value) is str:  # nearly every wire text: skip the checks below (same result)
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return value


def _as_text_or_empty(value: Any) -> Any:
    return "" if value is None else _as_text(value)


def _as_decimal(value: Any) -> Decimal | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError("a money amount cannot be true/false / 金额不能是布尔值")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, int | str):
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValueError(f"{value!r} is not a number / 不是数字") from exc
    else:
        raise ValueError(f"{type(value).__name__} is not a number / 不是数字")
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite number / 不是有效数字")
    return result


def _as_int(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str | Decimal) and not isinstance(value, bool):
        # Codes arrive as "1", 1, 1.0 or "1.0" depending on the sender; keep integral ones.
        try:
            number = Decimal(value.strip() if isinstance(value, str) else value)
        except InvalidOperation:
            return value  # let pydantic report "not a valid integer"
        if number.is_finite() and number == number.to_integral_value():
            return int(number)
    return value


def _as_mapping_or_none(value: Any) -> Any:
    return value if isinstance(value, Mapping) else None


Text = Annotated[str, BeforeValidator(_as_text)]
TextOrEmpty = Annotated[str, BeforeValidator(_as_text_or_empty)]
OptText = Annotated[str | None, BeforeValidator(_as_text)]
OptMoney = Annotated[Decimal | None, BeforeValidator(_as_decimal)]
OptInt = Annotated[int | None, BeforeValidator(_as_int)]


# --------------------------------------------------------------------------- request id


def new_request_id(now_ms: int | None = None) -> str:
    """13-digit epoch milliseconds + 3 random digits, 16 characters (§2.3)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{ms:013d}{secrets.randbelow(1000):03d}"


# --------------------------------------------------------------------------- gateway envelope


class GatewayRequest(BaseModel):
    """Body of POST /kapi/app/sim/openApi (§2.3)."""

    model_config = ConfigDict(extra="ignore")

    requestId: Text = Field(min_length=1)
    businessSystemCode: Text = Field(min_length=1)
    interfaceCode: Text = Field(min_length=1)
    data: str | list[Any] | dict[str, Any]

    @classmethod
    def build(
        cls,
        business_system_code: str,
        interface_code: InterfaceCode | str,
        payload: Any,
        *,
        request_id: str | None = None,
        codec: DataCodec = BASE64_CODEC,
    ) -> GatewayRequest:
        """An envelope whose ``data`` is ``payload`` encoded with ``codec``."""
        return cls(
            requestId=request_id or new_request_id(),
            businessSystemCode=business_system_code,
            interfaceCode=str(interface_code),
            data=encode_data(payload, codec),
        )

    def decoded_data(self, codec: DataCodec = BASE64_CODEC) -> Any:
        return decode_data(self.data, codec)

    def to_wire(self) -> dict[str, Any]:
        return {
            "requestId": self.requestId,
            "businessSystemCode": self.businessSystemCode,
            "interfaceCode": self.interfaceCode,
            "data": self.data,
        }


class GatewayResponse(BaseModel):
    """Gateway answer (§2.4); tolerates the legacy ``status`` / ``returnCode`` fields."""

    model_config = ConfigDict(extra="allow")

    success: bool | None = None
    errorCode: OptText = None
    message: TextOrEmpty = ""
    data: Any = None
    status: bool | None = None
    returnCode: OptText = None
    # ``data`` came out of ``loads_exact`` (``read_exact``): Decimals, never floats, so an
    # object/array needs no second walk (``_exact``) when it is read.
    _exact_data: bool = PrivateAttr(default=False)

    @classmethod
    def read_exact(cls, body: Mapping[str, Any]) -> GatewayResponse:
        """``model_validate`` of an answer parsed by ``loads_exact`` (as the client parses)."""
        response = cls.model_validate(body)
        response._exact_data = True
        return response

    @property
    def ok(self) -> bool:
        """``success`` decides; without it the legacy ``status`` (§2.4, dialect
        ``status_field``); ``returnCode`` only if both are absent."""
        if self.success is not None:
            return self.success
        if self.status is not None:
            return self.status
        return normalise_code(self.returnCode) in SUCCESS_ERROR_CODES

    @property
    def error_code(self) -> str | None:
        return normalise_code(self.errorCode) or normalise_code(self.returnCode)

    @property
    def outcome(self) -> OutcomeClass:
        """``accepted`` when ok, else the ``cloud_contract`` classification of the failure."""
        if self.ok:
            return OutcomeClass.ACCEPTED
        return classify_gateway_failure(self.error_code, self.message)

    def decoded_data(self, codec: DataCodec = BASE64_CODEC) -> Any:
        """``data`` decoded (base64 string) or as is (object/array); None when absent. An
        exact object/array (``read_exact``) is returned itself, not a copy: read, don't change."""
        if self.data is None or (isinstance(self.data, str) and not self.data.strip()):
            return None
        if self._exact_data and isinstance(self.data, dict | list):
            return self.data
        return decode_data(self.data, codec)

    @classmethod
    def succeeded(
        cls,
        message: str,
        data: Any = None,
        *,
        encode: bool = False,
        codec: DataCodec = BASE64_CODEC,
    ) -> GatewayResponse:
        payload = encode_data(data, codec) if encode and data is not None else _exact(data)
        return cls(success=True, errorCode="0", message=message, data=payload)

    @classmethod
    def failed(cls, error_code: str, message: str) -> GatewayResponse:
        return cls(success=False, errorCode=error_code, message=message, data=None)

    def to_wire(self) -> dict[str, Any]:
        """Only the four documented fields, as the simulator must emit them."""
        return {
            "success": bool(self.ok),
            "errorCode": self.errorCode if self.errorCode is not None else "",
            "message": self.message,
            "data": self.data,
        }


# --------------------------------------------------------------------------- tokens


class AppTokenRequest(BaseModel):
    """Body of getAppToken.do (§3). Parses ``appSecret`` or ``appSecuret``; sends both."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    appId: Text = Field(min_length=1)
    appSecret: SecretStr = Field(validation_alias=AliasChoices("appSecret", "appSecuret"))
    accountId: Text = Field(min_length=1)
    tenantid: TextOrEmpty = ""
    language: TextOrEmpty = "zh_CN"

    def to_wire(self) -> dict[str, str]:
        """The body to POST. The only place the secret is revealed (``model_dump`` masks it)."""
        secret = self.appSecret.get_secret_value()
        return {
            "appId": self.appId,
            "appSecret": secret,
            "appSecuret": secret,
            "accountId": self.accountId,
            "tenantid": self.tenantid,
            "language": self.language,
        }


class LoginRequest(BaseModel):
    """Body of login.do (§4); note the lower-case ``apptoken``."""

    model_config = ConfigDict(extra="ignore")

    user: Text = Field(min_length=1)
    apptoken: SecretStr
    accountId: Text = Field(min_length=1)
    usertype: TextOrEmpty = "Mobile"
    tenantid: TextOrEmpty = ""
    language: TextOrEmpty = "zh_CN"

    def to_wire(self) -> dict[str, str]:
        return {
            "user": self.user,
            "apptoken": self.apptoken.get_secret_value(),
            "accountId": self.accountId,
            "usertype": self.usertype,
            "tenantid": self.tenantid,
            "language": self.language,
        }


class TokenData(BaseModel):
    """``data`` of a token answer: ``app_token`` (1.01) or ``access_token`` (1.02)."""

    model_config = ConfigDict(extra="allow")

    app_token: TextOrEmpty = ""
    access_token: TextOrEmpty = ""
    success: bool | None = None
    error_code: OptText = None
    error_desc: TextOrEmpty = ""
    expire_time: OptInt = None


class TokenResponse(BaseModel):
    """Answer of getAppToken.do / login.do, success or failure (§3, §4, §5)."""

    model_config = ConfigDict(extra="allow")

    state: OptText = None
    status: bool | None = None
    errorCode: OptText = None
    errorMsg: OptText = None
    message: OptText = None
    data: Annotated[TokenData | None, BeforeValidator(_as_mapping_or_none)] = None

    @property
    def token(self) -> str:
        """The app_token or access_token, "" when absent."""
        if self.data is None:
            return ""
        return self.data.app_token or self.data.access_token

    @property
    def is_success(self) -> bool:
        """§3 middleware rule: state=="success", data.success is True, error_code 0/None, token."""
        if self.state != "success" or self.data is None or self.data.success is not True:
            return False
        if self.data.error_code not in ("0", None):
            return False
        return bool(self.token)

    @property
    def expire_time(self) -> int | None:
        """Absolute expiry in epoch milliseconds, as sent."""
        if self.data is None or not self.data.expire_time:
            return None
        return self.data.expire_time

    @property
    def expires_at(self) -> datetime | None:
        """``expire_time`` as an aware UTC datetime."""
        ms = self.expire_time
        return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)

    @property
    def error_text(self) -> str:
        """The most specific reason the answer carries ("" on success)."""
        if self.is_success:
            return ""
        for text in (
            self.errorMsg,
            self.data.error_desc if self.data is not None else None,
            self.message,
        ):
            if text:
                return text
        code = self.errorCode or (self.data.error_code if self.data is not None else None)
        return f"token request failed (state={self.state!r}, code={code!r}) / 获取令牌失败"


def token_success_body(
    token_field: Literal["app_token", "access_token"], token: str, expire_time_ms: int
) -> dict[str, Any]:
    """A successful token answer exactly as the docs show it (§3, §4)."""
    return {
        "state": "success",
        "status": True,
        "data": {
            token_field: token,
            "success": True,
            "error_code": "0",
            "error_desc": "",
            "expire_time": expire_time_ms,
        },
    }


# --------------------------------------------------------------------------- invoices


class InvoiceLine(BaseModel):
    """A line of an issued invoice: callback ``invoiceDetail[]`` / query ``goods[]`` (§8, §9.1).

    ``lineProperty`` here is the OUTPUT code set: 0 normal, 1 discount, 2 discounted (§10.4).
    """

    model_config = ConfigDict(extra="allow")

    seq: OptText = None
    detailId: OptText = None
    detailRowNo: OptText = None
    billSourceId: OptText = None
    lineProperty: OptInt = None
    goodsName: OptText = None
    specification: OptText = None
    units: OptText = None
    quantity: OptText = None
    price: OptText = None
    includeTaxPrice: OptText = None
    amount: OptMoney = None
    taxRate: OptText = None
    taxAmount: OptMoney = None
    includeTaxAmount: OptMoney = None
    taxFlag: OptText = None
    revenueCode: OptText = None
    revenueName: OptText = None
    privilegeFlag: OptText = None
    privilegeContent: OptText = None
    zeroTaxRateFlag: OptText = None
    remainRedAmount: OptMoney = None
    remainRedQuantity: OptText = None
    remainRedTax: OptMoney = None


class InvoiceItem(BaseModel):
    """One invoice as callbacks (§9.1 ``data[]``) and the query (§8 ``invoiceList[]``) send it.

    Only ``billNo`` is required; the cloud sends 54+ fields, unknown ones are kept (extra).

    | ``invoiceStatus`` | 0 正常, 2 待开, 3 红冲, 6 作废 (§10.2) |
    | ``invoiceProperty`` | 0 蓝票, 1 红票 |
    """

    model_config = ConfigDict(extra="allow")

    billNo: Text = Field(min_length=1)
    serialNo: OptText = None
    batch: OptText = None
    orderNo: OptText = None
    invoiceType: OptText = None
    invoiceProperty: OptInt = None
    invoiceStatus: OptText = None
    invoiceCode: OptText = None
    invoiceNum: OptText = None
    invoiceDate: OptText = None
    issueErrorMessage: OptText = None
    totalAmount: OptMoney = None
    totalTaxAmount: OptMoney = None
    includeTaxAmount: OptMoney = None
    deduction: OptMoney = None
    canRedAmount: OptMoney = None
    canRedTaxAmount: OptMoney = None
    includeTaxFlag: OptInt = None
    taxedType: OptInt = None
    buyerProperty: OptInt = None
    buyerName: OptText = None
    buyerTaxpayerId: OptText = None
    buyerAddressAndTel: OptText = None
    buyerBankAndAccount: OptText = None
    buyerRecipientMail: OptText = None
    buyerRecipientPhone: OptText = None
    sellerName: OptText = None
    sellerTaxpayerId: OptText = None
    sellerAddressAndTel: OptText = None
    sellerBankAndAccount: OptText = None
    inventoryMark: OptText = None
    drawer: OptText = None
    reviewer: OptText = None
    payee: OptText = None
    canceler: OptText = None
    abolishReason: OptText = None
    deviceNo: OptText = None
    terminalNo: OptText = None
    systemSource: OptText = None
    remark: OptText = None
    contractNo: OptText = None
    checkCode: OptText = None
    skm: OptText = None
    printFlag: OptText = None
    downloadFlag: OptInt = None
    redInfoBillNo: OptText = None
    originalInvoiceCode: OptText = None
    originalInvoiceNumber: OptText = None
    originalInvoiceStatus: OptText = None
    originalIssueTime: OptText = None
    invoiceFileUrl: OptText = None
    invoiceImageUrl: OptText = None
    invoicePdfFileUrl: OptText = None
    invoiceXmlFileUrl: OptText = None
    invoiceDetail: list[InvoiceLine] | None = None
    goods: list[InvoiceLine] | None = None

    @property
    def is_issued(self) -> bool:
        """Issued ⇔ ``invoiceNum`` non-empty (数电 invoices have no ``invoiceCode``) (§9.1)."""
        return bool((self.invoiceNum or "").strip())

    @property
    def is_failed(self) -> bool:
        """Failed ⇔ no number, no code, and a reason in ``issueErrorMessage`` (§9.1)."""
        return (
            not (self.invoiceNum or "").strip()
            and not (self.invoiceCode or "").strip()
            and bool((self.issueErrorMessage or "").strip())
        )

    @property
    def is_pending(self) -> bool:
        return not self.is_issued and not self.is_failed

    @property
    def is_red(self) -> bool:
        """A red invoice (invoiceProperty 1) or a blue one that has been reversed (status 3)."""
        return self.invoiceProperty == 1 or self.invoiceStatus == "3"

    @property
    def is_cancelled(self) -> bool:
        """作废 (invoiceStatus 6)."""
        return self.invoiceStatus == "6"

    @property
    def dedupe_key(self) -> str:
        """``orderNo`` (发票流水号) when present, else invoiceCode + invoiceNum + billNo (§9.1).

        Callers combine it with the callback's interfaceCode: a cancel of the same invoice is
        a new fact, not a duplicate.
        """
        if (self.orderNo or "").strip():
            return f"order:{self.orderNo}"
        return f"invoice:{self.invoiceCode or ''}:{self.invoiceNum or ''}:{self.billNo}"

    @property
    def lines(self) -> list[InvoiceLine]:
        """``invoiceDetail`` (callbacks) or ``goods`` (query), whichever is present."""
        return self.invoiceDetail or self.goods or []

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="python", exclude_none=True)


# --------------------------------------------------------------------------- BILL.PUSH


def push_request(
    business_system_code: str,
    bills: Sequence[Mapping[str, Any]],
    *,
    request_id: str | None = None,
    codec: DataCodec = BASE64_CODEC,
) -> GatewayRequest:
    """BILL.PUSH envelope: ``data`` = base64(JSON array of bills) (§6.1)."""
    if not bills:
        raise ValueError("BILL.PUSH needs at least one bill / 至少需要一张单据")
    if len(bills) > PUSH_MAX_BILLS:
        raise ValueError(
            f"BILL.PUSH takes at most {PUSH_MAX_BILLS} bills, got {len(bills)}"
            f" / 单次最多推送{PUSH_MAX_BILLS}张单据"
        )
    return GatewayRequest.build(
        business_system_code,
        InterfaceCode.BILL_PUSH,
        [dict(b) for b in bills],
        request_id=request_id,
        codec=codec,
    )


def decode_push_bills(
    request: GatewayRequest, codec: DataCodec = BASE64_CODEC
) -> list[dict[str, Any]]:
    """The bills of a BILL.PUSH request: a non-empty JSON array of objects, or DataDecodeError."""
    payload = request.decoded_data(codec)
    if not isinstance(payload, list) or not payload:
        raise DataDecodeError("BILL.PUSH data must be a non-empty array / data必须是非空数组")
    for index, bill in enumerate(payload):
        if not isinstance(bill, dict):
            raise DataDecodeError(
                f"BILL.PUSH data[{index}] must be an object / data[{index}]必须是对象"
            )
    return payload


def push_accepted(response: GatewayResponse) -> bool:
    """Accepted (not yet invoiced): ``ok``, or — when no flag is sent — the S15 message test."""
    if response.ok:
        return True
    return (
        response.success is None
        and response.status is None
        and response.message.strip() == PUSH_SUCCESS_MESSAGE
    )


def push_results(response: GatewayResponse) -> list[PushResultItem]:
    """Per-bill items of a push answer [G]; [] whenever absent or of another shape."""
    try:
        payload = response.decoded_data()
        if not isinstance(payload, list):
            return []
        return [PushResultItem.model_validate(item) for item in payload]
    except (DataDecodeError, ValidationError):
        return []


# --------------------------------------------------------------------------- BILL.WITHDRAW


class WithdrawRequestData(BaseModel):
    """``data`` of BILL.WITHDRAW (§7): the billNos to take back, optionally scoped."""

    model_config = ConfigDict(extra="ignore")

    serialNos: list[Text] = Field(min_length=1, max_length=WITHDRAW_MAX_SERIAL_NOS)
    sellerTaxpayerId: OptText = None
    orgCode: OptText = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="python", exclude_none=True)


def _decoded_list(response: GatewayResponse, what: str) -> list[Any]:
    payload = response.decoded_data()
    if payload is None:
        return []
    if isinstance(payload, dict):
        return [payload]
    if not isinstance(payload, list):
        raise DataDecodeError(f"{what} data must be an array / {what}返回data必须是数组")
    return payload


def withdraw_results(response: GatewayResponse) -> list[WithdrawItemResult]:
    """Per-bill results of a BILL.WITHDRAW answer (§7 [G])."""
    try:
        return [
            WithdrawItemResult.model_validate(item)
            for item in _decoded_list(response, "BILL.WITHDRAW")
        ]
    except ValidationError as exc:
        raise DataDecodeError(f"BILL.WITHDRAW result has a bad item: {exc}") from exc


# --------------------------------------------------------------------------- BILL.INVOICE.QUERY


class InvoiceQueryRequestData(BaseModel):
    """``data`` of BILL.INVOICE.QUERY (§8): ``serialNo`` is our billNo."""

    model_config = ConfigDict(extra="ignore")

    sellerTaxpayerId: Text = Field(min_length=1)
    serialNo: Text = Field(min_length=1)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


class BillInvoices(BaseModel):
    """One element of a query answer: a bill and the invoices issued (or attempted) for it."""

    model_config = ConfigDict(extra="allow")

    billNo: Text = Field(min_length=1)
    invoiceList: list[InvoiceItem] = Field(default_factory=list)

    @property
    def issued(self) -> list[InvoiceItem]:
        return [i for i in self.invoiceList if i.is_issued]

    @property
    def failed(self) -> list[InvoiceItem]:
        return [i for i in self.invoiceList if i.is_failed]

    @property
    def pending(self) -> list[InvoiceItem]:
        return [i for i in self.invoiceList if i.is_pending]

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="python", exclude_none=True)


def query_results(response: GatewayResponse) -> list[BillInvoices]:
    """The bills of a successful BILL.INVOICE.QUERY answer (base64 or plain ``data``)."""
    try:
        return [
            BillInvoices.model_validate(item)
            for item in _decoded_list(response, "BILL.INVOICE.QUERY")
        ]
    except ValidationError as exc:
        raise DataDecodeError(f"BILL.INVOICE.QUERY result has a bad item: {exc}") from exc


# --------------------------------------------------------------------------- callbacks


class BizControl(BaseModel):
    """Quota information sent with 5.1.03 按单回调 (§9.1)."""

    model_config = ConfigDict(extra="allow")

    issueBizType: OptText = None
    bizType: OptText = None
    monthSurplusLimit: OptMoney = None
    daySurplusLimit: OptMoney = None
    isWarning: bool | None = None


class ParsedCallback(BaseModel):
    """A callback body, decoded and validated; ``items`` empty for BILL.RETURN."""

    interfaceCode: str
    returnCode: str
    returnMsg: str
    style: CallbackStyle
    items: list[InvoiceItem] = Field(default_factory=list)
    returned: BillReturn | None = None
    bizControl: BizControl | None = None

    @property
    def known_interface(self) -> CallbackInterfaceCode | None:
        try:
            return CallbackInterfaceCode(self.interfaceCode)
        except ValueError:
            return None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "(root)"
    return f"{where}: {err['msg']}"


def parse_callback_with(
    body: bytes | str | Mapping[str, Any], codecs: Sequence[DataCodec]
) -> ParsedCallback:
    """``parse_callback`` with the first of ``codecs`` that decodes ``data``.

    A callback does not say which tenant sent it, and AES tenants encrypt its ``data``: BASE64
    first, then each AES tenant's codec. AES-GCM's tag authenticates, so a wrong key fails
    cleanly instead of yielding garbage. If none decodes, the BASE64 error is raised.
    """
    first_error: CallbackParseError | None = None
    for codec in (BASE64_CODEC, *codecs):
        try:
            return parse_callback(body, codec)
        except CallbackParseError as exc:
            if first_error is None:
                first_error = exc
            if not isinstance(exc.__cause__, DataDecodeError):
                raise  # not a data problem: another key cannot help
    assert first_error is not None
    raise first_error


def parse_callback(
    body: bytes | str | Mapping[str, Any], codec: DataCodec = BASE64_CODEC
) -> ParsedCallback:
    """Decode a callback of any documented style (5.1.01 / 5.1.02 / 5.1.03), or refuse it."""
    envelope: Any
    if isinstance(body, Mapping):
        envelope = _exact(dict(body))
    else:
        try:
            # Decode ourselves: json.loads(bytes) would guess UTF-16/32 from the first bytes.
            text = body.decode("utf-8-sig") if isinstance(body, bytes) else body
            envelope = loads_exact(text)
        except UnicodeDecodeError as exc:
            raise CallbackParseError("callback body is not UTF-8 / 回调报文不是UTF-8编码") from exc
        except ValueError as exc:
            raise CallbackParseError(
                f"callback body is not JSON ({exc}) / 回调报文不是合法的JSON"
            ) from exc
    if not isinstance(envelope, dict):
        raise CallbackParseError("callback body must be a JSON object / 回调报文必须是JSON对象")

    interface_code = _as_text(envelope.get("interfaceCode"))
    if not isinstance(interface_code, str) or not interface_code.strip():
        raise CallbackParseError("callback has no interfaceCode / 回调缺少interfaceCode")
    interface_code = interface_code.strip()
    return_code = normalise_code(envelope.get("returnCode")) or ""
    return_msg = str(_as_text_or_empty(envelope.get("returnMsg")))

    raw_data = envelope.get("data")
    if raw_data is None or (isinstance(raw_data, str) and not raw_data.strip()):
        raise CallbackParseError("callback has no data / 回调缺少data")
    try:
        payload = decode_data(raw_data, codec)
    except DataDecodeError as exc:
        raise CallbackParseError(f"callback data cannot be decoded: {exc}") from exc

    biz_control: BizControl | None = None
    raw_biz = envelope.get("bizControl")
    if raw_biz is not None and raw_biz != "":
        if not isinstance(raw_biz, dict):
            raise CallbackParseError("callback bizControl must be an object / bizControl必须是对象")
        try:
            biz_control = BizControl.model_validate(raw_biz)
        except ValidationError as exc:
            raise CallbackParseError(
                f"callback bizControl is invalid ({_first_error(exc)}) / bizControl格式错误"
            ) from exc

    common: dict[str, Any] = {
        "interfaceCode": interface_code,
        "returnCode": return_code,
        "returnMsg": return_msg,
        "bizControl": biz_control,
    }
    if interface_code == CallbackInterfaceCode.BILL_RETURN:
        if not isinstance(payload, dict):
            raise CallbackParseError(
                "BILL.RETURN data must decode to an object / 回退回调data必须是对象"
            )
        try:
            returned = BillReturn.model_validate(payload)
        except ValidationError as exc:
            raise CallbackParseError(
                f"BILL.RETURN data is invalid ({_first_error(exc)}) / 回退回调data格式错误"
            ) from exc
        return ParsedCallback(style="return", returned=returned, **common)

    style: Literal["per_invoice", "per_bill"]
    if isinstance(payload, dict):
        style, raw_items = "per_invoice", [payload]
    elif isinstance(payload, list):
        style, raw_items = "per_bill", payload
    else:
        raise CallbackParseError(
            "callback data must decode to an object or an array / 回调data必须是对象或数组"
        )
    items: list[InvoiceItem] = []
    for index, raw in enumerate(raw_items):
        if not isinstance(raw, dict):
            raise CallbackParseError(
                f"callback data[{index}] is not an object / 回调data[{index}]不是对象"
            )
        try:
            items.append(InvoiceItem.model_validate(raw))
        except ValidationError as exc:
            raise CallbackParseError(
                f"callback invoice {index} is invalid ({_first_error(exc)}) / 回调发票数据格式错误"
            ) from exc
    return ParsedCallback(style=style, items=items, **common)


def build_callback(
    interface_code: CallbackInterfaceCode | str,
    items: Sequence[InvoiceItem],
    style: CallbackStyle,
    biz_control: BizControl | None = None,
    *,
    returned: BillReturn | None = None,
    return_code: str | None = None,
    return_msg: str | None = None,
    codec: DataCodec = BASE64_CODEC,
) -> dict[str, Any]:
    """A callback body as the cloud sends it (for the simulator); ``parse_callback`` inverts it.

    ``returnCode`` defaults to ``0``/``success`` when every item is issued, else ``9999`` with
    the first ``issueErrorMessage`` (5.1.03 says not to trust it; items decide).
    """
    code = str(interface_code)
    body: dict[str, Any] = {"interfaceCode": code}
    if style == "return":
        if returned is None or items:
            raise ValueError("a BILL.RETURN callback takes `returned` and no items")
        body["returnCode"] = return_code or "0"
        body["returnMsg"] = return_msg or "success"
        body["data"] = encode_data(returned, codec)
        return body
    if style == "per_invoice":
        if len(items) != 1:
            raise ValueError(
                f"a per_invoice callback carries exactly one invoice, got {len(items)}"
            )
        payload: Any = items[0].to_wire()
    else:
        if not items:
            raise ValueError("a per_bill callback carries at least one invoice")
        payload = [item.to_wire() for item in items]
    failed = [i for i in items if not i.is_issued]
    if return_code is None:
        return_code = "9999" if failed else "0"
    if return_msg is None:
        return_msg = (failed[0].issueErrorMessage or "开票失败") if failed else "success"
    body["returnCode"] = return_code
    body["returnMsg"] = return_msg
    body["data"] = encode_data(payload, codec)
    if style == "per_bill" and biz_control is not None:
        body["bizControl"] = biz_control.model_dump(mode="python", exclude_none=True)
    return body


# Superset of the two documented ACK forms (5.1.03 schema + 2.1.02 example), §9.1.
CALLBACK_ACK: Final[dict[str, Any]] = {
    "success": True,
    "code": "0",
    "errorCode": "0",
    "message": "success",
}


def is_ack(body: bytes | str | Mapping[str, Any]) -> bool:
    """Does our receiver's answer acknowledge the callback? ``success`` true and no non-0 code."""
    parsed: Any
    if isinstance(body, Mapping):
        parsed = body
    else:
        try:
            parsed = loads_exact(body.decode("utf-8-sig") if isinstance(body, bytes) else body)
        except ValueError:
            return False
    if not isinstance(parsed, Mapping) or parsed.get("success") is not True:
        return False
    for key in ("code", "errorCode"):
        if key in parsed and normalise_code(parsed[key]) not in SUCCESS_ERROR_CODES:
            return False
    return True
