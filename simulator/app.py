"""The simulator's ASGI application: the cloud's endpoints per tenant path, files, and ``/_sim/``.

Routes (``{base}`` is the path of a tenant's base URL, e.g. ``/demo``)

| method | path | what |
|---|---|---|
| POST | ``{base}/api/getAppToken.do`` | 1.01 app_token (``appSecret`` or ``appSecuret``) |
| POST | ``{base}/api/login.do`` | 1.02 access_token |
| POST | ``{base}/kapi/app/sim/openApi`` | BILL.PUSH, BILL.WITHDRAW, BILL.INVOICE.QUERY (a) |
| GET | ``{base}/doc/free/fileInfo/preview/{orderNo}.{pdf,ofd,xml}`` | invoice files |
| GET | ``/_sim/healthz``, ``/_sim/tenants`` | liveness, served tenants |
| GET | ``/_sim/bills`` (``tenant``, ``state``, ``billNo``, ``live``) | bill list |
| GET | ``/_sim/bills/{billNo}`` (``tenant``, ``sellerTaxpayerId``) | bill, invoices, history |
| POST | ``/_sim/bills/{billNo}/issue`` | operator: issue now |
| POST | ``/_sim/bills/{billNo}/fail`` (``message``) | operator: fail issuance |
| POST | ``/_sim/bills/{billNo}/return`` (``reason``) | operator: 回退 upstream (BILL.RETURN) |
| POST | ``/_sim/bills/{billNo}/void`` (``invoice``, ``reason``) | operator: 作废 (c) |
| POST | ``/_sim/bills/{billNo}/red`` (``invoice``, ``amount``, ``redReason``) | 红冲 (c) |
| POST | ``/_sim/bills/{billNo}/withdraw`` | admin only: withdraw behind the bridge's back |
| POST | ``/_sim/bills`` (``{"bill", "tenant", "businessSystemCode"}``) | admin only: plant (d) |
| GET PUT | ``/_sim/quota`` | credit quota per tenant (``simulator.quota``) (e) |
| GET PUT | ``/_sim/clock`` (``{"offset_seconds": N}``) | clock offset (quota days) |
| GET PUT PATCH | ``/_sim/faults`` | fault plan (PUT replaces, PATCH merges; ``seed``) |
| POST | ``/_sim/tokens/expire`` (``tenant``) | expire tokens now |
| GET | ``/_sim/stats`` | statistics and double-issue detection |
| GET | ``/_sim/callbacks`` (``billNo``, ``state``) | recent callback deliveries |
| GET PUT | ``/_sim/callback-urls`` | callback URL per businessSystemCode |
| GET PUT PATCH | ``/_sim/bill-rules`` | rules for named billNos (``simulator.bill_rules``) |
| GET PUT | ``/_sim/dialect`` | the contract reading played (``cloud_contract.Dialect``) (b) |
| POST | ``/_sim/reset`` (``keep_tokens``) | forget everything (tests) |

(a) the access_token travels in the query string or in the header ``access_token``.
(c) operator actions take their parameters in the query string or a JSON body, and
``wait`` (true: answer after the first callback attempt); a state they do not apply to → 409
with the reason. ``/red``: ``amount`` excludes tax (as ``canRedAmount``); without it the rest
of the invoice is reversed. Without ``invoice`` ``/void`` voids every issued invoice of the
bill and ``/red`` takes the bill's only reversible invoice.
(d) a bill the bridge never pushed (an orphan): the cloud's own checks apply (400 with the
gateway's failure body), issuance and callbacks follow as for a push.
(e) ``PUT`` ``{"<tenant>": {"day": "1000.00", "month": "20000.00", "warn_ratio": "0.1"}}``
(``null`` removes a tenant's quota); ``GET`` adds what is used and left today and this month.
(b) ``PUT`` takes a partial object ``{"switch": "value"}`` and answers the full new object; an
unknown switch or value is a 400 naming the choices. ``POST /_sim/reset`` restores the dialect
the process was started with (``--dialect``).

Dialect switches played here (the rest in ``simulator.cloud``): ``expired_token`` (the answer
to a missing/expired token) and ``status_field`` (``status`` added to every gateway answer).

The cloud endpoints are dispatched by exact path from a dict and answered with raw ASGI
messages (the hot path stays lean); ``/_sim/`` is a Starlette router.

Transport faults: latency before answering; 5xx before processing; after a committed push a
504 or a dropped connection. A dropped connection is made by starting a response whose header
the server refuses to write (uvicorn marks the response started, raises, and then closes the
transport without sending a byte); the client sees the connection closed without a response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from schemas.cloud_contract import (
    DEFAULT_RETURN_REASON,
    DIALECT_SWITCHES,
    FILE_NOT_FOUND_MESSAGE,
    ISSUE_ERROR_MESSAGES,
    NOT_JSON_ERROR_CODE,
    NOT_JSON_MESSAGE,
    VOID_DEFAULT_REASON,
    DialectError,
    ErrorCode,
    expired_token_answer,
    failure_body,
)
from schemas.kingdee import ACCESS_TOKEN_PARAM, APP_TOKEN_PATH, LOGIN_PATH, OPENAPI_PATH
from schemas.money import dumps_exact, loads_exact
from simulator.bill_rules import BillRulesError
from simulator.bills import SimBill
from simulator.cloud import OperatorError, PlantRefused, SimulatedCloud
from simulator.config import SimulatorConfig
from simulator.documents import CONTENT_TYPES, FILE_PATH, render_file
from simulator.faults import FAULT_NAMES, FaultPlan, FaultSpecError
from simulator.issuance import file_kinds_for
from simulator.quota import Quota, QuotaError
from simulator.tenancy import SimTenant, tenants_from_config

__all__ = ["ConnectionDropped", "SimulatorApp", "create_app"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send, str], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]
_TOKEN_HEADER = ACCESS_TOKEN_PARAM.encode("ascii")
_PUSH = "BILL.PUSH"


class ConnectionDropped(Exception):
    """Raised on purpose to make the server close the connection without a response."""


class _QuietDrops(logging.Filter):
    """Keeps the deliberate ``ConnectionDropped`` out of uvicorn's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        return not (info and info[0] is not None and issubclass(info[0], ConnectionDropped))


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in logger.filters):
        logger.addFilter(_QuietDrops())


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionDropped("client went away")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *(headers or _JSON_HEADERS),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, content: Any) -> None:
    await _send_bytes(send, status, dumps_exact(content).encode("utf-8"))


