"""The Kingdee Invoice Cloud client: a small port (``KingdeeClient``) and its httpx adapter.

One ``httpx.Client`` (a connection pool) per worker process serves every tenant; a
``HttpKingdeeClient`` binds it to one tenant's configuration. Every call is rate-limited per
tenant (``worker.ratelimit``), recorded in the ledger (``cloud_calls``; the push row is
written BEFORE the call and completed after it, so a crash mid-call leaves evidence), and
reduced to one ``OutcomeClass`` (the mapping of guessed shapes lives in
``schemas.cloud_contract``; this module only adds what the transport knows).

Transport → outcome (what the cloud may have done is what matters)

| what happened                                  | BILL.PUSH           | query / withdraw    |
|------------------------------------------------|---------------------|---------------------|
| connect error / connect timeout / pool timeout | ``transient``       | ``transient``       |
| rate-limit wait exceeded (nothing sent)        | ``transient``       | ``transient``       |
| write error / write timeout (partly sent)      | ``unknown_outcome`` | ``unknown_outcome`` |
| read timeout, dropped connection, bad protocol | ``unknown_outcome`` | ``unknown_outcome`` |
| HTTP 429 / 408                                 | ``transient``       | ``transient``       |
| HTTP 5xx                                       | ``unknown_outcome`` | ``unknown_outcome`` |
| HTTP 401 / 403                                 | ``auth_expired``    | ``auth_expired``    |
| other non-200 (404: wrong base URL …)          | ``config_error``    | ``config_error``    |
| 200 with a body that is not a JSON object      | ``unknown_outcome`` | ``unknown_outcome`` |
| 200 envelope                                   | ``push_accepted``   | ``GatewayResponse`` |
|                                                | else ``.outcome``   | ``.outcome``        |

Token calls (getAppToken.do, login.do) raise instead: a refusal or a non-200 4xx is
``CloudConfigError``; anything else is ``CloudTransientError``.

The retry policy decides what each outcome means for the caller (a query's
``unknown_outcome`` is simply asked again; a push's is ``in_doubt``).

Exceptions (raised only while fetching tokens; gateway calls return ``CloudResult``)

    CloudError
     ├── CloudTransientError   nothing was decided; try again later
     └── CloudConfigError      an operator must fix a setting; ``.reason`` names it

``data`` (§2.3): requests are encoded with the tenant's codec (``data_encryption``: BASE64, or
AES-GCM with ``aes_key``; ``schemas.data_codec``), and a string ``data`` in an answer is decoded
with it before anyone reads it (``_decoded``).

Authentication (§2.2, §3): the access_token goes as query parameter AND header
``access_token``; getAppToken.do gets both ``appSecret`` and ``appSecuret``.
Secrets never reach logs: httpx's own request log (which prints URLs with the token) is
silenced to WARNING when a client is built.

Thread safety: a ``HttpKingdeeClient`` keeps no per-call state (the request, its requestId
and the ledger entry live in the call's own frame; the parsed endpoint URLs it keeps are
replaced whole, never changed); ``httpx.Client`` is thread-safe (its
pool lends a connection to one request at a time), and so are the ledger
(``worker.ledger.SqlCallLedger``: a pooled connection per write) and the rate gate
(``worker.ratelimit.RedisRateGate``: one atomic script on a thread-safe Redis client). So
``push`` may be called from several threads at once, one bill per call.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

import httpx
from pydantic import SecretStr, ValidationError

from schemas.cloud_contract import (
    ACCOUNT_TEXT_MARKER,
    BUSINESS_SYSTEM_TEXT_MARKER,
    NOT_AUTHORISED_TEXT_MARKER,
    SELLER_UNKNOWN_TEXT_MARKER,
    UNDECODABLE_TEXT_MARKER,
    ErrorCode,
    OutcomeClass,
    classify_http_status,
    normalise_code,
)
from schemas.data_codec import codec_for_tenant
from schemas.kingdee import (
    ACCESS_TOKEN_PARAM,
    APP_TOKEN_PATH,
    LOGIN_PATH,
    OPENAPI_PATH,
    AppTokenRequest,
    DataCodec,
    DataDecodeError,
    GatewayRequest,
    GatewayResponse,
    InterfaceCode,
    InvoiceQueryRequestData,
    LoginRequest,
    TokenResponse,
    WithdrawRequestData,
    decode_data,
    push_accepted,
    push_request,
)
from schemas.money import loads_exact
from schemas.settings import HttpSettings
from schemas.tenants import TenantConfig
from worker import metrics
from worker.tokens import AccessToken

__all__ = [
    "APP_TOKEN_INTERFACE",
    "LOGIN_INTERFACE",
    "CallContext",
    "CallLedger",
    "CloudConfigError",
    "CloudError",
    "CloudResult",
    "CloudTransientError",
    "HttpKingdeeClient",
    "KingdeeClient",
    "RateGate",
    "config_reason",
    "fetch_access_token",
    "make_http_client",
]

log = logging.getLogger(__name__)

APP_TOKEN_INTERFACE: Final = "getAppToken"
LOGIN_INTERFACE: Final = "login"
PENDING_OUTCOME: Final = "pending"


# --------------------------------------------------------------------------- errors


class CloudError(Exception):
    """Base of the errors raised while talking to Kingdee (module docstring)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CloudTransientError(CloudError):
    """Nothing was decided (network, rate limit, lock wait); the same call may succeed later."""


