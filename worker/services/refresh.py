"""Proactive token refresh (beat, ``fapiao.refresh_tokens``): no push waits for a login.

For every configured, unpaused tenant, ``TokenCache.get`` is asked for a token: it returns
the cached one while it is fresh and refreshes it (single-flight) once it is within the
refresh margin of ``expire_time``. A tenant whose credentials are refused is paused with a
reason naming the setting; a tenant the cloud cannot be reached for is left alone (the next
run tries again). One tenant's failure never stops the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

from store.db import unit_of_work
from worker.kingdee import CloudConfigError, CloudTransientError, fetch_access_token
from worker.runtime import Runtime
from worker.services.tenancy import is_tenant_paused, pause_tenant
from worker.tokens import TokenUnavailable

__all__ = ["RefreshReport", "refresh_tokens"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RefreshReport:
    fresh: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)


def refresh_tokens(rt: Runtime) -> RefreshReport:
    report = RefreshReport()
    for tenant in rt.tenants.tenants:
        with unit_of_work(rt.sessions) as session:
            if is_tenant_paused(rt, session, tenant):
                continue
        client = rt.client(tenant)
        try:
            rt.tokens.get(tenant.name, partial(fetch_access_token, client))
        except CloudConfigError as exc:
            with unit_of_work(rt.sessions) as session:
                pause_tenant(rt, session, tenant.name, exc.reason)
            report.paused.append(tenant.name)
        except (CloudTransientError, TokenUnavailable) as exc:
            log.warning("token refresh failed", extra={"tenant": tenant.name, "error": str(exc)})
            report.unreachable.append(tenant.name)
        else:
            report.fresh.append(tenant.name)
    return report
