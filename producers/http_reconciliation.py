"""Three-way reconciliation over HTTP (``/v1``): run it, with or without the ERP's list; read
stored reports.

| route | answers |
|---|---|
| ``GET /v1/reconciliation`` | runs it (bridge and cloud), stores and returns the report; |
| | ``?since=&until=&tenant=&grace_minutes=`` |
| ``POST /v1/reconciliation`` | the same with the ERP's list: ``{"since", "until", "tenant",`` |
| | ``"grace_minutes", "bills": [...]}`` or ``"csv": "<text>"`` instead of ``bills`` |
| ``GET /v1/reconciliation/reports`` | stored reports, newest first (counts, no findings); |
| | ``?tenant=&limit=`` |
| ``GET /v1/reconciliation/reports/{id}`` | one stored report with its findings |

A run asks the cloud and stores a report, so it needs an operator (an API key or an
operator's console session); a viewer may read the stored reports. Dates are ``YYYY-MM-DD``
in Asia/Shanghai; a bad date, tenant or ERP list answers 400 (``bad_request`` naming
``field``; ``bad_erp_list`` with ``problems``: line, column, rule).
The run is synchronous (one BILL.INVOICE.QUERY per bill within the tenant's rate limit):
for a large window prefer the nightly report (``fapiao.reconcile_daily``) or the CLI.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from producers.api_models import ErrorAnswer
from producers.bootstrap import Components
from producers.http import _UNAUTHORIZED, _UNAVAILABLE, Actor, ApiError, JSONAnswer, OperatorActor
from producers.reconciliation import ReconciliationInputError, run, window_of
from schemas.reconciliation import BAD_ERP_LIST_ZH, ErpListError, parse_erp_list

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["reconciliation"])

_BAD: Final[dict[str, Any]] = {
    "model": ErrorAnswer,
    "description": "a date, tenant or ERP list is wrong (bad_request with field; bad_erp_list "
    "with problems: line, column, rule)",
}


class ReconciliationRequest(BaseModel):
    """A run with the ERP's list (``bills`` as JSON objects, or ``csv`` as text)."""

    model_config = ConfigDict(extra="forbid")

    since: str = Field(description="first day, YYYY-MM-DD (Asia/Shanghai)")
    until: str | None = Field(None, description="last day (inclusive); default since")
    tenant: str | None = None
    grace_minutes: int = Field(
        30, ge=0, description="documents changed more recently are in flight"
    )
    bills: list[dict[str, Any]] | None = Field(
        None,
        description="billNo, totalAmount and/or includeTaxAmount, sellerTaxpayerId, tenant",
    )
    csv: str | None = Field(None, description="the same as CSV text with a header line")


