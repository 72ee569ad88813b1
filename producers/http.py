"""The HTTP app: ERP hooks under ``/v1``, Kingdee's callbacks, health and metrics.

``create_app(settings, components=None)`` is the factory (``fapiao api`` serves it with uvicorn;
``app_from_environment()`` builds it inside each process of ``fapiao api --workers N``);
the OpenAPI document is ``/openapi.json`` (copy: ``docs/openapi.json``), browsable offline at
``/docs`` (Swagger UI) and ``/redoc`` (``producers.openapi``). ``/v1`` needs
``Authorization: Bearer <key>`` with one of ``FAPIAO_API_KEYS`` (compared in constant time);
with no keys configured the API is open only when ``FAPIAO_ENVIRONMENT=development``.

Routes

| route | answers |
|---|---|
| ``POST /v1/documents`` | one document, a JSON array, or ``{"documents": [...]}`` (≤ 1000) |
| ``GET /v1/documents/{bill_no}`` | state, reason, invoices (numbers, file URLs), timeline |
| ``POST /v1/documents/{bill_no}/withdraw`` | BILL.WITHDRAW owed (202) or done at once (200) |
| ``POST /v1/documents/{bill_no}/replay`` | failed/rejected → draft, push owed (202) |
| ``POST /v1/documents/{bill_no}/reverse`` | red-letter (红冲) document(s), push owed (202) |
| ``GET /v1/schema/document``, ``/v1/schema/notification`` | JSON Schemas |
| ``GET /v1/documents``, ``/v1/overview``, ``/v1/tenants…`` | operator lists and actions |
| ``POST /v1/operations/…``, ``/v1/notifications…`` | (``producers.http_operations``) |
| ``/v1/reconciliation…`` | three-way reconciliation (``producers.http_reconciliation``) |
| ``POST /callbacks/kingdee/{secret}`` | the cloud's callbacks (no API key: the path is secret) |
| ``GET /healthz`` | database and Redis, 200 or 503 with details |
| ``GET /metrics`` | Prometheus text |

``?seller_tax_id=`` and ``?tenant=`` pick a document when several sellers share a bill number
(409 lists them otherwise).

``POST /v1/documents`` status codes

| case | single document | batch (per item ``status_code``) |
|---|---|---|
| accepted, push owed | 202 | 202 |
| identical content already accepted | 200, outcome ``unchanged`` | 200 |
| invalid (issues: path, rule, message, message_zh, hint) | 422 | 422 |
| different content while the bill is live | 409 | 409 |
| whole request: not JSON / not an object or array | 400 | 400 |
| whole request: body over the limit, more than 1000 documents | 413 | 413 |

A batch answers **202** when every item was accepted or unchanged, else **207 Multi-Status**
(even if every item failed): the body's ``results[i].status_code`` is the truth per item and
``summary`` counts outcomes. A batch is stored in one transaction (new and unchanged bills in
bulk, revisions and conflicts each in a SAVEPOINT), so a bad one never blocks the rest; the
pushes are enqueued after the commit, batched in Redis pipelines.

The callback receiver (``/callbacks/kingdee/{secret}``) is a checklist, in this order:

| step | refusal |
|---|---|
| secret path part (constant-time compare) | 404, nothing stored |
| IP allow-list (``FAPIAO_CALLBACKS__IP_ALLOWLIST``, when set) | 403 |
| body size (Content-Length and streamed bytes, ``FAPIAO_CALLBACKS__MAX_BODY_BYTES``) | 413 |
| parse either style (``schemas.kingdee.parse_callback``) | 400 naming what is wrong |
| store raw body with its dedupe key, COMMIT | 503 when the database fails (the cloud retries) |
| answer Kingdee's ACK (``CALLBACK_ACK``), 200 | duplicates are ACKed, not stored twice |
| enqueue ``fapiao.reconcile`` (after the response) | a lost message is re-found by the sweeper |
| — unless one is owed already (``worker.coalesce``) | the waiting task gathers this row          |

Errors answer ``{"error": {"code", "message", "message_zh"}}`` (plus details); a failing
database answers 503, never 500.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections import Counter
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final

from fastapi import BackgroundTasks, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from producers.api_models import (
    BATCH_FORMS,
    BatchAnswer,
    CallbackAck,
    DocumentView,
    ErrorAnswer,
    HealthAnswer,
    OperatorAnswer,
    ReversalAnswer,
    SubmitAnswer,
)
from producers.bootstrap import Components
from producers.callbacks import StoredCallback, store_callback, unstorable_text
from producers.console.app import install_console
from producers.console.auth import COOKIE_NAME as CONSOLE_COOKIE
from producers.console.auth import CSRF_HEADER, ConsoleAuth
from producers.documents import (
    AmbiguousBillNo,
    DocumentNotFound,
    NotReplayable,
    OperatorAction,
    document_view,
    find_document,
    jsonable,
)
from producers.health import check_database, check_redis
from producers.intake import SubmitOutcome, SubmitResult
from producers.json_schemas import document_schema, notification_schema
from producers.metrics import BridgeMetrics
from producers.openapi import install as install_openapi
from producers.openapi import mount_docs
from producers.operations import ReversalResult, act_on_document, reverse_document
from producers.reversal import (
    BadReversalRequest,
    CloudUnavailable,
    NotReversible,
    ReversalRefused,
    ReversalRequest,
    reversal_request,
)
from schemas.kingdee import CALLBACK_ACK, CallbackParseError, parse_callback_with
from schemas.money import loads_exact
from schemas.settings import Settings
from store.db import unit_of_work
from store.lifecycle import LostRace, TransitionNotAllowed

__all__ = [
    "MAX_BATCH_DOCUMENTS",
    "MAX_DOCUMENT_BODY_BYTES",
    "ApiError",
    "ApiKeys",
    "Caller",
    "OperatorActor",
    "app_from_environment",
    "create_app",
]

log = logging.getLogger(__name__)

MAX_BATCH_DOCUMENTS: Final = 1000
# 1000 documents of a few lines each, or one document with the maximum 2000 lines.
MAX_DOCUMENT_BODY_BYTES: Final = 32 * 1024 * 1024


class JSONAnswer(JSONResponse):
    """JSON that always encodes: text quoted back from the input (a lone surrogate from a JSON
    ``\\ud800`` escape) is written as a ``\\u`` escape instead of failing the response."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode("utf-8", "backslashreplace")


