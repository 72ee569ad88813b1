"""The credit quota (授信额度) as the worker meets it: ``bizControl`` and 授信额度不足.

| function                | called from                     | does                        |
|-------------------------|---------------------------------|-----------------------------|
| ``observe_biz_control`` | ``reconcile`` (callback applied)| ``store.quota.observe``     |
|                         |                                 | (lower only) + the gauge    |
| ``quota_failure``       | ``invoices.apply_invoices``     | an issuance refused for     |
|                         |                                 | quota: the document's       |
|                         |                                 | reason; tenant/seller held  |
|                         |                                 | until the day turns         |

The hold itself is checked where drafts are claimed (``worker.services.push``). What is
believed, and why a forged callback cannot release a hold: ``store.quota``.
"""

from __future__ import annotations

import logging
from typing import Final

from sqlalchemy.orm import Session

from schemas.cloud_contract import QUOTA_ISSUE_ERROR_MESSAGE
from schemas.kingdee import BizControl
from store import quota
from store.models import Document
from worker import metrics
from worker.runtime import Runtime

__all__ = ["is_quota_failure", "observe_biz_control", "quota_failure"]

log = logging.getLogger(__name__)

QUOTA_SOURCE_CALLBACK: Final = "callback"


def is_quota_failure(message: str | None) -> bool:
    """An ``issueErrorMessage`` that says the credit quota refused the issuance."""
    return bool(message) and QUOTA_ISSUE_ERROR_MESSAGE in str(message)


def observe_biz_control(
    rt: Runtime, session: Session, tenant: str, seller: str, biz: BizControl
) -> None:
    """Record a callback's ``bizControl`` for (tenant, seller) in the caller's transaction."""
    released = quota.observe(
        session,
        tenant,
        seller,
        day=biz.daySurplusLimit,
        month=biz.monthSurplusLimit,
        is_warning=biz.isWarning,
        issue_biz_type=biz.issueBizType,
        biz_type=biz.bizType,
        source=QUOTA_SOURCE_CALLBACK,
        now=rt.clock(),
    )
    if biz.isWarning is not None:
        metrics.quota_warning().labels(tenant=tenant).set(1 if biz.isWarning else 0)
    if biz.isWarning:
        log.warning(
            "credit quota running low (bizControl.isWarning)",
            extra={
                "tenant": tenant,
                "seller": seller,
                "day_surplus": str(biz.daySurplusLimit),
                "month_surplus": str(biz.monthSurplusLimit),
            },
        )
    if released:
        log.info("quota hold released by a new answer", extra={"tenant": tenant, "seller": seller})


def quota_failure(rt: Runtime, session: Session, document: Document, failure: str) -> str:
    """The document's reason for an issuance refused with 授信额度不足; holds its tenant/seller
    until the next Asia/Shanghai day (in the caller's transaction)."""
    now = rt.clock()
    until = quota.next_boundary(now)
    local = until.astimezone(quota.SHANGHAI)
    reason = (
        f"the cloud refused to issue: the credit quota (授信额度) of seller"
        f" {document.seller_tax_id} is used up ({failure}). Pushes of tenant {document.tenant}"
        f" for this seller are held until {local:%Y-%m-%d %H:%M} Asia/Shanghai (the day's"
        " quota resets). The bill is still in the cloud: issue it again there once there is"
        " quota (the bridge follows its invoices), or withdraw it (`fapiao withdraw`); if"
        " Kingdee raised the quota, run `fapiao tenants resume`."
        " / 开票失败：授信额度已用完；该销方的推送已暂停至额度重置。"
        "单据仍在发票云：有额度后在云端重新开票，或撤回本单；"
        "若额度已提升，请恢复租户（fapiao tenants resume）"
    )
    quota.record_exhausted(session, document.tenant, document.seller_tax_id, reason=reason, now=now)
    log.warning(
        "issuance refused for quota; tenant/seller held",
        extra={"document_id": document.id, "tenant": document.tenant, "until": until.isoformat()},
    )
    return reason
