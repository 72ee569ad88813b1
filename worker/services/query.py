"""BILL.INVOICE.QUERY for one document, reduced to what a decision needs.

| ``QueryAnswer.kind`` | when                                                         |
|----------------------|--------------------------------------------------------------|
| ``present``          | success, and the answer lists our billNo (``items`` = its    |
|                      | ``invoiceList``, possibly empty: accepted, not issued yet)   |
| ``absent``           | failure 单据不存在 (``is_unknown_bill``), or success with no  |
|                      | element for our billNo                                       |
| ``retry``            | transient, unknown outcome, undecodable answer, other refusal|
| ``config``           | configuration/auth error that survived a fresh token;        |
|                      | ``reason`` names the setting                                 |

Queries change nothing in the cloud, so every "don't know" is simply asked again later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from schemas.cloud_contract import is_unknown_bill
from schemas.kingdee import DataDecodeError, InvoiceItem, query_results
from schemas.tenants import TenantConfig
from worker.kingdee import (
    CallContext,
    CloudConfigError,
    CloudTransientError,
    config_reason,
)
from worker.retry_policy import Action, decide_query
from worker.runtime import Runtime
from worker.services.common import call_with_token

__all__ = ["QueryAnswer", "query_bill"]


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    kind: Literal["present", "absent", "retry", "config"]
    reason: str = ""
    items: list[InvoiceItem] = field(default_factory=list)


def query_bill(
    rt: Runtime,
    tenant: TenantConfig,
    *,
    bill_no: str,
    seller_tax_id: str,
    document_id: int | None,
    attempt: int | None,
) -> QueryAnswer:
    """Ask the cloud what it knows about ``bill_no`` (module docstring)."""
    client = rt.client(tenant)
    context = CallContext(document_id=document_id, attempt=attempt)
    try:
        result = call_with_token(
            rt,
            client,
            lambda token: client.query(bill_no, seller_tax_id, access_token=token, context=context),
        )
    except CloudConfigError as exc:
        return QueryAnswer("config", exc.reason)
    except CloudTransientError as exc:
        return QueryAnswer("retry", exc.reason)
    decision = decide_query(result.outcome, auth_refreshed=result.auth_refreshed)
    what = f"[{result.error_code}] {result.message}" if result.error_code else result.message
    if decision.action is Action.APPLY:
        assert result.response is not None
        try:
            bills = query_results(result.response)
        except DataDecodeError as exc:
            return QueryAnswer("retry", f"unreadable query answer: {exc}")
        for bill in bills:
            if bill.billNo == bill_no:
                return QueryAnswer("present", what, list(bill.invoiceList))
        return QueryAnswer("absent", f"query answer does not list {bill_no}")
    if is_unknown_bill(result.error_code, result.message):
        return QueryAnswer("absent", what)
    if decision.action is Action.PAUSE_TENANT:
        return QueryAnswer(
            "config",
            config_reason(
                tenant.name,
                result.interface,
                http_status=result.http_status,
                error_code=result.error_code,
                message=result.message,
            ),
        )
    return QueryAnswer("retry", f"{result.outcome.value}: {what}")
