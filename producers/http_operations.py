"""The operator's HTTP routes (``/v1``): lists, bulk actions, notifications, tenants, overview.

Thin: each route parses its input, calls ``producers.operations`` (the same functions the
CLI calls) and answers JSON. Read routes need ``Actor`` (an API key today); action routes
need ``OperatorActor`` (``producers.http``; the console narrows both later).

| route | answers |
|---|---|
| ``GET /v1/documents`` | current documents by filters, oldest in their state first; cursor pages |
| ``POST /v1/operations/replay`` | failed/rejected → draft for a filter (``dry_run`` predicts) |
| ``POST /v1/operations/withdraw`` | withdraw for a filter (``dry_run`` predicts) |
| ``GET /v1/notifications`` | ERP notifications (``?state=parked`` by default) |
| ``POST /v1/notifications/resend`` | parked notifications back to pending, due now |
| ``GET /v1/tenants`` | tenants: pause state, token health, rate limit, credit quota |
| ``POST /v1/tenants/{name}/pause``, ``/resume`` | the operator's pause switch (resume also |
| | releases a credit-quota hold) |
| ``GET /v1/overview`` | documents by state and tenant, and what needs a person |

A bad filter answers 400 ``bad_filter`` with ``field`` (which one) and ``allowed`` (what it
accepts); a malformed body or query answers 400 ``bad_request`` naming the field. Every
action writes one ``operator_actions`` row with the actor and the reason.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request

from producers.api_models import (
    BulkAnswer,
    BulkRequest,
    DocumentPage,
    ErrorAnswer,
    FilterBody,
    NotificationPage,
    OverviewAnswer,
    RequiredReason,
    ResendAnswer,
    ResendRequest,
    TenantView,
)
from producers.bootstrap import Components
from producers.documents import jsonable
from producers.http import (
    _UNAUTHORIZED,
    _UNAVAILABLE,
    Actor,
    ApiError,
    JSONAnswer,
    OperatorActor,
)
from producers.operations import (
    DEFAULT_PAGE,
    MAX_PAGE,
    FilterError,
    UnknownTenant,
    bulk_action,
    document_filter,
    list_documents,
    list_notifications,
    pause_tenant,
    resend_notifications,
    resume_tenant,
    tenant_rows,
)
from producers.overview import operator_overview, overview

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["operations"])

_BAD_FILTER: Final[dict[str, Any]] = {
    "model": ErrorAnswer,
    "description": "a filter or parameter is wrong: bad_filter (with field and allowed) or "
    "bad_request (field: message)",
}
_UNKNOWN_TENANT: Final[dict[str, Any]] = {
    "model": ErrorAnswer,
    "description": "no tenant of this name in the tenants file (unknown_tenant; known lists them)",
}


def _components(request: Request) -> Components:
    parts: Components = request.app.state.components
    return parts


def _bad_filter(exc: FilterError) -> ApiError:
    return ApiError(
        400,
        "bad_filter",
        str(exc),
        f"参数 {exc.field} 有误：{exc.message}",
        field=exc.field,
        allowed=exc.allowed,
        hint="correct the field named; allowed says what it accepts",
    )


def _unknown(exc: UnknownTenant) -> ApiError:
    return ApiError(
        404,
        "unknown_tenant",
        str(exc),
        f"找不到租户 {exc.name}",
        known=exc.known,
        hint="use one of the tenants listed in known (GET /v1/tenants)",
    )


# ------------------------------------------------------------------ documents


@router.get(
    "/documents",
    summary="Current documents by state, age, tenant, seller, text; oldest first, paged",
    response_model=None,
    responses={
        200: {"model": DocumentPage, "description": "a page; next_cursor null on the last"},
        400: _BAD_FILTER,
        401: _UNAUTHORIZED,
        503: _UNAVAILABLE,
    },
)
def get_documents(
    request: Request,
    actor: Actor,
    status: Annotated[
        list[str] | None, Query(description="state; repeatable or comma-separated")
    ] = None,
    tenant: Annotated[str | None, Query(description="tenant name")] = None,
    seller: Annotated[str | None, Query(description="销方税号")] = None,
    older_than: Annotated[
        str | None, Query(description="in its state at least: 90s, 30m, 2h, 7d or seconds")
    ] = None,
    updated_since: Annotated[
        str | None, Query(description="changed since (ISO 8601; no offset = UTC)")
    ] = None,
    q: Annotated[
        str | None, Query(description="bill number or buyer name contains (any case)")
    ] = None,
    error_code: Annotated[str | None, Query(description="the last errorCode")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> JSONAnswer:
    parts = _components(request)
    try:
        criteria = document_filter(
            status=status,
            tenant=tenant,
            seller=seller,
            older_than=older_than,
            updated_since=updated_since,
            q=q,
            error_code=error_code,
        )
        with parts.sessions() as session:
            page = list_documents(session, criteria, limit=limit, cursor=cursor)
    except FilterError as exc:
        raise _bad_filter(exc) from None
    return JSONAnswer(page)


# ------------------------------------------------------------------ bulk actions


def _bulk(request: Request, action: str, body: BulkRequest, actor: str) -> JSONAnswer:
    given: FilterBody = body.filter
    try:
        criteria = document_filter(
            status=given.status,
            tenant=given.tenant,
            seller=given.seller,
            older_than=given.older_than,
            updated_since=given.updated_since,
            q=given.q,
            error_code=given.error_code,
            bill_nos=given.bill_nos,
            prefix="filter.",
        )
        result = bulk_action(
            _components(request),
            action,
            criteria,
            actor=actor,
            reason=body.reason,
            dry_run=body.dry_run,
            limit=body.limit,
        )
    except FilterError as exc:
        raise _bad_filter(exc) from None
    return JSONAnswer(jsonable(result.as_dict()))


_BULK_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {"model": BulkAnswer, "description": "what was done (or would be, on a dry run)"},
    400: _BAD_FILTER,
    401: _UNAUTHORIZED,
    503: _UNAVAILABLE,
}


@router.post(
    "/operations/replay",
    summary="Replay failed/rejected documents selected by a filter (dry_run predicts)",
    response_model=None,
    responses=_BULK_RESPONSES,
)
def post_bulk_replay(request: Request, body: BulkRequest, actor: OperatorActor) -> JSONAnswer:
    return _bulk(request, "replay", body, actor)


@router.post(
    "/operations/withdraw",
    summary="Withdraw documents selected by a filter (dry_run predicts)",
    response_model=None,
    responses=_BULK_RESPONSES,
)
def post_bulk_withdraw(request: Request, body: BulkRequest, actor: OperatorActor) -> JSONAnswer:
    return _bulk(request, "withdraw", body, actor)


# ------------------------------------------------------------------ notifications


@router.get(
    "/notifications",
    summary="ERP notifications (parked by default), with their bill",
    response_model=None,
    responses={
        200: {"model": NotificationPage, "description": "a page, oldest first"},
        400: _BAD_FILTER,
        401: _UNAUTHORIZED,
        503: _UNAVAILABLE,
    },
)
def get_notifications(
    request: Request,
    actor: Actor,
    state: Annotated[
        str, Query(description="pending, delivered or parked (default), or all")
    ] = "parked",
    tenant: Annotated[str | None, Query(description="tenant name")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> JSONAnswer:
    try:
        page = list_notifications(
            _components(request),
            state=None if state == "all" else state,
            tenant=tenant,
            cursor=cursor,
            limit=limit,
        )
    except FilterError as exc:
        raise _bad_filter(exc) from None
    return JSONAnswer(page)


@router.post(
    "/notifications/resend",
    summary="Send parked ERP notifications again (back to pending, due now)",
    response_model=None,
    responses={
        200: {"model": ResendAnswer, "description": "per id: requeued, already_pending, …"},
        400: _BAD_FILTER,
        401: _UNAUTHORIZED,
        503: _UNAVAILABLE,
    },
)
def post_resend(request: Request, body: ResendRequest, actor: OperatorActor) -> JSONAnswer:
    try:
        answer = resend_notifications(
            _components(request), body.ids, actor=actor, reason=body.reason
        )
    except FilterError as exc:
        raise _bad_filter(exc) from None
    return JSONAnswer(answer)


# ------------------------------------------------------------------ tenants


@router.get(
    "/tenants",
    summary="Tenants: pause state, token health, rate limit",
    response_model=None,
    responses={
        200: {
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/TenantView"},
                    }
                }
            },
            "description": "every tenant of the tenants file",
        },
        401: _UNAUTHORIZED,
        503: _UNAVAILABLE,
    },
)
def get_tenants(request: Request, actor: Actor) -> JSONAnswer:
    return JSONAnswer(jsonable(tenant_rows(_components(request))))


_TENANT_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {"model": TenantView, "description": "the tenant after the change"},
    400: _BAD_FILTER,
    401: _UNAUTHORIZED,
    404: _UNKNOWN_TENANT,
    503: _UNAVAILABLE,
}


@router.post(
    "/tenants/{name}/pause",
    summary="Pause a tenant: no pushes, polls or withdrawals (callbacks still stored)",
    response_model=None,
    responses=_TENANT_RESPONSES,
)
def post_pause(
    name: str, request: Request, body: RequiredReason, actor: OperatorActor
) -> JSONAnswer:
    try:
        row = pause_tenant(_components(request), name, actor=actor, reason=body.reason)
    except UnknownTenant as exc:
        raise _unknown(exc) from None
    return JSONAnswer(jsonable(row))


@router.post(
    "/tenants/{name}/resume",
    summary="Resume a paused tenant; also releases a credit-quota (授信额度) hold",
    response_model=None,
    responses=_TENANT_RESPONSES,
)
def post_resume(
    name: str, request: Request, body: RequiredReason, actor: OperatorActor
) -> JSONAnswer:
    try:
        row = resume_tenant(_components(request), name, actor=actor, reason=body.reason)
    except UnknownTenant as exc:
        raise _unknown(exc) from None
    return JSONAnswer(jsonable(row))


# ------------------------------------------------------------------ overview


@router.get(
    "/overview",
    summary="Documents by state and tenant; what needs a person",
    response_model=None,
    responses={
        200: {"model": OverviewAnswer, "description": "the overview"},
        401: _UNAUTHORIZED,
        503: _UNAVAILABLE,
    },
)
def get_overview(request: Request, actor: Actor) -> JSONAnswer:
    parts = _components(request)
    with parts.sessions() as session:
        data = overview(session, parts.tenants, parts.settings.stuck_alert)
    return JSONAnswer(jsonable(operator_overview(data)))