class CloudConfigError(CloudError):
    """The cloud refused our credentials or configuration; ``reason`` names the setting."""


# --------------------------------------------------------------------------- ports


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the ledger row of a call is about.

    ``request_id``: the requestId a push must carry (its ledger row was written ahead, with
    that id); ``ledger``: where this call is recorded instead of the client's own ledger (a
    push batch's ``worker.ledger.PushBatchLedger``). Both None for a call on its own.
    """

    document_id: int | None = None
    attempt: int | None = None
    request_id: str | None = None
    ledger: CallLedger | None = None


class CallLedger(Protocol):
    """Where cloud calls are recorded (``cloud_calls``); ``begin`` commits before the call."""

    def begin(
        self,
        *,
        tenant: str,
        interface: str,
        request_id: str | None,
        context: CallContext,
    ) -> int | None: ...

    def finish(
        self,
        entry: int | None,
        *,
        tenant: str,
        interface: str,
        request_id: str | None,
        context: CallContext,
        outcome: str,
        http_status: int | None,
        error_code: str | None,
        message: str | None,
        latency_ms: int,
    ) -> None: ...


class RateGate(Protocol):
    """Per-tenant rate limit shared by all workers; raises ``CloudTransientError`` when full."""

    def wait(self, tenant: str, per_second: float) -> None: ...


@dataclass(frozen=True, slots=True)
class CloudResult:
    """A gateway answer reduced to what the worker needs (never carries the token)."""

    interface: str
    request_id: str
    outcome: OutcomeClass
    http_status: int | None
    error_code: str | None
    message: str
    response: GatewayResponse | None = None
    auth_refreshed: bool = False
    # The answer as it came, ``data`` not decoded (``fapiao probe`` reads its shape).
    received: GatewayResponse | None = None

    @property
    def sent(self) -> bool:
        """Did the request reach the network (anything but a refusal before sending)?"""
        return self.http_status is not None or self.outcome is not OutcomeClass.TRANSIENT

    def refreshed(self) -> CloudResult:
        return replace(self, auth_refreshed=True)


class KingdeeClient(Protocol):
    """The operations of one tenant's account (docs/CLOUD-CONTRACT.md §3, §4, §6–§8)."""

    @property
    def tenant(self) -> TenantConfig: ...

    def get_app_token(self) -> TokenResponse: ...

    def login(self, app_token: str) -> TokenResponse: ...

    def push(
        self, bill: Mapping[str, Any], *, access_token: str, context: CallContext
    ) -> CloudResult: ...

    def withdraw(
        self,
        bill_nos: Sequence[str],
        seller_tax_id: str,
        *,
        access_token: str,
        context: CallContext,
    ) -> CloudResult: ...

    def query(
        self, bill_no: str, seller_tax_id: str, *, access_token: str, context: CallContext
    ) -> CloudResult: ...