class ApiError(Exception):
    """An error answer: HTTP status, a stable code and bilingual text (+ extra members)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        message_zh: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.message_zh = message_zh
        self.headers = headers
        self.extra = extra

    def response(self) -> JSONAnswer:
        body: dict[str, Any] = {
            "error": {"code": self.code, "message": self.message, "message_zh": self.message_zh}
        }
        body.update(jsonable(self.extra))
        return JSONAnswer(body, status_code=self.status, headers=self.headers)


def _unavailable(what: str) -> ApiError:
    return ApiError(
        503,
        "unavailable",
        f"{what} is unavailable; try again shortly",
        "服务暂时不可用，请稍后重试",
        headers={"Retry-After": "5"},
    )


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes by header or by count (413)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(
                400,
                "bad_content_length",
                "Content-Length is not a number",
                "Content-Length 不是数字",
            ) from None
        if size > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"the request body exceeds {limit} bytes",
        f"请求体超过 {limit} 字节",
        limit_bytes=limit,
    )


def _bad_json(detail: str) -> ApiError:
    return ApiError(
        400,
        "malformed_json",
        f"the body is not valid JSON: {detail}",
        f"请求体不是合法的JSON：{detail}",
    )


def parse_json_body(raw: bytes, *, upgrade: str | None = None) -> Any:
    """UTF-8 JSON with every number exact (``loads_exact``); 400 with the reason otherwise.

    ``upgrade``: the request's Upgrade header. uvicorn's httptools parser stops reading at an
    ``Upgrade: h2c`` request (Java's HttpClient sends one by default over http://), so the body
    arrives empty; the answer then says so instead of blaming the client's JSON.
    """
    if not raw.strip():
        if upgrade:
            raise ApiError(
                400,
                "body_dropped_by_upgrade",
                f"the body was dropped: the request asked to upgrade the connection"
                f" (Upgrade: {upgrade}); send HTTP/1.1 without an Upgrade header (Java:"
                " HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1))",
                f"请求体被丢弃：请求要求升级连接（Upgrade: {upgrade}）；请使用不带 Upgrade 头的"
                " HTTP/1.1（Java：HttpClient.Version.HTTP_1_1）",
            )
        raise _bad_json("the body is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _bad_json(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return loads_exact(text)
    except RecursionError:
        raise _bad_json("nested too deeply") from None
    except ValueError as exc:
        raise _bad_json(str(exc)) from None


def documents_of(value: Any) -> tuple[list[Any], bool]:
    """(documents, is_batch) from a parsed body: an object, an array, or {"documents": [...]}."""
    if isinstance(value, list):
        documents, batch = value, True
    elif isinstance(value, dict) and "documents" in value:
        documents = value["documents"]
        if not isinstance(documents, list):
            raise ApiError(
                400,
                "bad_batch",
                '"documents" must be an array of documents',
                '"documents" 必须是单据数组',
            )
        batch = True
    elif isinstance(value, dict):
        return [value], False
    else:
        raise ApiError(
            400,
            "bad_shape",
            f"the body must be a document (object) or a batch (array), got {type(value).__name__}",
            "请求体必须是单据对象或单据数组",
        )
    if not documents:
        raise ApiError(400, "empty_batch", "the batch has no documents", "批量请求中没有单据")
    if len(documents) > MAX_BATCH_DOCUMENTS:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(documents)} documents in one batch; at most {MAX_BATCH_DOCUMENTS}",
            f"单次最多提交 {MAX_BATCH_DOCUMENTS} 张单据，实际 {len(documents)} 张",
            limit=MAX_BATCH_DOCUMENTS,
        )
    return documents, batch


def _result_body(result: SubmitResult) -> dict[str, Any]:
    body = result.as_dict()
    body["status_code"] = result.http_status
    if result.document_id is not None and result.bill_no is not None:
        body["links"] = {"self": f"/v1/documents/{result.bill_no}"}
    return body


def _single_response(result: SubmitResult) -> JSONAnswer:
    body = _result_body(result)
    if result.outcome is SubmitOutcome.invalid:
        count = len(result.issues)
        body["error"] = {
            "code": "invalid_document",
            "message": f"the document breaks {count} rule{'s' if count != 1 else ''}",
            "message_zh": f"单据校验未通过，共 {count} 处问题",
        }
    elif result.outcome is SubmitOutcome.conflict:
        body["error"] = {
            "code": "revision_conflict",
            "message": result.message or "different content for a live bill",
            "message_zh": "单据编号已存在且内容不同",
        }
    return JSONAnswer(body, status_code=result.http_status)


def _batch_response(results: list[SubmitResult]) -> JSONAnswer:
    items = []
    for index, result in enumerate(results):
        item = _result_body(result)
        item["index"] = index
        items.append(item)
    summary = {outcome.value: 0 for outcome in SubmitOutcome}
    for result in results:
        summary[result.outcome.value] += 1
    all_accepted = all(result.accepted for result in results)
    return JSONAnswer(
        {"results": items, "summary": summary, "count": len(results)},
        status_code=202 if all_accepted else 207,
    )


def _lookup_error(exc: LookupError) -> ApiError:
    if isinstance(exc, AmbiguousBillNo):
        return ApiError(
            409,
            "ambiguous_bill_no",
            str(exc),
            f"单据编号 {exc.bill_no} 属于多个销方，请通过 ?seller_tax_id= 指定",
            candidates=exc.candidates,
            hint="repeat the request with ?seller_tax_id=<one of the candidates>",
        )
    bill_no = exc.bill_no if isinstance(exc, DocumentNotFound) else ""
    return ApiError(
        404,
        "not_found",
        f"no document with billNo {bill_no!r}",
        f"找不到单据编号为 {bill_no} 的单据",
    )


class ApiKeys:
    """The keys of ``FAPIAO_API_KEYS``; ``actor_for`` names the caller or refuses (401)."""

    def __init__(self, keys: list[bytes], *, open_without_keys: bool) -> None:
        self._keys = keys
        self._open = open_without_keys and not keys

    def actor_for(self, credentials: HTTPAuthorizationCredentials | None) -> str:
        actor = self.actor_or_none(credentials.credentials if credentials else None)
        if actor is None:
            challenge = 'Bearer realm="fapiao-bridge"'
            if credentials is not None:
                challenge += ', error="invalid_token"'
            raise ApiError(
                401,
                "unauthorized",
                "a valid API key is required: Authorization: Bearer <key>",
                "需要有效的API密钥（Authorization: Bearer <key>）",
                headers={"WWW-Authenticate": challenge},
            )
        return actor

    def actor_or_none(self, key: str | None) -> str | None:
        """``api:key<n>`` for a configured key (``api`` when open), None otherwise."""
        if self._open:
            return "api"
        presented = (key or "").encode("utf-8")
        matched: int | None = None
        for index, candidate in enumerate(self._keys):
            # Compare against every key: the time taken does not tell which one (or none).
            if hmac.compare_digest(presented, candidate) and matched is None:
                matched = index
        return None if matched is None else f"api:key{matched + 1}"


_bearer = HTTPBearer(auto_error=False, description="One of FAPIAO_API_KEYS")

# Methods that change something: a console session must send its CSRF token with them, and a
# viewer may not use them at all.
_UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: ``actor`` for the audit log, ``role`` ``operator`` or ``viewer``."""

    actor: str
    role: str


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """An API key (role operator) or a console session cookie (its account's role).

    ``async`` (as are ``_actor`` and ``_operator_actor``) although nothing is awaited: FastAPI
    runs a plain function dependency in the threadpool, two thread hops per request for a few
    microseconds of HMAC and cookie parsing.

    A Bearer header is judged on its own (a wrong key is 401 even beside a good cookie). A
    session needs ``X-CSRF-Token`` on unsafe methods (403 ``csrf_failed``), and a viewer's
    session may only read (403 ``read_only``), whichever dependency the route uses.
    """
    keys: ApiKeys = request.app.state.api_keys
    console: ConsoleAuth | None = getattr(request.app.state, "console_auth", None)
    if credentials is None and console is not None:
        session = console.session(request.cookies.get(CONSOLE_COOKIE))
        if session is not None:
            if request.method in _UNSAFE_METHODS:
                if not console.csrf_ok(session, request.headers.get(CSRF_HEADER)):
                    raise ApiError(
                        403,
                        "csrf_failed",
                        f"the {CSRF_HEADER} header is missing or wrong; reload the console"
                        " and try again",
                        f"缺少或错误的 {CSRF_HEADER}，请刷新操作台后重试",
                    )
                if session.role != "operator":
                    raise _read_only(session.name)
            return Caller(session.actor, session.role)
    return Caller(keys.actor_for(credentials), "operator")


def _read_only(name: str) -> ApiError:
    return ApiError(
        403,
        "read_only",
        f"the console account {name!r} is a viewer and may only read; ask for an operator"
        " account to act",
        f"操作台账号 {name} 为只读（viewer），不能执行操作，请使用操作员（operator）账号",
    )


async def _actor(caller: Annotated[Caller, Depends(_caller)]) -> str:
    """The caller's actor name for the audit log (``api:key<n>`` or ``console:<name>``);
    401 without a valid key or session."""
    return caller.actor


async def _operator_actor(caller: Annotated[Caller, Depends(_caller)]) -> str:
    """As ``_actor``, and a viewer is refused (403 ``read_only``) whatever the method."""
    if caller.role != "operator":
        raise _read_only(caller.actor.removeprefix("console:"))
    return caller.actor


Actor = Annotated[str, Depends(_actor)]
# Routes that change something depend on this one (read-only routes on ``Actor``): a
# viewer's console session is refused whatever the method.
OperatorActor = Annotated[str, Depends(_operator_actor)]
SellerQuery = Annotated[
    str | None, Query(description="销方税号, when several sellers share the bill number")
]
TenantQuery = Annotated[str | None, Query(description="tenant name filter")]


# Answers shared by several routes, for the OpenAPI document (producers.api_models).
_UNAUTHORIZED: Final[dict[str, Any]] = {
    "model": ErrorAnswer,
    "description": "no or wrong API key (unauthorized); WWW-Authenticate says Bearer",
}
_UNAVAILABLE: Final[dict[str, Any]] = {
    "model": ErrorAnswer,
    "description": "the database is unavailable (unavailable); Retry-After says when",
}
_NOT_FOUND: Final[dict[str, Any]] = {
    "model": ErrorAnswer,
    "description": "no document with this billNo (not_found)",
}
_AMBIGUOUS: Final[dict[str, Any]] = {
    "model": ErrorAnswer,
    "description": "several sellers share this billNo (ambiguous_bill_no); candidates lists "
    "them, repeat with ?seller_tax_id=",
}
_BAD_QUERY: Final[dict[str, Any]] = {
    "model": ErrorAnswer,
    "description": "a query parameter is wrong (bad_request)",
}
_BAD_REASON: Final[dict[str, Any]] = {
    "model": ErrorAnswer,
    "description": 'the body is not JSON or not {"reason": text} (malformed_json, '
    "bad_shape, bad_reason)",
}
_REASON_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": False,
        "description": "optional; an empty body is fine",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ReasonBody"}}},
    }
}


