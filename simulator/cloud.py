"""The simulated cloud's behaviour, free of HTTP: tokens, the gateway, issuance, operator actions.

``SimulatedCloud`` is driven by the ASGI layer (``simulator.app``), which owns transport
matters (routing, status codes, latency, 5xx and dropped connections). Everything here runs
on the event loop thread.

Gateway checks, in the order the cloud is assumed to make them (docs/CLOUD-CONTRACT.md §11 [G]):

| step | refusal (errorCode, message from ``schemas.cloud_contract``) |
|---|---|
| envelope fields present | ``-10004`` ``<field>不能为空`` |
| businessSystemCode registered for the tenant | ``-10001`` ``未知业务系统编码<code>`` |
| interfaceCode known | ``-10010`` ``接口编码不存在`` |
| ``data`` base64 → JSON (raw JSON only in lenient mode) | ``-10003`` ``data解密失败`` |
| BILL.PUSH: each bill passes ``simulator.rules.check_bill`` | ``-10004``…``-10008`` |
| BILL.PUSH: seller tax id configured for the tenant | ``-10005`` ``销方税号<x>未在发票云维护`` |
| BILL.PUSH: billNo not live already | ``-10009`` ``单据编号<billNo>已存在`` |
| BILL.PUSH: billNo named by a refuse rule (``simulator.bill_rules``) | that rule's errorCode |
| BILL.PUSH, red 专票: ``redInfoBillNo`` given | ``-10004`` ``redInfoBillNo不能为空`` |
| BILL.PUSH, red bill: its blue invoice issued in this tenant | ``-10013`` ``原蓝票<n>不存在`` |
| BILL.PUSH, red bill: that invoice not voided | ``-10014`` ``原蓝票<n>已作废…`` |
| BILL.PUSH, red bill: amount, tax ≤ canRedAmount, canRedTaxAmount | ``-10015`` ``红冲金额超过…`` |
| BILL.INVOICE.QUERY: bill known and live | ``-10011`` ``单据不存在`` (success:false) |

Where the contract has several plausible readings, ``self.dialect``
(``schemas.cloud_contract.Dialect``; docs/DIALECTS.md) picks one: unknown_bill, withdraw_refusal,
success_data, query_lines, duplicate_bill, unknown_fields, request_id, merge, callback_data and
failed_in_query, biz_control, cancel_item and partial_red are played here, expired_token and
status_field in ``simulator.app``. ``data``
is decoded and encoded with the tenant's codec (BASE64 or AES, ``schemas.data_codec``).

A BILL.PUSH batch is all-or-nothing: the first refused bill refuses the call and nothing is
stored. Issue precedence follows §11: required fields, then codes and formats, then per-line
checks, then the bill total.

After issuance (docs/CLOUD-CONTRACT.md §15): a clerk's 作废 (``operator_void``) and 红冲
(``operator_red``), red bills pushed through BILL.PUSH, the credit quota (``simulator.quota``)
and two admin ways to make the cloud and the bridge disagree (``withdraw_behind``,
``plant_bill``).

| event | callbacks (each through the fault dice like any other) |
|---|---|
| 作废 of issued invoices | ``INVOICE.CANCEL`` for their bill, ``originalInvoiceStatus`` 6 (a) |
| a clerk's 红冲 | ``INVOICE.RED`` for the original's bill (b) |
| a pushed red bill issued | ``INVOICE.OPEN`` for the red bill, then ``INVOICE.RED`` (b) |
| any issuance | ``bizControl`` on INVOICE.OPEN as the dialect ``biz_control`` says |

INVOICE.OPEN items of a red bill carry ``invoiceProperty`` 1 (§9.1: OPEN means issued, of
either colour). (b) INVOICE.RED carries the red invoice's fields with ``billNo`` = the
original's bill, ``original*`` of the blue one and ``originalInvoiceStatus`` 3.

(a) the item is the voided invoice itself (``cancel_item=own_fields``) or only its ``original*``
fields (``original_only``). Under ``partial_red=status_2`` INVOICE.RED's
``originalInvoiceStatus`` is the original's own status, 2 for a partial 红冲. A clerk's
红冲单 belongs to no 业务系统: it gets no INVOICE.OPEN.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import ValidationError

from schemas.cloud_contract import (
    BILL_LABEL,
    BIZ_CONTROL_BIZ_TYPE,
    BIZ_CONTROL_ISSUE_BIZ_TYPE,
    CLOUD_RED_BILL_NO_TEMPLATE,
    INVOICE_STATUS_PARTIAL_RED,
    INVOICE_STATUS_RED,
    INVOICE_STATUS_VOID,
    INVOICE_TAX_TOLERANCE,
    ISSUE_ERROR_MESSAGES,
    PUSH_BATCH_LABEL_TEMPLATE,
    PUSH_ITEM_OK_MESSAGE,
    PUSH_MAX_BILLS,
    PUSH_SUCCESS_MESSAGE,
    QUERY_OK_MESSAGE,
    QUOTA_ISSUE_ERROR_MESSAGE,
    RED_INVOICE_PROPERTY,
    RED_NEEDS_RED_INFO_TYPES,
    RED_REASONS,
    REQUEST_BODY_LABEL,
    TOKEN_FAILURE_BAD_ACCOUNT,
    TOKEN_FAILURE_BAD_APP,
    TOKEN_FAILURE_BAD_LOGIN,
    UNLIMITED_DAY_SURPLUS,
    UNLIMITED_MONTH_SURPLUS,
    WITHDRAW_ALREADY_ISSUED,
    WITHDRAW_ALREADY_WITHDRAWN,
    WITHDRAW_BILL_UNKNOWN,
    WITHDRAW_ISSUING,
    WITHDRAW_OK_MESSAGE,
    BillReturn,
    Dialect,
    ErrorCode,
    TokenFailure,
    callback_style_for,
    failure_body,
    gateway_error,
    max_lines_per_invoice,
    token_failure_body,
)
from schemas.kingdee import (
    AppTokenRequest,
    BizControl,
    CallbackInterfaceCode,
    DataCodec,
    DataDecodeError,
    InterfaceCode,
    InvoiceItem,
    InvoiceQueryRequestData,
    LoginRequest,
    WithdrawRequestData,
    build_callback,
    decode_data,
    encode_data,
    token_success_body,
)
from schemas.tax import line_amounts
from simulator.bill_rules import BillRules
from simulator.bills import (
    WITHDRAWABLE_STATES,
    BillBook,
    BillKey,
    BillState,
    InvoiceLine,
    InvoiceStatus,
    SimBill,
    SimInvoice,
    SimLine,
)
from simulator.callbacks import CallbackDelivery, CallbackSender, OutgoingCallback
from simulator.config import SimulatorConfig
from simulator.faults import FaultDice, FaultPlan
from simulator.issuance import InvoiceNumbers, invoice_item, plan_invoices
from simulator.persistence import StateFile
from simulator.quota import Quota, QuotaBook, SimClock
from simulator.rules import Refusal, RuledBill, RuledLine, check_bill
from simulator.stats import CallStats
from simulator.tenancy import SimTenant, TenantDirectory
from simulator.tokens import TokenBook

__all__ = ["GatewayResult", "OperatorError", "PlantRefused", "SimulatedCloud"]

_INTERFACES = frozenset(code.value for code in InterfaceCode)
_ENVELOPE_FIELDS = ("requestId", "businessSystemCode", "interfaceCode", "data")


class OperatorError(Exception):
    """An admin action that does not apply to the bill in its current state (HTTP 409)."""


class PlantRefused(Exception):
    """A planted bill the cloud's own checks refuse (HTTP 400 with the gateway's body)."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message")))
        self.body = body


RedCheck = tuple[ErrorCode, dict[str, object]]


@dataclass(slots=True)
class GatewayResult:
    """What the gateway answered: the interface (for statistics), the body, and whether a
    BILL.PUSH stored bills (so transport faults after commit know there is an outcome)."""

    interface: str
    body: dict[str, Any]
    committed: bool = False

    @property
    def outcome(self) -> str:
        return "success" if self.body.get("success") else str(self.body.get("errorCode"))