# --------------------------------------------------------------------------- reasons


def config_reason(
    tenant: str,
    interface: str,
    *,
    http_status: int | None,
    error_code: str | None,
    message: str,
) -> str:
    """An actionable reason for a configuration/auth failure: what failed, which setting to fix.

    Field names are those of the tenants file (``schemas.tenants``); the cloud's own words
    are kept so an operator can search the vendor's documentation for them.
    """
    code = normalise_code(error_code) or ""
    text = message or ""
    where = f"tenant {tenant!r} in the tenants file (FAPIAO_TENANTS_FILE)"
    if http_status is not None and http_status not in (200, 401, 403):
        fix = (
            f"HTTP {http_status} from {interface}: check `base_url` (with the tenant path)"
            f" of {where} / 网关地址不正确"
        )
    elif interface == APP_TOKEN_INTERFACE:
        if "account" in code.lower() or ACCOUNT_TEXT_MARKER in text or "accountid" in text.lower():
            field = "account_id"
        else:
            field = "app_id / app_secret"
        fix = (
            f"getAppToken.do refused: check `{field}` of {where} / 获取app_token失败，请检查{field}"
        )
    elif interface == LOGIN_INTERFACE:
        fix = (
            f"login.do refused: check `user`, `usertype` and `account_id` of {where}"
            " / 登录失败，请检查user、usertype、account_id"
        )
    elif code == ErrorCode.UNKNOWN_BUSINESS_SYSTEM or BUSINESS_SYSTEM_TEXT_MARKER in text:
        fix = (
            f"unknown business system: check `business_system_code` of {where}"
            " / 请检查业务系统的编码配置"
        )
    elif code == ErrorCode.SELLER_UNKNOWN or SELLER_UNKNOWN_TEXT_MARKER in text:
        fix = (
            f"seller not set up in the cloud: check `seller_tax_ids` of {where} and the"
            " seller's setup in the cloud console / 请在发票云中维护该销方税号"
        )
    elif code == ErrorCode.DATA_UNDECODABLE or UNDECODABLE_TEXT_MARKER in text:
        fix = (
            "the cloud cannot decode `data`: set the 加密策略 of `business_system_code` to"
            f" BASE64 in the cloud console for {where} / 发票云无法解码data，请检查加密策略"
        )
    elif (
        code in {ErrorCode.NOT_AUTHORISED, ErrorCode.TOKEN_EXPIRED, ErrorCode.FORBIDDEN}
        or http_status in (401, 403)
        or NOT_AUTHORISED_TEXT_MARKER in text
    ):
        fix = (
            "authentication still fails with a fresh access_token: grant the app `app_id`"
            f" access to {interface} (接口授权) and check `user` of {where}"
            " / 刷新令牌后仍未授权，请检查接口授权"
        )
    else:
        fix = f"configuration refused by the cloud: review {where} / 配置错误"
    detail = f" [{code}] {text}".rstrip() if (code or text) else ""
    return f"{fix};{detail}" if detail else fix


# --------------------------------------------------------------------------- tokens


def fetch_access_token(
    client: KingdeeClient, clock: Callable[[], float] = time.time
) -> AccessToken:
    """getAppToken.do then login.do (a fresh app_token every time, §5).

    Raises ``CloudConfigError`` when the cloud refuses (naming the setting to fix) and
    ``CloudTransientError`` when it could not be asked.
    """
    tenant = client.tenant.name
    app = client.get_app_token()
    if not app.is_success:
        raise CloudConfigError(
            config_reason(
                tenant,
                APP_TOKEN_INTERFACE,
                http_status=200,
                error_code=app.errorCode or (app.data.error_code if app.data else None),
                message=app.error_text,
            )
        )
    access = client.login(app.token)
    if not access.is_success:
        raise CloudConfigError(
            config_reason(
                tenant,
                LOGIN_INTERFACE,
                http_status=200,
                error_code=access.errorCode or (access.data.error_code if access.data else None),
                message=access.error_text,
            )
        )
    now_ms = int(clock() * 1000)
    # Without an expire_time the documented lifetime (2 h) is assumed.
    expires = access.expire_time or now_ms + 2 * 3600 * 1000
    return AccessToken(access.token, expires_ms=expires, issued_ms=now_ms)