def app_from_environment() -> FastAPI:
    """The app for one process of ``fapiao api --workers N`` (a uvicorn factory): settings from
    the ``FAPIAO_*`` environment, logging, engine and broker built in the worker process itself
    (nothing is shared across the fork). Prometheus counters are per process."""
    from worker.logs import configure_logging

    settings = Settings.load(role="api")
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)


def create_app(
    settings: Settings,
    *,
    components: Components | None = None,
    max_document_bytes: int = MAX_DOCUMENT_BODY_BYTES,
) -> FastAPI:
    """The HTTP app for ``settings`` (module docstring); ``components`` replaces any part."""
    # Here, not at the top: importing producers.http loads no worker code (test_cli_servers).
    from worker.coalesce import ReconcileCoalescer
    from worker.enqueue import reconcile_message

    parts = components or Components.build(settings)
    intake = parts.intake()
    broker = parts.broker_redis
    metrics = BridgeMetrics(
        parts.sessions,
        lambda: parts.tenants.names,
        (lambda queue: int(broker.llen(queue))) if broker is not None else None,
    )
    app_keys = ApiKeys(
        [key.get_secret_value().encode("utf-8") for key in settings.api_keys],
        open_without_keys=settings.environment == "development",
    )
    callback_secret = (
        settings.callback_secret.get_secret_value().encode("utf-8")
        if settings.callback_secret is not None
        else None
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        if components is None:
            parts.close()

    app = FastAPI(
        title="fapiao-bridge",
        version="0.1.0",
        description=__doc__ or "",
        lifespan=lifespan,
        default_response_class=JSONAnswer,
        docs_url=None,
        redoc_url=None,
    )
    install_openapi(app)
    mount_docs(app, title="fapiao-bridge")
    app.state.components = parts
    app.state.api_keys = app_keys
    app.state.metrics = metrics
    install_console(app, settings, ConsoleAuth.from_settings(settings))

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONAnswer:
        return exc.response()

    @app.exception_handler(SQLAlchemyError)
    async def _database_error(_: Request, exc: SQLAlchemyError) -> JSONAnswer:
        log.error("database error: %s", type(exc).__name__, exc_info=exc)
        return _unavailable("the database").response()

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONAnswer:
        return ApiError(
            400,
            "bad_request",
            "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            ),
            "请求参数错误",
        ).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONAnswer:
        return JSONAnswer({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(function, *args, **kwargs)

    # ------------------------------------------------------------------ documents

    @app.post(
        "/v1/documents",
        tags=["documents"],
        summary="Submit one document or a batch",
        status_code=202,
        response_model=None,
        responses={
            202: {
                "description": "single document: accepted, push owed (outcome created or "
                "new_revision); batch: every item accepted or unchanged (BatchAnswer)",
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/SubmitAnswer"},
                                {"$ref": "#/components/schemas/BatchAnswer"},
                            ]
                        }
                    }
                },
            },
            200: {
                "model": SubmitAnswer,
                "description": "single document: identical content was accepted before "
                "(outcome unchanged)",
            },
            207: {
                "model": BatchAnswer,
                "description": "batch: not every item was accepted; results[i].status_code "
                "is the truth per item",
            },
            400: {
                "model": ErrorAnswer,
                "description": "not UTF-8 JSON, not a document/array, empty batch "
                "(malformed_json, bad_shape, bad_batch, empty_batch, bad_request)",
            },
            401: _UNAUTHORIZED,
            409: {
                "model": SubmitAnswer,
                "description": "single document: different content while the bill is live "
                "(outcome conflict, error.code revision_conflict)",
            },
            413: {
                "model": ErrorAnswer,
                "description": "body over the limit (body_too_large) or more than 1000 "
                "documents (batch_too_large)",
            },
            422: {
                "model": SubmitAnswer,
                "description": "single document: it breaks rules (outcome invalid, "
                "error.code invalid_document); issues[] lists each",
            },
            503: _UNAVAILABLE,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "One ERP document (ErpDocument, also GET /v1/schema/document), "
                'an array of them, or {"documents": [...]}; at most 1000. Numbers may be '
                "JSON numbers or numeric strings and are read exactly (never as floats).",
                "content": {"application/json": {"schema": BATCH_FORMS}},
            }
        },
    )
    async def post_documents(
        request: Request,
        background: BackgroundTasks,
        actor: Actor,
        tenant: Annotated[
            str | None, Query(description="tenant name; default: by sellerTaxpayerId")
        ] = None,
    ) -> Response:
        raw = await read_limited_body(request, max_document_bytes)
        documents, batch = documents_of(
            parse_json_body(raw, upgrade=request.headers.get("upgrade"))
        )
        results: list[SubmitResult] = await in_thread(
            intake.submit_many, documents, tenant=tenant, actor=actor, defer_enqueue=True
        )
        for outcome, count in Counter(result.outcome.value for result in results).items():
            metrics.documents.labels(outcome=outcome).inc(count)
        background.add_task(intake.enqueue_pushes, results)
        return _batch_response(results) if batch else _single_response(results[0])

    def _view(bill_no: str, seller_tax_id: str | None, tenant: str | None) -> dict[str, Any]:
        with parts.sessions() as session:
            try:
                document = find_document(
                    session, bill_no, seller_tax_id=seller_tax_id, tenant=tenant
                )
            except LookupError as exc:
                raise _lookup_error(exc) from None
            view: dict[str, Any] = jsonable(document_view(session, document))
        return view

    @app.get(
        "/v1/documents/{bill_no}",
        tags=["documents"],
        summary="State, reason, invoices and timeline of a document",
        response_model=None,
        responses={
            200: {"model": DocumentView, "description": "the document"},
            400: _BAD_QUERY,
            401: _UNAUTHORIZED,
            404: _NOT_FOUND,
            409: _AMBIGUOUS,
            503: _UNAVAILABLE,
        },
    )
    async def get_document(
        bill_no: str, actor: Actor, seller_tax_id: SellerQuery = None, tenant: TenantQuery = None
    ) -> dict[str, Any]:
        view: dict[str, Any] = await in_thread(_view, bill_no, seller_tax_id, tenant)
        return view

    def _act(
        kind: str,
        bill_no: str,
        seller_tax_id: str | None,
        tenant: str | None,
        actor: str,
        reason: str | None,
    ) -> OperatorAction:
        try:
            return act_on_document(
                parts,
                kind,
                bill_no,
                seller_tax_id=seller_tax_id,
                tenant=tenant,
                actor=actor,
                reason=reason,
            )
        except LookupError as exc:
            raise _lookup_error(exc) from None
        except NotReplayable as exc:
            raise ApiError(
                409,
                "not_replayable",
                str(exc),
                "只有失败或被拒绝的单据可以重推",
                current_status=exc.status,
            ) from None
        except TransitionNotAllowed as exc:
            raise ApiError(
                409,
                "not_allowed",
                str(exc),
                f"当前状态不允许{'撤回' if kind == 'withdraw' else '重推'}",
            ) from None
        except LostRace:
            raise ApiError(
                409,
                "changed_meanwhile",
                "the document changed while the request ran; look at it and try again",
                "单据状态已变化，请查看后重试",
            ) from None

    async def _reason_of(request: Request) -> str | None:
        raw = await read_limited_body(request, 64 * 1024)
        if not raw.strip():
            return None
        value = parse_json_body(raw)
        if not isinstance(value, dict):
            raise ApiError(
                400,
                "bad_shape",
                'the body must be an object like {"reason": "…"}',
                "请求体必须是对象",
            )
        reason = value.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ApiError(400, "bad_reason", '"reason" must be text', '"reason" 必须是文本')
        return reason[:500] if reason else None

    def _action_response(action: OperatorAction) -> JSONAnswer:
        status = 202 if action.enqueue else 200
        return JSONAnswer(action.as_dict(), status_code=status)

    @app.post(
        "/v1/documents/{bill_no}/withdraw",
        tags=["documents"],
        summary="Withdraw a document (BILL.WITHDRAW when it reached the cloud)",
        response_model=None,
        responses={
            200: {
                "model": OperatorAnswer,
                "description": "done at once (never pushed) or already withdrawn",
            },
            202: {"model": OperatorAnswer, "description": "BILL.WITHDRAW owed"},
            400: _BAD_REASON,
            401: _UNAUTHORIZED,
            404: _NOT_FOUND,
            409: {
                "model": ErrorAnswer,
                "description": "not allowed in this state (not_allowed), changed meanwhile "
                "(changed_meanwhile), or ambiguous bill number (ambiguous_bill_no)",
            },
            503: _UNAVAILABLE,
        },
        openapi_extra=_REASON_BODY,
    )
    async def post_withdraw(
        bill_no: str,
        request: Request,
        actor: OperatorActor,
        seller_tax_id: SellerQuery = None,
        tenant: TenantQuery = None,
    ) -> Response:
        reason = await _reason_of(request)
        action: OperatorAction = await in_thread(
            _act, "withdraw", bill_no, seller_tax_id, tenant, actor, reason
        )
        return _action_response(action)

    @app.post(
        "/v1/documents/{bill_no}/replay",
        tags=["documents"],
        summary="Push a failed or rejected document again (same content)",
        status_code=202,
        response_model=None,
        responses={
            202: {"model": OperatorAnswer, "description": "back to draft, push owed"},
            200: {"model": OperatorAnswer, "description": "nothing to do (outcome unchanged)"},
            400: _BAD_REASON,
            401: _UNAUTHORIZED,
            404: _NOT_FOUND,
            409: {
                "model": ErrorAnswer,
                "description": "not failed/rejected (not_replayable, with current_status), "
                "changed meanwhile, or ambiguous bill number (ambiguous_bill_no)",
            },
            503: _UNAVAILABLE,
        },
        openapi_extra=_REASON_BODY,
    )
    async def post_replay(
        bill_no: str,
        request: Request,
        actor: OperatorActor,
        seller_tax_id: SellerQuery = None,
        tenant: TenantQuery = None,
    ) -> Response:
        reason = await _reason_of(request)
        action: OperatorAction = await in_thread(
            _act, "replay", bill_no, seller_tax_id, tenant, actor, reason
        )
        return _action_response(action)

    def _reverse(request: ReversalRequest, actor: str, reason: str | None) -> ReversalResult:
        try:
            return reverse_document(parts, request, actor=actor, reason=reason)
        except LookupError as exc:
            raise _lookup_error(exc) from None
        except ReversalRefused as exc:
            raise ApiError(
                422,
                "invalid_reversal",
                f"the red document for {exc.bill_no} breaks {len(exc.issues)} rule(s); "
                "issues[] names each field, rule and what is left",
                f"{exc.bill_no} 的红字单据未通过校验，详见 issues",
                issues=[issue.as_dict() for issue in exc.issues],
            ) from None
        except NotReversible as exc:
            raise ApiError(409, "not_reversible", str(exc), exc.why_zh) from None
        except CloudUnavailable as exc:
            raise ApiError(
                503,
                "cloud_unavailable",
                str(exc),
                "无法向发票云查询剩余可冲额度，未创建红字单据，请过几分钟再试",
                headers={"Retry-After": "30"},
            ) from None

    @app.post(
        "/v1/documents/{bill_no}/reverse",
        tags=["documents"],
        summary="Reverse an issued document with red-letter (红冲) document(s)",
        status_code=202,
        response_model=None,
        responses={
            202: {"model": ReversalAnswer, "description": "red document(s) made, push owed"},
            200: {
                "model": ReversalAnswer,
                "description": "a repeat: the same red documents, nothing new (outcome unchanged)",
            },
            400: {"model": ErrorAnswer, "description": "malformed body (bad_request)"},
            401: _UNAUTHORIZED,
            404: _NOT_FOUND,
            409: {
                "model": ErrorAnswer,
                "description": "a red document itself, the red bill number taken "
                "(not_reversible), or ambiguous bill number (ambiguous_bill_no)",
            },
            422: {
                "model": ErrorAnswer,
                "description": "over what may still be reversed (can_red_amount, "
                "can_red_tax_amount), redReason/redInfoBillNo missing, unknown line "
                "(invalid_reversal; issues[] names each field and rule)",
            },
            503: {
                "model": ErrorAnswer,
                "description": "the cloud could not be asked what may still be reversed "
                "(cloud_unavailable), or the database is down",
            },
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ReverseBody"}}
                },
            }
        },
    )
    async def post_reverse(
        bill_no: str,
        request: Request,
        actor: OperatorActor,
        seller_tax_id: SellerQuery = None,
        tenant: TenantQuery = None,
    ) -> Response:
        body = parse_json_body(await read_limited_body(request, 1024 * 1024))
        if not isinstance(body, dict):
            raise ApiError(
                400,
                "bad_shape",
                'the body must be an object like {"redReason": "1"}',
                "请求体必须是对象",
            )
        try:
            wanted = reversal_request(bill_no, body, seller_tax_id=seller_tax_id, tenant=tenant)
        except BadReversalRequest as exc:
            raise ApiError(
                400,
                "bad_request",
                str(exc),
                "无法向发票云查询剩余可冲额度，未创建红字单据，请过几分钟再试",
                field=exc.field,
            ) from None
        reason = body.get("reason")
        reason = reason[:500] if isinstance(reason, str) and reason else None
        result: ReversalResult = await in_thread(_reverse, wanted, actor, reason)
        return JSONAnswer(result.as_dict(), status_code=202 if result.created else 200)

    @app.get(
        "/v1/schema/document",
        tags=["schemas"],
        summary="JSON Schema of the ERP document",
        responses={401: _UNAUTHORIZED},
    )
    async def get_document_schema(actor: Actor) -> dict[str, Any]:
        return document_schema()

    @app.get(
        "/v1/schema/notification",
        tags=["schemas"],
        summary="JSON Schema of the notification posted to the ERP webhook",
        responses={401: _UNAUTHORIZED},
    )
    async def get_notification_schema(actor: Actor) -> dict[str, Any]:
        return notification_schema()

    # ------------------------------------------------------------------ callbacks

    def _store(raw: bytes, remote: str | None) -> StoredCallback:
        try:
            parsed = parse_callback_with(raw, parts.tenants.callback_codecs())
        except CallbackParseError as exc:
            raise ApiError(400, "bad_callback", str(exc), "回调报文无法解析") from None
        except (RecursionError, ValueError, TypeError) as exc:
            raise ApiError(
                400,
                "bad_callback",
                f"callback body cannot be read ({type(exc).__name__})",
                "回调报文无法解析",
            ) from None
        problem = unstorable_text(parsed)
        if problem is not None:
            raise ApiError(
                400, "bad_callback", f"callback refused: {problem}", "回调报文含有无效字符"
            )
        with unit_of_work(parts.sessions) as session:
            return store_callback(
                session,
                raw,
                parsed,
                remote,
                poll_grace=timedelta(seconds=settings.callbacks.poll_grace_seconds),
            )

    @app.post(
        "/callbacks/kingdee/{secret}",
        tags=["callbacks"],
        summary="Kingdee Invoice Cloud callbacks (5.1.01 / 5.1.02 / 5.1.03)",
        response_model=None,
        responses={
            200: {"model": CallbackAck, "description": "stored (or a duplicate); Kingdee's ACK"},
            400: {"model": ErrorAnswer, "description": "not a callback we can read"},
            403: {"model": ErrorAnswer, "description": "caller not in the IP allow-list"},
            404: {"description": "wrong secret"},
            413: {"model": ErrorAnswer, "description": "body too large"},
            503: {"model": ErrorAnswer, "description": "could not store it; the cloud retries"},
        },
    )
    async def post_callback(secret: str, request: Request, background: BackgroundTasks) -> Response:
        if callback_secret is None or not hmac.compare_digest(
            secret.encode("utf-8"), callback_secret
        ):
            return JSONAnswer({"detail": "Not Found"}, status_code=404)
        remote = request.client.host if request.client else None
        if not settings.callbacks.allows(remote or ""):
            metrics.callbacks.labels(result="refused").inc()
            raise ApiError(
                403, "forbidden", "caller not in the callback IP allow-list", "回调来源IP不在白名单"
            )
        try:
            raw = await read_limited_body(request, settings.callbacks.max_body_bytes)
            stored: StoredCallback = await in_thread(_store, raw, remote)
        except ApiError:
            metrics.callbacks.labels(result="refused").inc()
            raise
        except SQLAlchemyError as exc:
            metrics.callbacks.labels(result="unavailable").inc()
            log.error("callback not stored: %s", type(exc).__name__, exc_info=exc)
            return _unavailable("the database").response()
        if stored.duplicate:
            metrics.callbacks.labels(result="duplicate").inc()
        else:
            metrics.callbacks.labels(result="stored").inc()
            if stored.orphan:
                metrics.callbacks.labels(result="orphan").inc()
                log.warning("callback for an unknown bill", extra={"inbox_id": stored.inbox_id})
            background.add_task(_publish_reconcile, stored)
        return JSONAnswer(dict(CALLBACK_ACK), status_code=200)

    reconcile_owed = ReconcileCoalescer(parts.redis) if parts.redis is not None else None

    def _publish_reconcile(stored: StoredCallback) -> None:
        # After the response, in a thread: the Redis SET and the send block.
        if reconcile_owed is None or reconcile_owed.owe_reconcile():
            message = reconcile_message(
                stored.inbox_id, bill_no=stored.bill_no, tenant=stored.tenant
            )
            parts.enqueuer.send([message])

    # ------------------------------------------------------------------ operations

    def _health() -> tuple[int, dict[str, Any]]:
        checks = [check_database(parts.engine)]
        if parts.redis is not None:
            checks.append(check_redis(parts.redis))
        healthy = all(check.ok for check in checks)
        body = {
            "status": "ok" if healthy else "unhealthy",
            "checks": {check.name: check.as_dict() for check in checks},
        }
        return (200 if healthy else 503), body

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="Database and Redis reachable?",
        response_model=None,
        responses={
            200: {"model": HealthAnswer, "description": "every check passed"},
            503: {"model": HealthAnswer, "description": "a check failed (status unhealthy)"},
        },
    )
    async def healthz() -> JSONAnswer:
        status, body = await in_thread(_health)
        return JSONAnswer(body, status_code=status)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        },
    )
    async def get_metrics() -> Response:
        content: bytes = await in_thread(generate_latest, metrics.registry)
        return Response(content, media_type=CONTENT_TYPE_LATEST)

    from producers.http_operations import router as operations_router  # it imports this module

    app.include_router(operations_router)
    from producers.http_reconciliation import router as reconciliation_router

    app.include_router(reconciliation_router)
    return app