class FindingAnswer(BaseModel):
    """One finding (``schemas.reconciliation.Finding``); invoice-level findings add
    ``invoiceNum``/``invoiceStatus``, total mismatches ``sides`` (e.g. ``erp/bridge``)."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(
        description="not_submitted, cloud_unknown, state_mismatch, cloud_only, total_mismatch"
    )
    billNo: str
    tenant: str
    sellerTaxpayerId: str | None
    reason: str
    reason_zh: str
    erp: dict[str, Any] | None = Field(description="the ERP line: line, totals")
    bridge: dict[str, Any] | None = Field(description="documentId, status, totals, invoices")
    cloud: dict[str, Any] | None = Field(description="known, invoices (invoiceStatus), totals")


class ReportAnswer(BaseModel):
    """A stored reconciliation report."""

    id: int
    tenant: str | None = Field(description="null: every tenant")
    window: dict[str, str] = Field(description="since, until, timezone, start, end")
    trigger: str = Field(description="cli, api or beat")
    actor: str
    started_at: str
    finished_at: str | None
    erp_bills: int | None = Field(description="lines of the ERP list; null without one")
    documents: int
    queried: int = Field(description="BILL.INVOICE.QUERY calls made")
    in_flight: int | None = Field(None, description="only in a fresh run's answer")
    total: int
    counts: dict[str, int] = Field(description="findings per kind, every kind listed")
    unanswered: list[dict[str, str]] = Field(description="bills the cloud did not answer")
    findings: list[FindingAnswer] | None = None


class ReportList(BaseModel):
    reports: list[ReportAnswer]


def _components(request: Request) -> Components:
    parts: Components = request.app.state.components
    return parts


def _bad_input(exc: ReconciliationInputError) -> ApiError:
    return ApiError(400, "bad_request", str(exc), exc.message_zh, field=exc.field)


def _bad_list(exc: ErpListError) -> ApiError:
    return ApiError(
        400,
        "bad_erp_list",
        str(exc),
        BAD_ERP_LIST_ZH,
        problems=[{"line": p.line, "column": p.column, "rule": p.rule} for p in exc.problems],
    )


async def _run(
    request: Request,
    actor: str,
    since: str | None,
    until: str | None,
    tenant: str | None,
    grace_minutes: int,
    erp_raw: str | None,
) -> JSONAnswer:
    try:
        window = window_of(since, until)
        erp = parse_erp_list(erp_raw) if erp_raw is not None else None
    except ReconciliationInputError as exc:
        raise _bad_input(exc) from None
    except ErpListError as exc:
        raise _bad_list(exc) from None
    try:
        report = await run_in_threadpool(
            run,
            _components(request),
            window,
            trigger="api",
            actor=actor,
            tenant=tenant,
            erp=erp,
            grace=timedelta(minutes=grace_minutes),
        )
    except ReconciliationInputError as exc:
        raise _bad_input(exc) from None
    return JSONAnswer(report)


@router.get(
    "/reconciliation",
    summary="Reconcile the bridge with the cloud for a window of days (stores the report)",
    response_model=None,
    responses={
        200: {"model": ReportAnswer, "description": "the stored report, with its findings"},
        400: _BAD,
        401: _UNAUTHORIZED,
        503: _UNAVAILABLE,
    },
)
async def get_reconciliation(
    request: Request,
    actor: OperatorActor,
    since: Annotated[str | None, Query(description="YYYY-MM-DD, Asia/Shanghai")] = None,
    until: Annotated[str | None, Query(description="YYYY-MM-DD, inclusive")] = None,
    tenant: Annotated[str | None, Query(description="tenant name")] = None,
    grace_minutes: Annotated[int, Query(ge=0)] = 30,
) -> JSONAnswer:
    return await _run(request, actor, since, until, tenant, grace_minutes, None)


@router.post(
    "/reconciliation",
    summary="Reconcile the ERP's list, the bridge and the cloud (stores the report)",
    response_model=None,
    responses={
        200: {"model": ReportAnswer, "description": "the stored report, with its findings"},
        400: _BAD,
        401: _UNAUTHORIZED,
        503: _UNAVAILABLE,
    },
)
async def post_reconciliation(
    request: Request, body: ReconciliationRequest, actor: OperatorActor
) -> JSONAnswer:
    import json

    if body.bills is not None and body.csv is not None:
        raise ApiError(
            400,
            "bad_request",
            "give bills or csv, not both",
            "bills 与 csv 只能二选一",
            field="csv",
        )
    raw = body.csv if body.csv is not None else json.dumps(body.bills or [], ensure_ascii=False)
    return await _run(request, actor, body.since, body.until, body.tenant, body.grace_minutes, raw)


@router.get(
    "/reconciliation/reports",
    summary="Stored reconciliation reports, newest first (counts only)",
    response_model=None,
    responses={
        200: {"model": ReportList, "description": "reports without their findings"},
        401: _UNAUTHORIZED,
        503: _UNAVAILABLE,
    },
)
def get_reports(
    request: Request,
    actor: Actor,
    tenant: Annotated[str | None, Query(description="tenant name")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONAnswer:
    from store.reconciliation import list_reports
    from worker.services.reconciliation import report_json

    with _components(request).sessions() as session:
        rows = list_reports(session, tenant, limit)
        reports = [report_json(row) for row in rows]
    for report in reports:
        report.pop("findings")
    return JSONAnswer({"reports": reports})


@router.get(
    "/reconciliation/reports/{report_id}",
    summary="One stored reconciliation report with its findings",
    response_model=None,
    responses={
        200: {"model": ReportAnswer, "description": "the report with its findings"},
        404: {"model": ErrorAnswer, "description": "no such report (not_found)"},
        401: _UNAUTHORIZED,
        503: _UNAVAILABLE,
    },
)
def get_report_by_id(request: Request, report_id: int, actor: Actor) -> JSONAnswer:
    from store.reconciliation import get_report
    from worker.services.reconciliation import report_json

    with _components(request).sessions() as session:
        row = get_report(session, report_id)
        if row is None:
            raise ApiError(
                404, "not_found", f"no reconciliation report {report_id}", "找不到该对账报告"
            )
        return JSONAnswer(report_json(row))
