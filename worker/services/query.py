"""BILL.INVOICE.QUERY for one document, reduced to what a decision needs.

| ``QueryAnswer.kind`` | when                                                         |
|----------------------|--------------------------------------------------------------|
| ``present``          | success, and the answer lists our billNo (``items`` = its    |
|                      | ``invoiceList``, possibly empty: accepted, not issued yet —  |
|                      | but see ``ambiguous``)                                       |
| ``absent``           | failure 单据不存在 (``is_unknown_bill``), or success with an  |
|                      | array that has no element for our billNo (``data: []``)      |
| ``retry``            | transient, unknown outcome, undecodable answer, a success    |
|                      | without ``data``, other refusal                              |
| ``config``           | configuration/auth error that survived a fresh token;        |
|                      | ``reason`` names the setting                                 |

Queries change nothing in the cloud, so every "don't know" is simply asked again later.

``ambiguous`` (dialect switch ``unknown_bill``, docs/CLOUD-CONTRACT.md): an element for our bill
with an EMPTY ``invoiceList`` means "present, not issued yet" when the tenant declares
``unknown_bill`` = ``error`` or ``empty_data`` (those readings answer a bill they lack with
-10011 / ``data: []``), but under ``empty_list`` — and when nothing is declared — it is also how
the cloud answers a bill it never received. Such an answer is ``present`` with
``ambiguous=True``: a caller that needs to know (the in-doubt resolver) must find out another
way; a poller of an accepted bill reads it as "not issued yet". ``data: []`` and -10011 mean
"absent" under every reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from schemas.cloud_contract import is_unknown_bill
from schemas.kingdee import DataDecodeError, InvoiceItem, query_results
from schemas.tenants import TenantConfig
from worker.kingdee import (
    CallContext,
    CallLedger,
    CloudConfigError,
    CloudTransientError,
    config_reason,
)
from worker.retry_policy import Action, decide_query
from worker.runtime import Runtime
from worker.services.cloud_call import call_with_token

__all__ = ["UNAMBIGUOUS_EMPTY_LIST", "QueryAnswer", "query_bill"]

# Readings of ``unknown_bill`` under which an empty invoiceList can only mean "present".
UNAMBIGUOUS_EMPTY_LIST: Final = ("error", "empty_data")


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    kind: Literal["present", "absent", "retry", "config"]
    reason: str = ""
    items: list[InvoiceItem] = field(default_factory=list)
    ambiguous: bool = False


def query_bill(
    rt: Runtime,
    tenant: TenantConfig,
    *,
    bill_no: str,
    seller_tax_id: str,
    document_id: int | None,
    attempt: int | None,
    ledger: CallLedger | None = None,
) -> QueryAnswer:
    """Ask the cloud what it knows about ``bill_no`` (module docstring). ``ledger``: where
    the call is recorded instead of the client's ledger (``worker.ledger.HeldCallLedger``)."""
    client = rt.client(tenant)
    context = CallContext(document_id=document_id, attempt=attempt, ledger=ledger)
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
        data = result.response.data
        if data is None or (isinstance(data, str) and not data.strip()):
            # success without data: no reading of the contract answers so; ask again.
            return QueryAnswer("retry", f"query answer without data: {what}")
        try:
            bills = query_results(result.response)
        except DataDecodeError as exc:
            return QueryAnswer("retry", f"unreadable query answer: {exc}")
        for bill in bills:
            if bill.billNo == bill_no:
                items = list(bill.invoiceList)
                ambiguous = not items and not tenant.declares(
                    "unknown_bill", *UNAMBIGUOUS_EMPTY_LIST
                )
                return QueryAnswer("present", what, items, ambiguous=ambiguous)
        return QueryAnswer("absent", f"query answer does not list {bill_no} (data: [])")
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