def _failure(error_code: ErrorCode, **values: object) -> dict[str, Any]:
    return failure_body(error_code, **values)


class SimulatedCloud:
    """All state of one simulated Kingdee Invoice Cloud serving several tenants."""

    def __init__(self, tenants: Sequence[SimTenant], config: SimulatorConfig) -> None:
        self.config = config
        self.tenants = TenantDirectory(tenants)
        self.dice = FaultDice(config.faults, config.seed)
        self.stats = CallStats()
        self.tokens = TokenBook()
        self.bills = BillBook()
        self.numbers = InvoiceNumbers()
        self.callback_urls: dict[str, str] = {}
        self.bill_rules = BillRules()
        self.dialect: Dialect = config.dialect
        self.clock = SimClock()
        self.quota = QuotaBook(self.clock)
        self._configure_quotas()
        self.sender = CallbackSender(
            self.stats,
            config.callback_retry_schedule,
            config.callback_timeout,
            listener=self._on_delivery,
        )
        self.state_file: StateFile | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self.started_at = time.time()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.sender.start()
        if self.config.state_file is not None:
            self.state_file = StateFile(self.config.state_file)
            self._restore(self.state_file)
            self._flusher = asyncio.get_running_loop().create_task(self._flush_meta_forever())

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sender.stop()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self.state_file is not None:
            self.flush_meta()
            self.state_file.close()
            self.state_file = None

    def _configure_quotas(self) -> None:
        self.quota.limits.clear()
        for tenant, quota in self.config.quotas:
            self.quota.set(tenant, quota)

    def set_quota(self, tenant: str, quota: Quota | None) -> None:
        if tenant not in self.tenants.by_name:
            raise KeyError(tenant)
        self.quota.set(tenant, quota)

    def _restore(self, state: StateFile) -> None:
        meta = state.load_meta()
        self.quota.restore(meta.get("quota", {}))
        self.clock.offset_seconds = float(meta.get("clock_offset_seconds", 0.0))
        self.stats.restore(meta.get("stats", {}))
        self.numbers.restore(meta.get("numbers", {}))
        self.callback_urls.update(meta.get("callback_urls", {}))
        violations = meta.get("violations", {})
        self.bills.live_twice.extend(violations.get("live_twice", []))
        self.bills.over_issued.extend(violations.get("over_issued", []))
        for bill in state.load_bills():
            self.bills.load(bill)
            if bill.state is BillState.ISSUING:
                bill.record("issuance_rescheduled", reason="simulator restarted")
                self._schedule_issue(bill, self.config.issue_delay)

    def flush_meta(self) -> None:
        if self.state_file is None:
            return
        self.state_file.save_meta(
            {
                "stats": self.stats.snapshot(),
                "numbers": self.numbers.state(),
                "callback_urls": self.callback_urls,
                "violations": self.bills.violations(),
                "quota": self.quota.state(),
                "clock_offset_seconds": repr(self.clock.offset_seconds),
            }
        )

    async def _flush_meta_forever(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.flush_meta()

    def _save(self, bill: SimBill) -> None:
        if self.state_file is not None:
            self.state_file.save_bill(bill)

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def reset(self, *, keep_tokens: bool = False) -> None:
        """Forget every bill, callback, statistic and override; faults back to the start plan."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        self.sender.cancel_all()
        self.bills.clear()
        self.stats.reset()
        self.callback_urls.clear()
        self.bill_rules.clear()
        self.dialect = self.config.dialect
        self.clock.offset_seconds = 0.0
        self._configure_quotas()
        self.quota.clear_usage()
        if not keep_tokens:
            self.tokens.clear()
        self.dice.plan = self.config.faults
        self.dice.reseed(self.config.seed)
        if self.state_file is not None:
            self.state_file.clear()

    def set_faults(self, plan: FaultPlan, seed: int | None = None, reseed: bool = False) -> None:
        self.dice.plan = plan
        if reseed:
            self.dice.reseed(seed)

    # ------------------------------------------------------------------ tokens

    def _token_ttl(self) -> float:
        return self.dice.plan.token_ttl or self.config.token_ttl

    def app_token(self, path: str, body: Any) -> dict[str, Any]:
        """getAppToken.do: appId + appSecret/appSecuret + accountId → app_token."""
        try:
            request = AppTokenRequest.model_validate(body)
        except ValidationError as exc:
            missing = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
            failure = (
                TOKEN_FAILURE_BAD_ACCOUNT if missing == {"accountId"} else TOKEN_FAILURE_BAD_APP
            )
            return self._token_refusal("getAppToken", failure, "app_token")
        tenant = self.tenants.at(path, request.accountId)
        if tenant is None:
            return self._token_refusal("getAppToken", TOKEN_FAILURE_BAD_ACCOUNT, "app_token")
        secret_ok = hmac.compare_digest(
            request.appSecret.get_secret_value().encode(), tenant.app_secret.encode()
        )
        if request.appId != tenant.app_id or not secret_ok:
            return self._token_refusal("getAppToken", TOKEN_FAILURE_BAD_APP, "app_token")
        record = self.tokens.issue("app", tenant.name, tenant.account_id, self._token_ttl())
        self.stats.token(tenant.name, "app")
        self.stats.call("getAppToken", "success")
        return token_success_body("app_token", record.token, record.expire_time_ms)

    def login(self, path: str, body: Any) -> dict[str, Any]:
        """login.do: apptoken + user + accountId + usertype → access_token."""
        try:
            request = LoginRequest.model_validate(body)
        except ValidationError:
            return self._token_refusal("login", TOKEN_FAILURE_BAD_LOGIN, "access_token")
        tenant = self.tenants.at(path, request.accountId)
        if tenant is None:
            return self._token_refusal("login", TOKEN_FAILURE_BAD_ACCOUNT, "access_token")
        app = self.tokens.valid(request.apptoken.get_secret_value(), "app")
        if (
            app is None
            or app.tenant != tenant.name
            or request.user != tenant.user
            or request.usertype != tenant.usertype
        ):
            return self._token_refusal("login", TOKEN_FAILURE_BAD_LOGIN, "access_token")
        record = self.tokens.issue("access", tenant.name, tenant.account_id, self._token_ttl())
        self.stats.token(tenant.name, "access")
        self.stats.call("login", "success")
        return token_success_body("access_token", record.token, record.expire_time_ms)

    def _token_refusal(self, interface: str, failure: TokenFailure, field: str) -> dict[str, Any]:
        self.stats.call(interface, failure.code)
        return token_failure_body(failure, field)

    def authenticate(self, path: str, token: str | None) -> SimTenant | None:
        """The tenant a live access_token belongs to, if it is served at ``path``."""
        if not token:
            return None
        record = self.tokens.valid(token, "access")
        if record is None:
            return None
        tenant = self.tenants.by_name.get(record.tenant)
        if tenant is None or tenant.path != path:
            return None
        return tenant

    # ------------------------------------------------------------------ gateway

    def read_envelope(
        self, tenant: SimTenant, envelope: Any
    ) -> tuple[str, str, Any] | GatewayResult:
        """``(businessSystemCode, interfaceCode, decoded data)`` or the refusal."""
        if not isinstance(envelope, dict):
            return GatewayResult("openApi", _failure(ErrorCode.REQUIRED, field=REQUEST_BODY_LABEL))
        for name in _ENVELOPE_FIELDS:
            if name == "requestId" and self.dialect.request_id == "optional":
                continue
            value = envelope.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                interface = envelope.get("interfaceCode")
                label = interface if interface in _INTERFACES else "openApi"
                return GatewayResult(str(label), _failure(ErrorCode.REQUIRED, field=name))
        code = str(envelope["businessSystemCode"]).strip()
        interface = str(envelope["interfaceCode"]).strip()
        label = interface if interface in _INTERFACES else "openApi"
        if code not in tenant.business_system_codes:
            return GatewayResult(label, _failure(ErrorCode.UNKNOWN_BUSINESS_SYSTEM, code=code))
        if interface not in _INTERFACES:
            return GatewayResult("openApi", _failure(ErrorCode.UNKNOWN_INTERFACE))
        raw = envelope["data"]
        if not self.config.lenient_data and (
            not isinstance(raw, str) or raw.lstrip()[:1] in ("{", "[")
        ):
            return GatewayResult(interface, _failure(ErrorCode.DATA_UNDECODABLE))
        try:
            payload = decode_data(raw, tenant.codec)
        except DataDecodeError:
            return GatewayResult(interface, _failure(ErrorCode.DATA_UNDECODABLE))
        return code, interface, payload

    async def gateway(self, tenant: SimTenant, envelope: Any) -> GatewayResult:
        read = self.read_envelope(tenant, envelope)
        if isinstance(read, GatewayResult):
            return read
        code, interface, payload = read
        if interface == InterfaceCode.BILL_PUSH:
            return await self.push(tenant, code, payload)
        if interface == InterfaceCode.BILL_WITHDRAW:
            return self.withdraw(tenant, payload)
        return self.query(tenant, payload)

    # ------------------------------------------------------------------ BILL.PUSH

    async def push(
        self, tenant: SimTenant, business_system_code: str, payload: Any
    ) -> GatewayResult:
        interface = InterfaceCode.BILL_PUSH.value
        if not isinstance(payload, list) or not all(isinstance(b, dict) for b in payload):
            return GatewayResult(interface, _failure(ErrorCode.DATA_UNDECODABLE))
        if not payload:
            return GatewayResult(interface, _failure(ErrorCode.REQUIRED, field="data"))
        if len(payload) > PUSH_MAX_BILLS:
            label = PUSH_BATCH_LABEL_TEMPLATE.format(limit=PUSH_MAX_BILLS)
            return GatewayResult(interface, _failure(ErrorCode.INVALID, field=label))
        if self.dice.roll("push_system_error"):
            return GatewayResult(interface, _failure(ErrorCode.SYSTEM_ERROR))
        bills: list[RuledBill] = []
        for raw in payload:
            checked = check_bill(raw, unknown_fields=self.dialect.unknown_fields)
            if isinstance(checked, Refusal):
                return GatewayResult(interface, checked.body())
            bills.append(checked)
        seen: set[BillKey] = set()
        for bill in bills:
            if bill.seller not in tenant.seller_tax_ids:
                return GatewayResult(
                    interface, _failure(ErrorCode.SELLER_UNKNOWN, tax_id=bill.seller)
                )
            key = (tenant.name, bill.seller, bill.bill_no)
            duplicate = key in seen or bool(self.bills.live(key))
            accepted_anyway = self.dialect.duplicate_bill == "accepted" or self.dice.roll(
                "accept_duplicate_push"
            )
            if duplicate and not accepted_anyway:
                return GatewayResult(interface, _failure(ErrorCode.DUPLICATE, bill_no=bill.bill_no))
            seen.add(key)
        for bill in bills:
            red = self._red_check_ruled(tenant.name, bill)
            if red is not None:
                return GatewayResult(interface, _failure(red[0], **red[1]))
        for bill in bills:
            refusal = self.bill_rules.refusal(bill.bill_no)
            if refusal is not None:
                return GatewayResult(
                    interface,
                    failure_body(
                        refusal, bill_no=bill.bill_no, tax_id=bill.seller, field=BILL_LABEL, row=1
                    ),
                )
        accepted = [self._accept(tenant, business_system_code, b) for b in bills]
        immediate = any(b.auto_invoice for b in accepted) and self.dice.roll(
            "callback_before_response"
        )
        for sim in accepted:
            if not sim.auto_invoice:
                continue
            if immediate:
                sim.record("issued_before_push_answer", fault="callback_before_response")
                deliveries = self._issue(sim, use_faults=True)
                await asyncio.gather(*(d.first_attempt_done.wait() for d in deliveries))
            else:
                self._schedule_issue(sim, self.config.issue_delay)
        items = [
            {"billNo": b.bill_no, "success": True, "message": PUSH_ITEM_OK_MESSAGE}
            for b in accepted
        ]
        body = {
            "success": True,
            "errorCode": "0",
            "message": PUSH_SUCCESS_MESSAGE,
            "data": self._success_data(tenant, items),
        }
        return GatewayResult(interface, body, committed=True)

    def _success_data(self, tenant: SimTenant, items: list[dict[str, Any]]) -> Any:
        """Push/withdraw success ``data``: plain, or encoded like requests (dialect)."""
        if self.dialect.success_data == "base64":
            return encode_data(items, tenant.codec)
        return items

    def _accept(
        self, tenant: SimTenant, code: str, bill: RuledBill, source: str = "push"
    ) -> SimBill:
        key = (tenant.name, bill.seller, bill.bill_no)
        auto = bill.auto_invoice == "1" if bill.auto_invoice in ("0", "1") else tenant.auto_invoice
        lines = [_sim_line(line) for line in bill.lines]
        amount_with_tax = sum(
            (
                line_amounts(line.amount, line.tax_rate, bill.include_tax, line.tax_amount).incl
                for line in lines
            ),
            Decimal("0.00"),
        )
        sim = SimBill(
            id=self.bills.next_id(),
            tenant=tenant.name,
            seller_tax_id=bill.seller,
            bill_no=bill.bill_no,
            generation=len(self.bills.generations(key)) + 1,
            business_system_code=code,
            invoice_type=bill.invoice_type,
            include_tax_flag=bill.include_tax,
            auto_invoice=auto,
            header=dict(bill.header),
            lines=lines,
            amount_with_tax=amount_with_tax,
            state=BillState.ISSUING if auto else BillState.ACCEPTED,
            pushed_at=int(time.time() * 1000),
            source=source,
        )
        sim.record(
            "pushed" if source == "push" else source,
            businessSystemCode=code,
            autoInvoice=auto,
            state=sim.state.value,
        )
        self.bills.add(sim)
        self.stats.bills["pushed"] += 1
        self._save(sim)
        return sim

    # ------------------------------------------------------------------ BILL.WITHDRAW

    def withdraw(self, tenant: SimTenant, payload: Any) -> GatewayResult:
        interface = InterfaceCode.BILL_WITHDRAW.value
        try:
            request = WithdrawRequestData.model_validate(payload)
        except ValidationError as exc:
            return GatewayResult(interface, _refusal_for_validation(exc, "serialNos"))
        scope = request.sellerTaxpayerId or request.orgCode
        results = [self._withdraw_one(tenant, bill_no, scope) for bill_no in request.serialNos]
        if self.dialect.withdraw_refusal == "envelope" and not any(r["success"] for r in results):
            # The refusal of the only/all bill(s) at the envelope level (dialect).
            reason = str(results[0]["message"])
            unknown = all(r["message"] == WITHDRAW_BILL_UNKNOWN for r in results)
            if unknown:
                return GatewayResult(interface, _failure(ErrorCode.BILL_UNKNOWN))
            return GatewayResult(interface, _failure(ErrorCode.WITHDRAW_REFUSED, reason=reason))
        body = {
            "success": True,
            "errorCode": "0",
            "message": WITHDRAW_OK_MESSAGE,
            "data": self._success_data(tenant, results),
        }
        return GatewayResult(interface, body)

    def _withdraw_one(self, tenant: SimTenant, bill_no: str, scope: str | None) -> dict[str, Any]:
        candidates = self.bills.find(bill_no, tenant=tenant.name, seller_tax_id=scope)
        live = [b for latest in candidates for b in self.bills.live(latest.key)]
        if not live:
            known = any(b.state is BillState.WITHDRAWN for b in candidates)
            message = WITHDRAW_ALREADY_WITHDRAWN if known else WITHDRAW_BILL_UNKNOWN
            return {"serialNo": bill_no, "success": False, "message": message}
        refusal = None
        for bill in live:
            if bill.state is BillState.ISSUING:
                refusal = WITHDRAW_ISSUING
            elif bill.state not in WITHDRAWABLE_STATES:
                refusal = WITHDRAW_ALREADY_ISSUED
        if refusal is not None:
            for bill in live:
                bill.record("withdraw_refused", message=refusal)
                self._save(bill)
            return {"serialNo": bill_no, "success": False, "message": refusal}
        for bill in live:
            self._cancel_timer(bill.id)
            bill.state = BillState.WITHDRAWN
            bill.record("withdrawn")
            self.stats.bills["withdrawn"] += 1
            self._save(bill)
        return {"serialNo": bill_no, "success": True, "message": WITHDRAW_OK_MESSAGE}

    # ------------------------------------------------------------------ BILL.INVOICE.QUERY

    def query(self, tenant: SimTenant, payload: Any) -> GatewayResult:
        interface = InterfaceCode.BILL_INVOICE_QUERY.value
        try:
            request = InvoiceQueryRequestData.model_validate(payload)
        except ValidationError as exc:
            return GatewayResult(interface, _refusal_for_validation(exc, "serialNo"))
        key = (tenant.name, request.sellerTaxpayerId, request.serialNo)
        live = self.bills.live(key)
        result: list[dict[str, Any]]
        if not live:
            if self.dialect.unknown_bill == "error":
                return GatewayResult(interface, _failure(ErrorCode.BILL_UNKNOWN))
            if self.dialect.unknown_bill == "empty_list":
                result = [{"billNo": request.serialNo, "invoiceList": []}]
            else:
                result = []
        else:
            items = [
                self._query_item(bill, invoice)
                for bill in live
                for invoice in bill.invoices
                if invoice.status is not None
                and (
                    invoice.status is InvoiceStatus.ISSUED
                    or self.dialect.failed_in_query == "listed"
                )
            ]
            result = [{"billNo": request.serialNo, "invoiceList": items}]
        data = result if self.config.plain_query_data else encode_data(result, tenant.codec)
        body = {"success": True, "errorCode": "0", "message": QUERY_OK_MESSAGE, "data": data}
        return GatewayResult(interface, body)

    def _query_item(self, bill: SimBill, invoice: SimInvoice) -> dict[str, Any]:
        """A query ``invoiceList`` item: lines under ``goods`` (§8) or ``invoiceDetail``."""
        item = self._wire_item(bill, invoice)
        if self.dialect.query_lines == "goods":
            item["goods"] = item.pop("invoiceDetail")
        return item

    # ------------------------------------------------------------------ issuance

    def _schedule_issue(self, bill: SimBill, delay: float) -> None:
        self._cancel_timer(bill.id)
        loop = asyncio.get_running_loop()
        self._timers[bill.id] = loop.call_later(delay, self._issue_due, bill.id)
        bill.record("issuance_scheduled", delaySeconds=str(delay))

    def _issue_due(self, bill_id: int) -> None:
        self._timers.pop(bill_id, None)
        bill = self.bills.get(bill_id)
        if bill is None:
            return
        if self.dialect.merge == "when_asked" and bill.header.get("autoMerge") == "1":
            merged = self._merge_group(bill)
            if merged is not None:
                self._issue_merged(merged[0], merged[1])
                return
        self._issue(bill, use_faults=True)

    # ------------------------------------------------------------------ merging (dialect)

    def _merge_group(self, bill: SimBill) -> tuple[list[SimBill], list[InvoiceLine]] | None:
        """Bills to issue on ONE invoice with ``bill`` and that invoice's lines, or None.

        Partners (§6 合并 [D S4], rules [G]): autoMerge=1, still waiting for issuance, same
        tenant, seller, buyer (name and tax id), invoiceType and sign. Each must fit one
        invoice alone, and the merged invoice must respect the line limit, the amount limit
        and the ±1.27 invoice tax tolerance (§11); a partner that would break one is left out.
        """
        limit = self.config.invoice_amount_limit
        max_lines = self.config.max_lines_per_invoice or max_lines_per_invoice(bill.invoice_type)
        own = plan_invoices(bill, limit, self.config.max_lines_per_invoice)
        if len(own) != 1:
            return None
        group, lines = [bill], list(own[0])

        def buyer(b: SimBill) -> tuple[str, str, str, bool]:
            header = b.header
            return (
                str(header.get("buyerName", "")),
                str(header.get("buyerTaxpayerId", "")),
                b.invoice_type,
                b.amount_with_tax < 0,
            )

        for other in self.bills:
            if (
                other is bill
                or other.id not in self._timers
                or other.state is not BillState.ISSUING
                or other.invoices
                or other.header.get("autoMerge") != "1"
                or (other.tenant, other.seller_tax_id) != (bill.tenant, bill.seller_tax_id)
                or buyer(other) != buyer(bill)
            ):
                continue
            planned = plan_invoices(other, limit, self.config.max_lines_per_invoice)
            if len(planned) != 1:
                continue
            candidate = lines + planned[0]
            net = sum((line.amount for line in candidate), Decimal("0.00"))
            if len(candidate) > max_lines or (limit is not None and abs(net) > limit):
                continue
            if abs(_invoice_tax_error(candidate)) > INVOICE_TAX_TOLERANCE:
                continue
            group.append(other)
            lines = candidate
        if len(group) < 2:
            return None
        for seq, line in enumerate(lines, start=1):
            line.seq = seq
        return group, lines

    def _issue_merged(self, group: list[SimBill], lines: list[InvoiceLine]) -> None:
        """Issue (or fail) one invoice for every bill of ``group``; each bill calls back."""
        invoice = SimInvoice(
            index=1,
            order_no=self.numbers.order_no(),
            serial_no=self.numbers.order_no(),
            lines=lines,
        )
        # Each bill's share is its own 价税合计: the merged invoice covers them exactly.
        invoice.shares = {str(b.id): str(b.amount_with_tax) for b in group}
        tenant = group[0].tenant
        failure = None
        if not group[0].red and self.quota.refuses(tenant, invoice.include_tax_amount):
            failure = QUOTA_ISSUE_ERROR_MESSAGE
        elif self.dice.roll("issue_fail"):
            failure = self.dice.choice(ISSUE_ERROR_MESSAGES)
        if failure is None:
            self._number(invoice, group[0].invoice_type)
            self.stats.invoices["issued"] += 1
            if not group[0].red:
                self.quota.consume(tenant, invoice.include_tax_amount)
        else:
            invoice.status = InvoiceStatus.FAILED
            invoice.issue_error_message = failure
            self.stats.invoices["failed"] += 1
        bill_nos = [b.bill_no for b in group]
        for bill in group:
            self._cancel_timer(bill.id)
            bill.invoices = [invoice]
            self.bills.index_invoices(bill)
            bill.record("merged", orderNo=invoice.order_no, bills=bill_nos)
            if failure is None:
                bill.record(
                    "invoice_issued",
                    orderNo=invoice.order_no,
                    invoiceCode=invoice.invoice_code,
                    invoiceNum=invoice.invoice_num,
                    includeTaxAmount=str(invoice.include_tax_amount),
                )
                bill.state = BillState.INVOICED
            else:
                bill.record("invoice_failed", orderNo=invoice.order_no, message=failure)
                bill.state = BillState.FAILED
            bill.record("state", state=bill.state.value)
            self.bills.check_issued_amount(bill)
            self._save(bill)
            self._send_issue_callbacks(bill, [invoice])

    def _number(self, invoice: SimInvoice, invoice_type: str) -> None:
        code, number = self.numbers.invoice_number(invoice_type)
        invoice.status = InvoiceStatus.ISSUED
        invoice.invoice_code = code
        invoice.invoice_num = number
        invoice.invoice_date = date.today().isoformat()
        invoice.issue_error_message = ""
        invoice.check_code = f"{secrets.randbelow(10**20):020d}"

    def _cancel_timer(self, bill_id: int) -> None:
        handle = self._timers.pop(bill_id, None)
        if handle is not None:
            handle.cancel()

    def _issue(
        self, bill: SimBill, *, use_faults: bool, forced_failure: str | None = None
    ) -> list[CallbackDelivery]:
        """Issue (or fail) every invoice of ``bill`` not yet issued; send the callbacks."""
        self._cancel_timer(bill.id)
        if not bill.invoices:
            self._plan(bill)
        pending = [inv for inv in bill.invoices if inv.status is not InvoiceStatus.ISSUED]
        if not pending:
            return []
        failures: dict[int, str] = {}
        refusal = None if forced_failure is not None else self._issue_refusal(bill, pending)
        if forced_failure is not None:
            failures = {inv.index: forced_failure for inv in pending}
        elif refusal is not None:
            # Not a fault: the quota or the red invoice's reference refuses the issuance.
            failures = {inv.index: refusal for inv in pending}
        elif use_faults and self.dice.roll("issue_fail"):
            message = self.dice.choice(ISSUE_ERROR_MESSAGES)
            failures = {inv.index: message for inv in pending}
        elif use_faults and len(pending) >= 2 and self.dice.roll("issue_partial"):
            count = self.dice.randint(1, len(pending) - 1)
            for position in self.dice.sample_indices(len(pending), count):
                failures[pending[position].index] = self.dice.choice(ISSUE_ERROR_MESSAGES)
        today = date.today().isoformat()
        for invoice in pending:
            if invoice.index in failures:
                invoice.status = InvoiceStatus.FAILED
                invoice.issue_error_message = failures[invoice.index]
                self.stats.invoices["failed"] += 1
                bill.record(
                    "invoice_failed", orderNo=invoice.order_no, message=failures[invoice.index]
                )
                continue
            code, number = self.numbers.invoice_number(bill.invoice_type)
            invoice.status = InvoiceStatus.ISSUED
            invoice.invoice_code = code
            invoice.invoice_num = number
            invoice.invoice_date = today
            invoice.issue_error_message = ""
            invoice.check_code = f"{secrets.randbelow(10**20):020d}"
            self.stats.invoices["red" if bill.red else "issued"] += 1
            bill.record(
                "invoice_issued",
                orderNo=invoice.order_no,
                invoiceCode=code,
                invoiceNum=number,
                includeTaxAmount=str(invoice.include_tax_amount),
            )
        issued = sum(1 for inv in bill.invoices if inv.status is InvoiceStatus.ISSUED)
        if issued == len(bill.invoices):
            bill.state = BillState.INVOICED
        elif issued:
            bill.state = BillState.PARTIALLY_INVOICED
        else:
            bill.state = BillState.FAILED
        bill.record("state", state=bill.state.value)
        issued_now = [inv for inv in pending if inv.status is InvoiceStatus.ISSUED]
        reversals: list[OutgoingCallback] = []
        if bill.red:
            reversals = self._apply_reversals(bill, issued_now)
        else:
            self.quota.consume(
                bill.tenant, sum((i.include_tax_amount for i in issued_now), Decimal("0.00"))
            )
        self.bills.check_issued_amount(bill)
        self._save(bill)
        # A clerk's 红冲单 belongs to no 业务系统: only INVOICE.RED (for the original) goes out.
        return self._send_issue_callbacks(
            bill, pending, extra=reversals, open_callbacks=bill.source != "cloud_red"
        )

    def _plan(self, bill: SimBill) -> None:
        plan = plan_invoices(
            bill, self.config.invoice_amount_limit, self.config.max_lines_per_invoice
        )
        bill.invoices = [
            SimInvoice(
                index=index,
                order_no=self.numbers.order_no(),
                serial_no=self.numbers.order_no(),
                lines=lines,
            )
            for index, lines in enumerate(plan, start=1)
        ]
        self.bills.index_invoices(bill)
        bill.record("split", invoices=len(bill.invoices))

    def _origin(self, bill: SimBill) -> str:
        return self.tenants.by_name[bill.tenant].origin

    def _callback_url(self, bill: SimBill) -> str | None:
        return self.callback_urls.get(bill.business_system_code) or self.config.callback_url

    def _codec(self, bill: SimBill) -> DataCodec:
        return self.tenants.by_name[bill.tenant].codec

    def _outgoing(
        self, bill: SimBill, url: str, body: dict[str, Any], kind: str
    ) -> OutgoingCallback:
        if self.dialect.callback_data == "plain":
            # Some receivers get the object/array itself (§9: "be tolerant" [C S13,S14]).
            body = {**body, "data": decode_data(body["data"], self._codec(bill))}
        dice = self.dice
        delay = dice.plan.callback_delay_s if dice.roll("callback_delay") else 0.0
        return OutgoingCallback(
            url=url,
            body=body,
            tenant=bill.tenant,
            bill_no=bill.bill_no,
            bill_id=bill.id,
            kind=kind,
            delay_s=delay,
            duplicate=dice.roll("callback_duplicate"),
            drop=dice.roll("callback_drop") or self.bill_rules.drops_callbacks_of(bill.bill_no),
        )

    def _send_issue_callbacks(
        self,
        bill: SimBill,
        touched: list[SimInvoice],
        *,
        extra: Sequence[OutgoingCallback] = (),
        open_callbacks: bool = True,
    ) -> list[CallbackDelivery]:
        """INVOICE.OPEN for ``touched`` (per bill or per invoice), then ``extra``."""
        outgoing: list[OutgoingCallback] = []
        url = self._callback_url(bill) if open_callbacks else None
        if open_callbacks and url is None:
            self.stats.callbacks["skipped"] += 1
            bill.record("callback_skipped", reason="no callback URL configured")
        if url is not None:
            outgoing.extend(self._open_callbacks(bill, touched, url))
        reverse = len(outgoing) > 1 and self.dice.roll("callback_reorder")
        if reverse:
            bill.record("callbacks_reordered")
            outgoing.reverse()
        outgoing.extend(extra)
        if not outgoing:
            return []
        return self.sender.send_batch(outgoing)

    def _open_callbacks(
        self, bill: SimBill, touched: list[SimInvoice], url: str
    ) -> list[OutgoingCallback]:
        style = callback_style_for(bill.business_system_code)
        biz = self._biz_control_for(bill, style)
        if style == "per_bill":
            items = [
                InvoiceItem.model_validate(self._wire_item(bill, inv))
                for inv in bill.invoices
                if inv.status is not None
            ]
            body = build_callback(
                CallbackInterfaceCode.INVOICE_OPEN, items, "per_bill", biz, codec=self._codec(bill)
            )
            return [self._outgoing(bill, url, body, "INVOICE.OPEN per_bill")]
        outgoing: list[OutgoingCallback] = []
        for invoice in touched:
            item = InvoiceItem.model_validate(self._wire_item(bill, invoice))
            body = build_callback(
                CallbackInterfaceCode.INVOICE_OPEN, [item], "per_invoice", codec=self._codec(bill)
            )
            if biz is not None:
                # build_callback documents bizControl for 5.1.03 only; this dialect adds it.
                body["bizControl"] = biz.model_dump(mode="python", exclude_none=True)
            outgoing.append(self._outgoing(bill, url, body, "INVOICE.OPEN per_invoice"))
        return outgoing

    def _biz_control_for(self, bill: SimBill, style: str) -> BizControl | None:
        """``bizControl`` of this INVOICE.OPEN callback, or None (dialect ``biz_control``)."""
        reading = self.dialect.biz_control
        if reading == "per_bill" and style != "per_bill":
            return None  # rolled only where it may be sent: the fault dice stay in step
        biz = self._biz_control(bill.tenant)
        if reading == "when_warning" and not biz.isWarning:
            return None
        return biz

    def _biz_control(self, tenant: str) -> BizControl:
        """The tenant's quota now; without one, a limit nobody reaches (fault quota_warning)."""
        left = self.quota.surplus(tenant)
        forced = self.dice.roll("quota_warning")
        if left.limited:
            return BizControl(
                issueBizType=BIZ_CONTROL_ISSUE_BIZ_TYPE,
                bizType=BIZ_CONTROL_BIZ_TYPE,
                monthSurplusLimit=left.month,
                daySurplusLimit=left.day,
                isWarning=left.warning or forced,
            )
        if forced:
            return BizControl(
                issueBizType=BIZ_CONTROL_ISSUE_BIZ_TYPE,
                bizType=BIZ_CONTROL_BIZ_TYPE,
                monthSurplusLimit=Decimal("1234.56"),
                daySurplusLimit=Decimal("234.56"),
                isWarning=True,
            )
        return BizControl(
            issueBizType=BIZ_CONTROL_ISSUE_BIZ_TYPE,
            bizType=BIZ_CONTROL_BIZ_TYPE,
            monthSurplusLimit=UNLIMITED_MONTH_SURPLUS,
            daySurplusLimit=UNLIMITED_DAY_SURPLUS,
            isWarning=False,
        )

    def _on_delivery(self, delivery: CallbackDelivery, detail: dict[str, Any]) -> None:
        bill = self.bills.get(delivery.bill_id)
        if bill is None:
            return
        bill.record(str(detail.pop("event")), delivery=delivery.id, kind=delivery.kind, **detail)
        self._save(bill)

    # ------------------------------------------------------------------ operator actions

    def find_bill(
        self, bill_no: str, tenant: str | None = None, seller_tax_id: str | None = None
    ) -> list[SimBill]:
        return self.bills.find(bill_no, tenant, seller_tax_id)

    async def operator_issue(self, bill: SimBill) -> list[CallbackDelivery]:
        """Issue now whatever is not issued (an operator's 一键开票); faults do not apply."""
        if bill.state not in {
            BillState.ACCEPTED,
            BillState.ISSUING,
            BillState.FAILED,
            BillState.PARTIALLY_INVOICED,
        }:
            raise OperatorError(
                f"bill {bill.bill_no} is {bill.state.value}; nothing to issue / 单据无可开票内容"
            )
        bill.record("operator_issue")
        return self._issue(bill, use_faults=False)

    async def operator_fail(self, bill: SimBill, message: str) -> list[CallbackDelivery]:
        """Fail issuance of every invoice not yet issued, with ``message`` as the reason."""
        if bill.state not in {BillState.ACCEPTED, BillState.ISSUING, BillState.FAILED}:
            raise OperatorError(
                f"bill {bill.bill_no} is {bill.state.value}; cannot fail issuance"
                " / 单据当前状态不能置为开票失败"
            )
        bill.record("operator_fail", message=message)
        return self._issue(bill, use_faults=False, forced_failure=message)

    async def operator_return(self, bill: SimBill, reason: str) -> list[CallbackDelivery]:
        """回退上游单据: the bill leaves the live set and a BILL.RETURN callback is sent."""
        if bill.state not in {BillState.ACCEPTED, BillState.ISSUING, BillState.FAILED}:
            raise OperatorError(
                f"bill {bill.bill_no} is {bill.state.value}; only a bill with nothing issued"
                " can be returned / 已开票的单据不能回退"
            )
        self._cancel_timer(bill.id)
        bill.state = BillState.RETURNED
        bill.record("returned", reason=reason)
        self.stats.bills["returned"] += 1
        self._save(bill)
        url = self._callback_url(bill)
        if url is None:
            self.stats.callbacks["skipped"] += 1
            bill.record("callback_skipped", reason="no callback URL configured")
            return []
        returned = BillReturn(
            billNo=bill.bill_no, sellerTaxpayerId=bill.seller_tax_id, reason=reason
        )
        body = build_callback(
            CallbackInterfaceCode.BILL_RETURN,
            [],
            "return",
            returned=returned,
            codec=self._codec(bill),
        )
        return self.sender.send_batch([self._outgoing(bill, url, body, "BILL.RETURN")])

    # ------------------------------------------------------------------ after issuance

    def _wire_item(self, bill: SimBill, invoice: SimInvoice) -> dict[str, Any]:
        """The §9.1 item; a red invoice also names the blue one's current status (§9.1)."""
        item = invoice_item(bill, invoice, self._origin(bill))
        found = self.bills.by_order_no(invoice.original) if invoice.original else None
        if found is not None:
            original = found[1]
            item["originalInvoiceCode"] = original.invoice_code
            item["originalInvoiceNumber"] = original.invoice_num
            item["originalInvoiceStatus"] = original.state_code
            item["originalIssueTime"] = original.invoice_date.replace("-", "")
        return item

    def _red_check(
        self,
        tenant: str,
        header: dict[str, Any],
        amount: Decimal,
        tax: Decimal,
        *,
        at_push: bool = True,
    ) -> RedCheck | None:
        """Why the cloud will not reverse with this red bill (module docstring), or None.

        ``redInfoBillNo`` is a push requirement only: a clerk's 红冲单 gets its 红字确认单 in
        the cloud UI, and a pushed bill was checked when it arrived.
        """
        needs_info = header.get("invoiceType") in RED_NEEDS_RED_INFO_TYPES
        if at_push and needs_info and not header.get("redInfoBillNo"):
            return ErrorCode.REQUIRED, {"field": "redInfoBillNo"}
        number = str(header.get("originalInvoiceNumber") or "")
        found = self.bills.find_issued(tenant, str(header.get("originalInvoiceCode") or ""), number)
        if found is None and self.config.unknown_originals == "assumed":
            return None  # issued before this simulator's time (SimulatorConfig)
        if found is None or found[1].original:
            return ErrorCode.ORIGINAL_UNKNOWN, {"number": number}
        original = found[1]
        if original.voided:
            return ErrorCode.ORIGINAL_VOIDED, {"number": number}
        if abs(amount) > original.can_red_amount or abs(tax) > original.can_red_tax_amount:
            return ErrorCode.RED_OVER_LIMIT, {"available": original.can_red_amount}
        return None

    def _red_check_ruled(self, tenant: str, bill: RuledBill) -> RedCheck | None:
        if bill.header.get("invoiceProperty") != RED_INVOICE_PROPERTY:
            return None
        amounts = [
            line_amounts(line.amount, line.tax_rate, bill.include_tax, line.tax_amount)
            for line in bill.lines
        ]
        amount = sum((a.excl for a in amounts), Decimal("0.00"))
        tax = sum((a.tax for a in amounts), Decimal("0.00"))
        return self._red_check(tenant, bill.header, amount, tax)

    def _issue_refusal(self, bill: SimBill, pending: list[SimInvoice]) -> str | None:
        """issueErrorMessage when the issuance of ``pending`` must fail for cause, else None.

        A red bill is checked again (the original may have been voided or reversed since the
        push); a blue one against the tenant's remaining quota.
        """
        if bill.red:
            amount = sum((inv.total_amount for inv in pending), Decimal("0.00"))
            tax = sum((inv.total_tax_amount for inv in pending), Decimal("0.00"))
            refusal = self._red_check(bill.tenant, bill.header, amount, tax, at_push=False)
            if refusal is None:
                return None
            return gateway_error(refusal[0]).message(**refusal[1])
        amount = sum((inv.include_tax_amount for inv in pending), Decimal("0.00"))
        if self.quota.refuses(bill.tenant, amount):
            return QUOTA_ISSUE_ERROR_MESSAGE
        return None

    def _apply_reversals(self, bill: SimBill, issued: list[SimInvoice]) -> list[OutgoingCallback]:
        """Book each issued red invoice on its blue one; the INVOICE.RED callbacks to send."""
        callbacks: list[OutgoingCallback] = []
        for red in issued:
            found = self.bills.find_issued(
                bill.tenant,
                str(bill.header.get("originalInvoiceCode") or ""),
                str(bill.header.get("originalInvoiceNumber") or ""),
            )
            if found is None:
                continue  # checked just before issuing; cannot happen
            original_bill, original = found
            red.original = original.order_no
            original.red_amount += abs(red.total_amount)
            original.red_tax_amount += abs(red.total_tax_amount)
            if original.can_red_amount <= 0:
                original.state_code = INVOICE_STATUS_RED
            elif self.dialect.partial_red == "status_2":
                original.state_code = INVOICE_STATUS_PARTIAL_RED
            original_bill.record(
                "reversed",
                orderNo=original.order_no,
                redBillNo=bill.bill_no,
                redInvoiceNum=red.invoice_num,
                canRedAmount=str(original.can_red_amount),
                invoiceStatus=original.state_code,
            )
            self._save(original_bill)
            outgoing = self._red_callback(original_bill, bill, red)
            if outgoing is not None:
                callbacks.append(outgoing)
        return callbacks

    def _red_callback(
        self, original_bill: SimBill, red_bill: SimBill, red: SimInvoice
    ) -> OutgoingCallback | None:
        """INVOICE.RED for the original's bill: the red invoice, ``original*`` of the blue one."""
        url = self._callback_url(original_bill)
        if url is None:
            self.stats.callbacks["skipped"] += 1
            original_bill.record("callback_skipped", reason="no callback URL configured")
            return None
        item = self._wire_item(red_bill, red)
        item["billNo"] = original_bill.bill_no
        if self.dialect.partial_red == "keeps_0":
            item["originalInvoiceStatus"] = INVOICE_STATUS_RED  # "3 on 红冲 callback" (§9.1)
        style = callback_style_for(original_bill.business_system_code)
        body = build_callback(
            CallbackInterfaceCode.INVOICE_RED,
            [InvoiceItem.model_validate(item)],
            style,
            codec=self._codec(original_bill),
        )
        return self._outgoing(original_bill, url, body, f"INVOICE.RED {style}")

    async def operator_void(
        self, bill: SimBill, invoice_num: str | None, reason: str
    ) -> list[CallbackDelivery]:
        """作废: every issued invoice of ``bill`` not voided yet, or the one ``invoice_num``."""
        issued = [
            inv
            for inv in bill.invoices
            if inv.status is InvoiceStatus.ISSUED
            and (invoice_num is None or inv.invoice_num == invoice_num)
        ]
        if invoice_num is not None and not issued:
            raise OperatorError(
                f"bill {bill.bill_no} has no issued invoice {invoice_num} / 单据无此已开发票"
            )
        targets = [inv for inv in issued if not inv.voided or invoice_num is not None]
        if not targets:
            raise OperatorError(f"bill {bill.bill_no} has no invoice left to void / 无可作废发票")
        for invoice in targets:
            if invoice.voided:
                raise OperatorError(f"invoice {invoice.invoice_num} is voided already / 已作废")
            if invoice.original:
                raise OperatorError(
                    f"invoice {invoice.invoice_num} is a red invoice; only blue invoices"
                    " are voided here / 红字发票不可作废"
                )
            if invoice.red_amount:
                raise OperatorError(
                    f"invoice {invoice.invoice_num} is (partly) reversed by a red invoice"
                    f" ({invoice.red_amount}); it cannot be voided / 已红冲发票不可作废"
                )
        for invoice in targets:
            invoice.state_code = INVOICE_STATUS_VOID
            invoice.abolish_reason = reason
            self.stats.invoices["voided"] += 1
            bill.record("voided", orderNo=invoice.order_no, invoiceNum=invoice.invoice_num)
        self._save(bill)
        url = self._callback_url(bill)
        if url is None:
            self.stats.callbacks["skipped"] += 1
            bill.record("callback_skipped", reason="no callback URL configured")
            return []
        style = callback_style_for(bill.business_system_code)
        items = [InvoiceItem.model_validate(self._cancel_item(bill, inv)) for inv in targets]
        groups = [items] if style == "per_bill" else [[item] for item in items]
        outgoing = [
            self._outgoing(
                bill,
                url,
                build_callback(
                    CallbackInterfaceCode.INVOICE_CANCEL,
                    group,
                    style,
                    return_code="0",
                    return_msg="success",
                    codec=self._codec(bill),
                ),
                f"INVOICE.CANCEL {style}",
            )
            for group in groups
        ]
        return self.sender.send_batch(outgoing)

    def _cancel_item(self, bill: SimBill, invoice: SimInvoice) -> dict[str, Any]:
        """The INVOICE.CANCEL item under the dialect ``cancel_item`` (module docstring)."""
        original = {
            "originalInvoiceCode": invoice.invoice_code,
            "originalInvoiceNumber": invoice.invoice_num,
            "originalInvoiceStatus": INVOICE_STATUS_VOID,
            "originalIssueTime": invoice.invoice_date.replace("-", ""),
        }
        if self.dialect.cancel_item == "own_fields":
            return {**self._wire_item(bill, invoice), **original}
        return {
            "billNo": bill.bill_no,
            "invoiceType": bill.invoice_type,
            "invoiceProperty": 0,
            "invoiceStatus": INVOICE_STATUS_VOID,
            "sellerTaxpayerId": bill.seller_tax_id,
            "abolishReason": invoice.abolish_reason,
            **original,
        }

    async def operator_red(
        self,
        bill: SimBill,
        invoice_num: str | None,
        amount: Decimal | None,
        red_reason: str | None = None,
    ) -> list[CallbackDelivery]:
        """A clerk's 红冲 of one issued blue invoice of ``bill``, fully or by ``amount``
        (excluding tax): a 红冲单 is made and issued in the cloud; INVOICE.RED is sent."""
        candidates = [
            inv
            for inv in bill.invoices
            if inv.status is InvoiceStatus.ISSUED
            and not inv.original
            and (invoice_num is None or inv.invoice_num == invoice_num)
        ]
        if invoice_num is None:
            candidates = [inv for inv in candidates if inv.can_red_amount > 0]
        if not candidates:
            raise OperatorError(
                f"bill {bill.bill_no} has no issued blue invoice"
                f"{' ' + invoice_num if invoice_num else ''} to reverse / 无可红冲发票"
            )
        if len(candidates) > 1:
            numbers = ", ".join(inv.invoice_num for inv in candidates)
            raise OperatorError(
                f"bill {bill.bill_no} has several invoices ({numbers}); pass invoice"
                " / 请指定发票号码"
            )
        original = candidates[0]
        if original.voided:
            message = gateway_error(ErrorCode.ORIGINAL_VOIDED).message(number=original.invoice_num)
            raise OperatorError(f"invoice {original.invoice_num} is voided / {message}")
        available = original.can_red_amount
        if amount is not None and (amount <= 0 or amount > available):
            message = gateway_error(ErrorCode.RED_OVER_LIMIT).message(available=available)
            raise OperatorError(f"amount must be > 0 and <= {available} / {message}")
        if available <= 0:
            message = gateway_error(ErrorCode.RED_OVER_LIMIT).message(available=available)
            raise OperatorError(f"invoice {original.invoice_num} is reversed fully / {message}")
        if red_reason is not None and red_reason not in RED_REASONS:
            raise ValueError(
                f"redReason must be one of {', '.join(sorted(RED_REASONS))} / 冲红原因代码错误"
            )
        red_bill = self._cloud_red_bill(bill, original, amount, red_reason)
        bill.record("operator_red", orderNo=original.order_no, redBillNo=red_bill.bill_no)
        return self._issue(red_bill, use_faults=False)

    def _cloud_red_bill(
        self,
        bill: SimBill,
        original: SimInvoice,
        amount: Decimal | None,
        red_reason: str | None,
    ) -> SimBill:
        """The 红冲单 a clerk's 红冲 makes: negative lines, one per rate for a full reversal
        of an untouched invoice, else one line for the amount (tax pro rata, capped)."""
        lines: list[SimLine] = []
        first = original.lines[0]
        if amount is None and not original.red_amount:
            by_rate: dict[Decimal, tuple[InvoiceLine, Decimal, Decimal]] = {}
            for line in original.lines:
                head, excl, tax = by_rate.get(line.tax_rate, (line, Decimal(0), Decimal(0)))
                by_rate[line.tax_rate] = (head, excl + line.amount, tax + line.tax_amount)
            for head, excl, tax in by_rate.values():
                lines.append(_red_line(head, excl, tax))
        else:
            excl = original.can_red_amount if amount is None else amount
            tax = original.can_red_tax_amount
            if excl != original.can_red_amount:
                rate = first.tax_rate
                tax = min((excl * rate).quantize(Decimal("0.01"), ROUND_HALF_UP), tax)
            lines.append(_red_line(first, excl, tax))
        n = 1 + sum(
            1
            for b in self.bills
            if b.source == "cloud_red"
            and b.header.get("originalInvoiceNumber") == original.invoice_num
        )
        header = {
            k: v
            for k, v in bill.header.items()
            if k not in {"autoMerge", "autoInvoice", "redInfoBillNo", "redReason"}
        }
        header.update(
            billNo=CLOUD_RED_BILL_NO_TEMPLATE.format(bill_no=bill.bill_no, n=n),
            invoiceProperty=RED_INVOICE_PROPERTY,
            originalInvoiceCode=original.invoice_code,
            originalInvoiceNumber=original.invoice_num,
        )
        if red_reason:
            header["redReason"] = red_reason
        amount_with_tax = sum(
            (line.amount + (line.tax_amount or Decimal(0)) for line in lines), Decimal("0.00")
        )
        red = SimBill(
            id=self.bills.next_id(),
            tenant=bill.tenant,
            seller_tax_id=bill.seller_tax_id,
            bill_no=str(header["billNo"]),
            generation=1,
            business_system_code="",
            invoice_type=bill.invoice_type,
            include_tax_flag=False,
            auto_invoice=False,
            header=header,
            lines=lines,
            amount_with_tax=amount_with_tax,
            state=BillState.ISSUING,
            pushed_at=int(time.time() * 1000),
            source="cloud_red",
        )
        red.record("cloud_red", original=original.order_no, originalBillNo=bill.bill_no)
        self.bills.add(red)
        self._save(red)
        return red

    def withdraw_behind(self, bill: SimBill) -> None:
        """Withdraw ``bill`` in the cloud behind the bridge's back: no callback (admin only)."""
        if bill.state not in {BillState.ACCEPTED, BillState.ISSUING, BillState.FAILED}:
            raise OperatorError(
                f"bill {bill.bill_no} is {bill.state.value}; only a bill with nothing issued"
                " can be withdrawn / 已开票的单据不能撤回"
            )
        self._cancel_timer(bill.id)
        bill.state = BillState.WITHDRAWN
        bill.record("withdrawn_behind", note="admin: no callback, the bridge is not told")
        self.stats.bills["withdrawn"] += 1
        self._save(bill)

    def plant_bill(
        self, raw: Any, tenant_name: str | None = None, business_system_code: str | None = None
    ) -> SimBill:
        """Store ``raw`` as if pushed by someone else: a bill the bridge never pushed (admin).

        The cloud's own checks apply (``PlantRefused`` with the gateway's body); issuance is
        scheduled like a push's, so its callbacks reach the bridge as orphans.
        """
        checked = check_bill(raw, unknown_fields=self.dialect.unknown_fields)
        if isinstance(checked, Refusal):
            raise PlantRefused(checked.body())
        tenant = self.tenants.by_name.get(tenant_name) if tenant_name else None
        if tenant_name and tenant is None:
            raise KeyError(tenant_name)
        if tenant is None:
            owners = [t for t in self.tenants if checked.seller in t.seller_tax_ids]
            if len(owners) != 1:
                raise KeyError(checked.seller)
            tenant = owners[0]
        if checked.seller not in tenant.seller_tax_ids:
            raise PlantRefused(_failure(ErrorCode.SELLER_UNKNOWN, tax_id=checked.seller))
        if self.bills.live((tenant.name, checked.seller, checked.bill_no)):
            raise OperatorError(f"bill {checked.bill_no} is live already / 单据已存在")
        red = self._red_check_ruled(tenant.name, checked)
        if red is not None:
            raise PlantRefused(_failure(red[0], **red[1]))
        code = business_system_code or sorted(tenant.business_system_codes)[0]
        sim = self._accept(tenant, code, checked, source="planted")
        if sim.auto_invoice:
            self._schedule_issue(sim, self.config.issue_delay)
        return sim

    def invoice_file(self, order_no: str) -> tuple[SimBill, SimInvoice] | None:
        found = self.bills.by_order_no(order_no)
        if found is None or found[1].status is not InvoiceStatus.ISSUED:
            return None
        return found

    # ------------------------------------------------------------------ admin views

    def bill_summary(self, bill: SimBill) -> dict[str, Any]:
        issued = sum(1 for inv in bill.invoices if inv.status is InvoiceStatus.ISSUED)
        failed = sum(1 for inv in bill.invoices if inv.status is InvoiceStatus.FAILED)
        return {
            "id": bill.id,
            "tenant": bill.tenant,
            "sellerTaxpayerId": bill.seller_tax_id,
            "billNo": bill.bill_no,
            "generation": bill.generation,
            "businessSystemCode": bill.business_system_code,
            "invoiceType": bill.invoice_type,
            "autoInvoice": bill.auto_invoice,
            "state": bill.state.value,
            "live": bill.live,
            "amountWithTax": bill.amount_with_tax,
            "issuedAmount": bill.issued_amount,
            "invoices": len(bill.invoices),
            "issued": issued,
            "failed": failed,
            "pushedAt": bill.pushed_at,
            "source": bill.source,
        }

    def bill_detail(self, bill: SimBill) -> dict[str, Any]:
        detail = self.bill_summary(bill)
        detail["invoiceList"] = [
            {
                **self._wire_item(bill, inv),
                "status": inv.status.value if inv.status else "planned",
            }
            for inv in bill.invoices
        ]
        detail["history"] = list(bill.events)
        detail["generations"] = [
            self.bill_summary(b) for b in self.bills.generations(bill.key) if b.id != bill.id
        ]
        detail["callbacks"] = [d.summary() for d in self.sender.recent if d.bill_id == bill.id]
        return detail

    def statistics(self) -> dict[str, Any]:
        snapshot = self.stats.snapshot()
        snapshot["doubleIssue"] = self.bills.violations()
        snapshot["billsByState"] = _count_states(self.bills)
        snapshot["callbacksInFlight"] = self.sender.in_flight
        snapshot["faults"] = self.dice.plan.as_json(active_only=True)
        snapshot["uptimeSeconds"] = int(time.time() - self.started_at)
        return snapshot


def _invoice_tax_error(lines: Sequence[InvoiceLine]) -> Decimal:
    """Σ(line tax − round(line amount × rate, 2)) of an invoice (§11, limit ±1.27)."""
    return sum(
        (
            line.tax_amount - (line.amount * line.tax_rate).quantize(Decimal("0.01"), ROUND_HALF_UP)
            for line in lines
        ),
        Decimal("0.00"),
    )


def _red_line(head: InvoiceLine, excl: Decimal, tax: Decimal) -> SimLine:
    """A red line reversing ``excl`` and ``tax`` (both positive here) of ``head``'s goods."""
    return SimLine(
        detail_id=head.detail_id,
        goods_name=head.goods_name,
        revenue_code=head.revenue_code,
        tax_rate=head.tax_rate,
        amount=-excl,
        tax_amount=-tax,
        units=head.units,
        specification=head.specification,
    )


def _count_states(book: BillBook) -> dict[str, int]:
    counts: dict[str, int] = {}
    for bill in book:
        counts[bill.state.value] = counts.get(bill.state.value, 0) + 1
    return counts


def _sim_line(line: RuledLine) -> SimLine:
    return SimLine(
        detail_id=line.detail_id,
        goods_name=line.goods_name,
        revenue_code=line.revenue_code,
        tax_rate=line.tax_rate,
        amount=line.amount,
        tax_amount=line.tax_amount,
        quantity=line.quantity,
        price=line.price,
        units=line.units,
        specification=line.specification,
        is_discount=line.is_discount,
        zero_tax_rate_flag=line.zero_tax_rate_flag,
        privilege_flag=line.privilege_flag,
        privilege_content=line.privilege_content,
    )


def _refusal_for_validation(exc: ValidationError, default_field: str = "data") -> dict[str, Any]:
    """A pydantic error on a payload the schemas did not turn into issues."""
    errors = exc.errors()
    if not errors:
        return _failure(ErrorCode.INVALID, field=default_field)
    first = min(errors, key=lambda e: 0 if e["type"] == "missing" else 1)
    loc = [str(part) for part in first["loc"]]
    name = next((p for p in reversed(loc) if not p.isdigit()), default_field)
    if first["type"] in {"missing", "too_short", "string_too_short"}:
        return _failure(ErrorCode.REQUIRED, field=name)
    return _failure(ErrorCode.INVALID, field=name)
