"""Three-way reconciliation for producers (``fapiao reconcile``, ``/v1/reconciliation``).

``run(components, ...)`` builds a worker ``Runtime`` for the call (the same per-tenant Kingdee
clients, Redis rate gate, token cache and call ledger the workers use, so the queries take
their share of each tenant's rate limit), runs ``worker.services.reconciliation`` and stores
the report. ``window_of`` and ``check_tenant`` turn user input into clear errors
(``ReconciliationInputError``: field, rule, EN + ZH).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from schemas.reconciliation import BAD_DATE_ZH, ErpBill, Window, parse_day

if TYPE_CHECKING:
    from producers.bootstrap import Components

__all__ = ["ReconciliationInputError", "check_tenant", "run", "window_of"]


class ReconciliationInputError(ValueError):
    def __init__(self, field: str, message: str, message_zh: str) -> None:
        super().__init__(message)
        self.field, self.message_zh = field, message_zh


def window_of(since: str | None, until: str | None) -> Window:
    """``since``/``until`` (YYYY-MM-DD, Asia/Shanghai); ``until`` defaults to ``since``."""
    if not since:
        raise ReconciliationInputError(
            "since", "since is required (YYYY-MM-DD)", "缺少开始日期 since（YYYY-MM-DD）"
        )
    try:
        first = parse_day(since, "since")
        last = parse_day(until, "until") if until else first
        return Window(first, last)
    except ValueError as exc:
        field = "until" if str(exc).startswith("until") else "since"
        if "before" in str(exc):
            field = "until"
        raise ReconciliationInputError(field, str(exc), BAD_DATE_ZH) from None


def check_tenant(components: Components, tenant: str | None) -> None:
    if tenant is not None and components.tenants.by_name(tenant) is None:
        known = ", ".join(components.tenants.names)
        raise ReconciliationInputError(
            "tenant", f"unknown tenant {tenant!r}; known: {known}", f"找不到租户 {tenant}"
        )


def run(
    components: Components,
    window: Window,
    *,
    trigger: Literal["cli", "api"],
    actor: str,
    tenant: str | None = None,
    erp: list[ErpBill] | None = None,
    grace: timedelta | None = None,
) -> dict[str, Any]:
    """Run, store and return the report (``worker.services.reconciliation.report_json``)."""
    from worker.runtime import build_runtime
    from worker.services.reconciliation import DEFAULT_GRACE, cloud_ask, run_and_store

    check_tenant(components, tenant)
    rt = build_runtime(
        components.settings,
        enqueuer=components.enqueuer,
        tenants=components.tenants,
        sessions=components.sessions,
        redis=components.redis,
        actor=actor,
    )
    try:
        return run_and_store(
            components.sessions,
            components.tenants,
            cloud_ask(rt),
            window,
            trigger=trigger,
            actor=actor,
            tenant=tenant,
            erp=erp,
            grace=DEFAULT_GRACE if grace is None else grace,
        )
    finally:
        rt.close()