# --------------------------------------------------------------------------- httpx adapter


def make_http_client(settings: HttpSettings, *, max_connections: int = 20) -> httpx.Client:
    """The one pooled client of a worker process, with explicit timeouts on every phase."""
    for name in ("httpx", "httpcore"):
        # httpx logs every request URL at INFO, and our URLs carry ?access_token=…
        logging.getLogger(name).setLevel(logging.WARNING)
    timeout = httpx.Timeout(
        connect=settings.connect_timeout_seconds,
        read=settings.read_timeout_seconds,
        write=settings.read_timeout_seconds,
        pool=settings.connect_timeout_seconds,
    )
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=10)
    return httpx.Client(timeout=timeout, limits=limits, headers={"User-Agent": "fapiao-bridge"})


@dataclass(frozen=True, slots=True)
class _Answer:
    outcome: OutcomeClass | None  # None: a 200 whose body was parsed into ``body``
    http_status: int | None
    body: Any = None
    message: str = ""


class HttpKingdeeClient:
    """``KingdeeClient`` over httpx for one tenant (module docstring); thread-safe."""

    def __init__(
        self,
        tenant: TenantConfig,
        http: httpx.Client,
        *,
        ledger: CallLedger,
        rate_gate: RateGate | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tenant = tenant
        self._http = http
        self._ledger = ledger
        self._gate = rate_gate
        self._clock = clock
        # The tenant's 加密策略 (§2.3): BASE64, or AES-GCM with its aes_key.
        self._codec: DataCodec = codec_for_tenant(tenant)
        # path → (access_token, the parsed URL carrying it): httpx parses a URL string (and
        # again to add the query) on every request; the token changes every ~2 h.
        self._urls: dict[str, tuple[str | None, httpx.URL]] = {}

    @property
    def tenant(self) -> TenantConfig:
        return self._tenant

    # ----------------------------------------------------------------- tokens

    def get_app_token(self) -> TokenResponse:
        body = AppTokenRequest(
            appId=self._tenant.app_id,
            appSecret=self._tenant.app_secret,
            accountId=self._tenant.account_id,
        ).to_wire()
        return self._token_call(APP_TOKEN_INTERFACE, APP_TOKEN_PATH, body)

    def login(self, app_token: str) -> TokenResponse:
        body = LoginRequest(
            user=self._tenant.user,
            apptoken=SecretStr(app_token),
            accountId=self._tenant.account_id,
            usertype=self._tenant.usertype,
        ).to_wire()
        return self._token_call(LOGIN_INTERFACE, LOGIN_PATH, body)

    def _token_call(self, interface: str, path: str, body: dict[str, str]) -> TokenResponse:
        started = self._clock()
        answer = self._send(interface, path, body, access_token=None)
        response: TokenResponse | None = None
        outcome = answer.outcome
        message = answer.message
        error_code: str | None = None
        if outcome is None:
            try:
                response = TokenResponse.model_validate(answer.body)
            except ValidationError as exc:
                outcome, message = OutcomeClass.UNKNOWN_OUTCOME, f"bad token body: {exc}"
            else:
                ok = response.is_success
                outcome = OutcomeClass.ACCEPTED if ok else OutcomeClass.CONFIG_ERROR
                message = response.error_text or "token issued"
                error_code = response.errorCode or (
                    response.data.error_code if response.data is not None else None
                )
        self._finish(
            None, interface, None, CallContext(), outcome, answer.http_status, error_code,
            message, started,
        )  # fmt: skip
        if response is not None:
            return response
        if outcome in (OutcomeClass.CONFIG_ERROR, OutcomeClass.AUTH_EXPIRED):
            raise CloudConfigError(
                config_reason(
                    self._tenant.name,
                    interface,
                    http_status=answer.http_status,
                    error_code=None,
                    message=message,
                )
            )
        raise CloudTransientError(
            f"{interface} for tenant {self._tenant.name!r} failed: {message} / 获取令牌暂时失败"
        )

    # ----------------------------------------------------------------- gateway

    def push(
        self, bill: Mapping[str, Any], *, access_token: str, context: CallContext
    ) -> CloudResult:
        request = push_request(
            self._tenant.business_system_code,
            [bill],
            codec=self._codec,
            request_id=context.request_id,
        )
        return self._gateway(request, access_token, context, record_before=True)

    def withdraw(
        self,
        bill_nos: Sequence[str],
        seller_tax_id: str,
        *,
        access_token: str,
        context: CallContext,
    ) -> CloudResult:
        payload = WithdrawRequestData(serialNos=list(bill_nos), sellerTaxpayerId=seller_tax_id)
        request = GatewayRequest.build(
            self._tenant.business_system_code,
            InterfaceCode.BILL_WITHDRAW,
            payload.to_wire(),
            codec=self._codec,
        )
        return self._gateway(request, access_token, context, record_before=False)

    def query(
        self, bill_no: str, seller_tax_id: str, *, access_token: str, context: CallContext
    ) -> CloudResult:
        payload = InvoiceQueryRequestData(sellerTaxpayerId=seller_tax_id, serialNo=bill_no)
        request = GatewayRequest.build(
            self._tenant.business_system_code,
            InterfaceCode.BILL_INVOICE_QUERY,
            payload.to_wire(),
            codec=self._codec,
        )
        return self._gateway(request, access_token, context, record_before=False)

    def send_envelope(
        self, envelope: Mapping[str, Any], *, access_token: str, context: CallContext
    ) -> CloudResult:
        """POST a hand-made gateway envelope exactly as given, ledgered like any call.

        For ``fapiao probe``, which must send what ``GatewayRequest`` refuses to build (an
        envelope without ``requestId``) to learn how the cloud answers it.
        """
        request = GatewayRequest.model_construct(
            requestId=str(envelope.get("requestId") or ""),
            businessSystemCode=str(envelope.get("businessSystemCode") or ""),
            interfaceCode=str(envelope.get("interfaceCode") or "openApi"),
            data=envelope.get("data", ""),
        )
        interface = request.interfaceCode
        started = self._clock()
        answer = self._send(interface, OPENAPI_PATH, envelope, access_token=access_token)
        result = self._result(request, answer)
        self._finish(
            None, interface, request.requestId or None, context, result.outcome,
            result.http_status, result.error_code, result.message, started,
        )  # fmt: skip
        return result

    def _gateway(
        self,
        request: GatewayRequest,
        access_token: str,
        context: CallContext,
        *,
        record_before: bool,
    ) -> CloudResult:
        interface = request.interfaceCode
        entry = (
            (context.ledger or self._ledger).begin(
                tenant=self._tenant.name,
                interface=interface,
                request_id=request.requestId,
                context=context,
            )
            if record_before
            else None
        )
        started = self._clock()
        answer = self._send(interface, OPENAPI_PATH, request.to_wire(), access_token=access_token)
        result = self._result(request, answer)
        self._finish(
            entry,
            interface,
            request.requestId,
            context,
            result.outcome,
            result.http_status,
            result.error_code,
            result.message,
            started,
        )
        return result

    def _result(self, request: GatewayRequest, answer: _Answer) -> CloudResult:
        interface = request.interfaceCode
        if answer.outcome is not None:
            return CloudResult(
                interface,
                request.requestId,
                answer.outcome,
                answer.http_status,
                None,
                answer.message,
            )
        try:
            response = GatewayResponse.read_exact(answer.body)  # parsed by ``loads_exact``
        except ValidationError as exc:
            return CloudResult(
                interface,
                request.requestId,
                OutcomeClass.UNKNOWN_OUTCOME,
                200,
                None,
                f"unreadable gateway answer: {exc.errors()[0]['msg']}",
            )
        received = response
        response = self._decoded(response)
        if interface == InterfaceCode.BILL_PUSH and push_accepted(response):
            outcome = OutcomeClass.ACCEPTED
        else:
            outcome = response.outcome
        return CloudResult(
            interface,
            request.requestId,
            outcome,
            200,
            response.error_code,
            response.message,
            response,
            received=received,
        )

    def _decoded(self, response: GatewayResponse) -> GatewayResponse:
        """``data`` decoded with the tenant's codec when it is a string (BASE64 or AES; also
        push/withdraw answers under dialect ``success_data=base64``), so callers read plain
        JSON. A string that does not decode is left as it is: readers that need it (withdraw,
        query) then fail to decode it and ask again; a push does not need it."""
        data = response.data
        if not isinstance(data, str) or not data.strip():
            return response
        try:
            decoded = decode_data(data, self._codec)
        except DataDecodeError:
            return response
        return response.model_copy(update={"data": decoded})

    # ----------------------------------------------------------------- transport

    def _send(
        self, interface: str, path: str, body: Mapping[str, Any], *, access_token: str | None
    ) -> _Answer:
        if self._gate is not None:
            try:
                self._gate.wait(self._tenant.name, self._tenant.rate_limit_per_second)
            except CloudTransientError as exc:
                return _Answer(OutcomeClass.TRANSIENT, None, message=exc.reason)
        headers = {"Content-Type": "application/json;charset=utf-8"}
        if access_token is not None:
            headers[ACCESS_TOKEN_PARAM] = access_token
        content = json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            response = self._http.post(
                self._url(path, access_token), headers=headers, content=content
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return _Answer(OutcomeClass.TRANSIENT, None, message=_describe(exc, "not sent"))
        except httpx.TransportError as exc:
            # Read/write timeouts, dropped connections, protocol errors: the request may
            # have been received and applied.
            return _Answer(OutcomeClass.UNKNOWN_OUTCOME, None, message=_describe(exc, "sent"))
        status = response.status_code
        by_status = classify_http_status(status)
        if by_status is not None:
            return _Answer(by_status, status, message=f"HTTP {status}: {response.text[:200]}")
        try:
            parsed = loads_exact(response.content)
        except (ValueError, UnicodeDecodeError, DataDecodeError):
            return _Answer(
                OutcomeClass.UNKNOWN_OUTCOME,
                status,
                message=f"HTTP 200 with a non-JSON body: {response.text[:200]!r}",
            )
        if not isinstance(parsed, dict):
            return _Answer(
                OutcomeClass.UNKNOWN_OUTCOME, status, message="HTTP 200 with a non-object body"
            )
        return _Answer(None, status, body=parsed)

    def _url(self, path: str, access_token: str | None) -> httpx.URL:
        """The endpoint's URL with ``?access_token=`` (none for token calls), as httpx builds
        it from ``url`` + ``params``; parsed once per path and token (safe across threads:
        a race only parses twice)."""
        held = self._urls.get(path)
        if held is not None and held[0] == access_token:
            return held[1]
        params = {} if access_token is None else {ACCESS_TOKEN_PARAM: access_token}
        url = httpx.URL(self._tenant.url_for(path), params=params)
        self._urls[path] = (access_token, url)
        return url

    def _finish(
        self,
        entry: int | None,
        interface: str,
        request_id: str | None,
        context: CallContext,
        outcome: OutcomeClass,
        http_status: int | None,
        error_code: str | None,
        message: str,
        started: float,
    ) -> None:
        elapsed = max(0.0, self._clock() - started)
        latency_ms = int(elapsed * 1000)
        metrics.cloud_calls().labels(interface=interface, outcome=outcome.value).inc()
        metrics.cloud_call_seconds().labels(interface=interface).observe(elapsed)
        (context.ledger or self._ledger).finish(
            entry,
            tenant=self._tenant.name,
            interface=interface,
            request_id=request_id,
            context=context,
            outcome=outcome.value,
            http_status=http_status,
            error_code=error_code,
            message=message,
            latency_ms=latency_ms,
        )


def _describe(exc: httpx.TransportError, phase: str) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__} ({phase}): {text}"