async def _drop(send: Send) -> None:
    """Close the connection without answering (see the module docstring)."""
    # The server refuses the header: the response counts as started, yet nothing was sent.
    with contextlib.suppress(Exception):
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"x-simulator", b"drop\r\n")],
            }
        )
    raise ConnectionDropped("connection dropped by the simulator (fault)")


def _token_from(scope: Scope) -> str | None:
    query: bytes = scope.get("query_string", b"")
    if query and _TOKEN_HEADER in query:
        values = parse_qs(query.decode("latin-1")).get(ACCESS_TOKEN_PARAM)
        if values and values[0]:
            return values[0]
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == _TOKEN_HEADER and value:
            return value.decode("latin-1")
    return None


class ExactJSONResponse(Response):
    """JSON written with ``dumps_exact`` (Decimals exact, never floats)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps_exact(content).encode("utf-8")


class SimulatorApp:
    """ASGI callable; ``cloud`` is the state, reachable for in-process inspection."""

    def __init__(self, cloud: SimulatedCloud) -> None:
        self.cloud = cloud
        self._routes: dict[str, tuple[Handler, str]] = {}
        self._file_prefixes: list[tuple[str, str]] = []
        for path in cloud.tenants.by_path:
            self._routes[path + APP_TOKEN_PATH] = (self._app_token, path)
            self._routes[path + LOGIN_PATH] = (self._login, path)
            self._routes[path + OPENAPI_PATH] = (self._openapi, path)
            self._file_prefixes.append((path + FILE_PATH, path))
        self._admin = _admin_router(cloud)
        self._started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            route = self._routes.get(path)
            if route is not None:
                if scope["method"] != "POST":
                    await _send_json(send, 405, {"success": False, "message": "POST only"})
                    return
                await route[0](scope, receive, send, route[1])
                return
            if path.startswith("/_sim"):
                await self._admin(scope, receive, send)  # type: ignore[arg-type]
                return
            for prefix, _tenant_path in self._file_prefixes:
                if path.startswith(prefix):
                    await self._file(scope, send, path[len(prefix) :])
                    return
            await _send_json(send, 404, {"success": False, "message": f"no route {path}"})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        if not self._started:
            await self.cloud.start()
            self._started = True

    async def shutdown(self) -> None:
        if self._started:
            await self.cloud.stop()
            self._started = False

    # ------------------------------------------------------------------ cloud endpoints

    async def _latency(self) -> None:
        delay = self.cloud.dice.latency_s()
        if delay:
            await asyncio.sleep(delay)

    async def _token_call(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        interface: str,
        call: Callable[[str, Any], dict[str, Any]],
    ) -> None:
        raw = await _read_body(receive)
        await self._latency()
        if self.cloud.dice.roll("token_5xx"):
            self.cloud.stats.call(interface, "http_503")
            await _send_json(send, 503, {"message": "Service Unavailable"})
            return
        try:
            body = loads_exact(raw) if raw else None
        except ValueError:
            body = None
        await _send_json(send, 200, call(path, body))

    async def _app_token(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        await self._token_call(scope, receive, send, path, "getAppToken", self.cloud.app_token)

    async def _login(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        await self._token_call(scope, receive, send, path, "login", self.cloud.login)

    async def _openapi(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        cloud = self.cloud
        dice = cloud.dice
        stats = cloud.stats
        raw = await _read_body(receive)
        await self._latency()
        try:
            envelope = loads_exact(raw)
        except ValueError:
            envelope = None
        interface = "openApi"
        if isinstance(envelope, dict):
            code = envelope.get("interfaceCode")
            if code in ("BILL.PUSH", "BILL.WITHDRAW", "BILL.INVOICE.QUERY"):
                interface = str(code)
        if dice.roll("api_5xx_before"):
            stats.call(interface, "http_503")
            await _send_json(send, 503, {"message": "Service Unavailable"})
            return
        token = _token_from(scope)
        if token and dice.roll("token_expire"):
            cloud.tokens.expire(token)
        tenant = cloud.authenticate(path, token)
        if tenant is None or dice.roll("auth_fail"):
            status, body = expired_token_answer(cloud.dialect.expired_token)
            stats.call(interface, str(body["errorCode"]) if status == 200 else f"http_{status}")
            await _send_json(send, status, self._with_status(body))
            return
        if envelope is None:
            stats.call(interface, "http_400")
            await _send_json(
                send,
                400,
                self._with_status(
                    {
                        "success": False,
                        "errorCode": NOT_JSON_ERROR_CODE,
                        "message": NOT_JSON_MESSAGE,
                        "data": None,
                    }
                ),
            )
            return
        if interface == _PUSH:
            if dice.roll("push_5xx_before"):
                stats.call(interface, "http_502_before")
                await _send_json(send, 502, {"message": "Bad Gateway"})
                return
            if dice.roll("drop_before"):
                stats.call(interface, "dropped_before")
                await _drop(send)
        result = await cloud.gateway(tenant, envelope)
        if result.committed:
            if dice.roll("push_5xx_after_commit"):
                stats.call(result.interface, "http_504_after_commit")
                await _send_json(send, 504, {"message": "Gateway Timeout"})
                return
            if dice.roll("drop_after_commit"):
                stats.call(result.interface, "dropped_after_commit")
                await _drop(send)
            if dice.roll("push_system_error_after_commit"):
                # The other reading of 9999: the exception came after the bills were stored.
                stats.call(result.interface, "system_error_after_commit")
                body = failure_body(ErrorCode.SYSTEM_ERROR)
                await _send_json(send, 200, self._with_status(body))
                return
        stats.call(result.interface, result.outcome)
        await _send_json(send, 200, self._with_status(result.body))

    def _with_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """Dialect ``status_field=present``: ``status`` (bool) beside ``success`` (§2.4)."""
        if self.cloud.dialect.status_field == "present":
            return {**body, "status": bool(body.get("success"))}
        return body

    async def _file(self, scope: Scope, send: Send, name: str) -> None:
        order_no, _, kind = name.rpartition(".")
        found = self.cloud.invoice_file(order_no) if scope["method"] in ("GET", "HEAD") else None
        if found is None or kind not in file_kinds_for(found[0].invoice_type).values():
            await _send_json(send, 404, {"success": False, "message": FILE_NOT_FOUND_MESSAGE})
            return
        bill, invoice = found
        body = render_file(bill, invoice, kind)
        headers = [(b"content-type", CONTENT_TYPES[kind].encode("ascii"))]
        await _send_bytes(send, 200, body, headers)


# ---------------------------------------------------------------------- admin


def _admin_router(cloud: SimulatedCloud) -> Router:
    async def healthz(request: Request) -> Response:
        return ExactJSONResponse({"status": "ok", "tenants": len(cloud.tenants.by_name)})

    async def tenants(request: Request) -> Response:
        return ExactJSONResponse(
            [
                {
                    "name": t.name,
                    "baseUrl": t.base_url,
                    "path": t.path,
                    "accountId": t.account_id,
                    "businessSystemCodes": sorted(t.business_system_codes),
                    "sellerTaxIds": sorted(t.seller_tax_ids),
                    "autoInvoice": t.auto_invoice,
                }
                for t in cloud.tenants.by_name.values()
            ]
        )

    async def list_bills(request: Request) -> Response:
        params = request.query_params
        tenant, state, bill_no = params.get("tenant"), params.get("state"), params.get("billNo")
        live = params.get("live")
        rows = []
        for bill in cloud.bills:
            if tenant and bill.tenant != tenant:
                continue
            if state and bill.state.value != state:
                continue
            if bill_no and bill.bill_no != bill_no:
                continue
            if live is not None and bill.live != (live in ("1", "true")):
                continue
            rows.append(cloud.bill_summary(bill))
        return ExactJSONResponse(rows)

    async def one_bill(request: Request) -> Response:
        found = await _locate(request)
        if isinstance(found, Response):
            return found
        return ExactJSONResponse(cloud.bill_detail(found))

    async def _locate(request: Request) -> SimBill | Response:
        bill_no = request.path_params["bill_no"]
        params = dict(request.query_params)
        if request.method == "POST":
            params.update(await _json_object(request))
        bills = cloud.find_bill(bill_no, params.get("tenant"), params.get("sellerTaxpayerId"))
        if not bills:
            return ExactJSONResponse({"error": f"no bill {bill_no} / 单据不存在"}, status_code=404)
        if len(bills) > 1:
            return ExactJSONResponse(
                {
                    "error": f"bill {bill_no} exists for several tenants/sellers; pass tenant"
                    " and sellerTaxpayerId / 多个租户或销方存在该单据编号，请指定tenant和"
                    "sellerTaxpayerId",
                    "candidates": [cloud.bill_summary(b) for b in bills],
                },
                status_code=409,
            )
        return bills[0]

    def _action(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            found = await _locate(request)
            if isinstance(found, Response):
                return found
            body = {**dict(request.query_params), **(await _json_object(request))}
            try:
                if name == "void":
                    invoice = body.get("invoice")
                    reason = str(body.get("reason") or VOID_DEFAULT_REASON)
                    deliveries = await cloud.operator_void(
                        found, str(invoice) if invoice else None, reason
                    )
                elif name == "red":
                    invoice = body.get("invoice")
                    amount = _opt_amount(body.get("amount"))
                    red_reason = body.get("redReason")
                    deliveries = await cloud.operator_red(
                        found,
                        str(invoice) if invoice else None,
                        amount,
                        str(red_reason) if red_reason else None,
                    )
                elif name == "withdraw":
                    cloud.withdraw_behind(found)
                    deliveries = []
                elif name == "issue":
                    deliveries = await cloud.operator_issue(found)
                elif name == "fail":
                    message = str(body.get("message") or ISSUE_ERROR_MESSAGES[0])
                    deliveries = await cloud.operator_fail(found, message)
                else:
                    reason = str(body.get("reason") or DEFAULT_RETURN_REASON)
                    deliveries = await cloud.operator_return(found, reason)
            except OperatorError as exc:
                return ExactJSONResponse({"error": str(exc)}, status_code=409)
            except ValueError as exc:
                return ExactJSONResponse({"error": str(exc)}, status_code=400)
            if body.get("wait") not in (None, False, "", "0", "false"):
                await asyncio.gather(*(d.first_attempt_done.wait() for d in deliveries))
            detail = cloud.bill_detail(found)
            detail["callbacksStarted"] = [d.id for d in deliveries]
            return ExactJSONResponse(detail)

        return endpoint

    async def plant(request: Request) -> Response:
        body = await _json_object(request)
        raw = body.get("bill", body)
        tenant = body.get("tenant") if "bill" in body else None
        tenant = tenant or request.query_params.get("tenant")
        code = body.get("businessSystemCode") if "bill" in body else None
        try:
            bill = cloud.plant_bill(raw, tenant, code)
        except PlantRefused as exc:
            return ExactJSONResponse({"error": str(exc), "refusal": exc.body}, status_code=400)
        except KeyError as exc:
            message = f"no single tenant for {exc.args[0]}; pass tenant / 请指定tenant"
            return ExactJSONResponse({"error": message}, status_code=404)
        except OperatorError as exc:
            return ExactJSONResponse({"error": str(exc)}, status_code=409)
        return ExactJSONResponse(cloud.bill_detail(bill), status_code=201)

    async def quota(request: Request) -> Response:
        if request.method == "PUT":
            body = await _json_object(request)
            try:
                changes = {
                    str(name): None if value is None else Quota.from_json(value)
                    for name, value in body.items()
                }
            except QuotaError as exc:
                return ExactJSONResponse({"error": str(exc)}, status_code=400)
            unknown = sorted(set(changes) - set(cloud.tenants.by_name))
            if unknown:
                message = f"unknown tenant {', '.join(unknown)} / 租户不存在"
                return ExactJSONResponse({"error": message}, status_code=404)
            for name, limits in changes.items():
                cloud.set_quota(name, limits)
        return ExactJSONResponse(cloud.quota.as_json())

    async def clock(request: Request) -> Response:
        if request.method == "PUT":
            body = await _json_object(request)
            value = body.get("offset_seconds")
            if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
                message = "offset_seconds must be a number / offset_seconds必须是数字"
                return ExactJSONResponse({"error": message}, status_code=400)
            # Seconds of a clock offset, not money: float is right here.
            cloud.clock.offset_seconds = float(value)
        return ExactJSONResponse(cloud.clock.as_json())

    async def faults(request: Request) -> Response:
        if request.method in ("PUT", "PATCH"):
            body = await _json_object(request)
            seed = body.pop("seed", None)
            changes = body.pop("faults", body)
            if not isinstance(changes, dict):
                message = "faults must be an object / faults必须是对象"
                return ExactJSONResponse({"error": message}, status_code=400)
            try:
                values = {k: _number(v) for k, v in changes.items()}
                base = cloud.dice.plan if request.method == "PATCH" else FaultPlan()
                plan = base.updated(values)
            except (FaultSpecError, TypeError, ValueError) as exc:
                return ExactJSONResponse({"error": str(exc), "known": FAULT_NAMES}, status_code=400)
            cloud.set_faults(plan, seed=_opt_int(seed), reseed=seed is not None)
        plan = cloud.dice.plan
        return ExactJSONResponse(
            {"faults": plan.as_json(), "active": plan.as_json(active_only=True)}
        )

    async def expire_tokens(request: Request) -> Response:
        body = {**dict(request.query_params), **(await _json_object(request))}
        tenant = body.get("tenant")
        if tenant is not None and tenant not in cloud.tenants.by_name:
            message = f"unknown tenant {tenant} / 租户不存在"
            return ExactJSONResponse({"error": message}, status_code=404)
        return ExactJSONResponse({"expired": cloud.tokens.expire_all(tenant)})

    async def stats(request: Request) -> Response:
        return ExactJSONResponse(cloud.statistics())

    async def callbacks(request: Request) -> Response:
        bill_no = request.query_params.get("billNo")
        state = request.query_params.get("state")
        rows = [
            d.summary()
            for d in cloud.sender.recent
            if (bill_no is None or d.bill_no == bill_no) and (state is None or d.state == state)
        ]
        return ExactJSONResponse(rows)

    async def callback_urls(request: Request) -> Response:
        if request.method == "PUT":
            body = await _json_object(request)
            code = body.get("businessSystemCode")
            if not isinstance(code, str) or not code:
                message = "businessSystemCode is required / businessSystemCode不能为空"
                return ExactJSONResponse({"error": message}, status_code=400)
            url = body.get("url")
            if url:
                cloud.callback_urls[code] = str(url)
            else:
                cloud.callback_urls.pop(code, None)
        return ExactJSONResponse(
            {"default": cloud.config.callback_url, "byBusinessSystemCode": cloud.callback_urls}
        )

    async def bill_rules(request: Request) -> Response:
        if request.method in ("PUT", "PATCH"):
            try:
                cloud.bill_rules.apply(await _json_object(request), replace=request.method == "PUT")
            except BillRulesError as exc:
                return ExactJSONResponse({"error": str(exc)}, status_code=400)
        return ExactJSONResponse(cloud.bill_rules.as_json())

    async def dialect(request: Request) -> Response:
        if request.method == "PUT":
            body = await _json_object(request)
            try:
                cloud.dialect = cloud.dialect.replace(body)
            except DialectError as exc:
                choices = {name: list(values) for name, values in DIALECT_SWITCHES.items()}
                return ExactJSONResponse({"error": str(exc), "choices": choices}, status_code=400)
        return ExactJSONResponse(cloud.dialect.as_dict())

    async def reset(request: Request) -> Response:
        keep = request.query_params.get("keep_tokens") in ("1", "true")
        await cloud.reset(keep_tokens=keep)
        return ExactJSONResponse({"reset": True})

    return Router(
        routes=[
            Route("/_sim/healthz", healthz, methods=["GET"]),
            Route("/_sim/tenants", tenants, methods=["GET"]),
            Route("/_sim/bills", list_bills, methods=["GET"]),
            Route("/_sim/bills/{bill_no}", one_bill, methods=["GET"]),
            Route("/_sim/bills/{bill_no}/issue", _action("issue"), methods=["POST"]),
            Route("/_sim/bills/{bill_no}/fail", _action("fail"), methods=["POST"]),
            Route("/_sim/bills/{bill_no}/return", _action("return"), methods=["POST"]),
            Route("/_sim/bills/{bill_no}/void", _action("void"), methods=["POST"]),
            Route("/_sim/bills/{bill_no}/red", _action("red"), methods=["POST"]),
            Route("/_sim/bills/{bill_no}/withdraw", _action("withdraw"), methods=["POST"]),
            Route("/_sim/bills", plant, methods=["POST"]),
            Route("/_sim/quota", quota, methods=["GET", "PUT"]),
            Route("/_sim/clock", clock, methods=["GET", "PUT"]),
            Route("/_sim/faults", faults, methods=["GET", "PUT", "PATCH"]),
            Route("/_sim/tokens/expire", expire_tokens, methods=["POST"]),
            Route("/_sim/stats", stats, methods=["GET"]),
            Route("/_sim/callbacks", callbacks, methods=["GET"]),
            Route("/_sim/callback-urls", callback_urls, methods=["GET", "PUT"]),
            Route("/_sim/bill-rules", bill_rules, methods=["GET", "PUT", "PATCH"]),
            Route("/_sim/dialect", dialect, methods=["GET", "PUT"]),
            Route("/_sim/reset", reset, methods=["POST"]),
        ]
    )


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        value = loads_exact(raw)
    except ValueError:
        return {}
    return dict(value) if isinstance(value, dict) else {}


def _number(value: Any) -> float:
    # Fault values are probabilities and durations, not money: float is right here.
    if isinstance(value, bool):
        raise TypeError("a fault value is a number, not true/false")
    return float(value)


def _opt_amount(value: Any) -> Decimal | None:
    """An amount in yuan from a query string or JSON body; ValueError (400) otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("amount must be an amount in yuan / 金额格式错误")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"amount {value!r} is not an amount in yuan / 金额格式错误") from None
    if not amount.is_finite():
        raise ValueError(f"amount {value!r} is not an amount in yuan / 金额格式错误")
    return amount


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def create_app(tenants: Any, config: SimulatorConfig | None = None) -> SimulatorApp:
    """The ASGI app serving ``tenants`` (a ``TenantsFile``, configs or ``SimTenant``s)."""
    _install_log_filter()
    sim_tenants: Sequence[SimTenant] = tenants_from_config(tenants)
    if not sim_tenants:
        raise ValueError("the simulator needs at least one tenant")
    return SimulatorApp(SimulatedCloud(sim_tenants, config or SimulatorConfig()))
