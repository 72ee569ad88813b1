"""A call to the cloud with an access token, and the "retry once with a fresh token" rule.

| step | what                                                                            |
|------|---------------------------------------------------------------------------------|
| 1    | token from the cache (the process's copy, else Redis; single-flight refresh     |
|      | when missing or about to expire)                                                |
| 2    | the call                                                                        |
| 3    | ``auth_expired``? drop that token (only if still cached: the process's copy and |
|      | Redis's), get a fresh one (Redis's, or a refresh), call                         |
|      | once more; the result is marked ``auth_refreshed`` so the policy can tell a     |
|      | stale token from wrong configuration                                            |

Every service that talks to the cloud (push, query, withdraw) goes through
``call_with_token``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from schemas.cloud_contract import OutcomeClass
from worker.kingdee import CloudResult, CloudTransientError, KingdeeClient, fetch_access_token
from worker.runtime import Runtime
from worker.tokens import TokenUnavailable

__all__ = ["call_with_token"]

log = logging.getLogger(__name__)


def call_with_token(
    rt: Runtime, client: KingdeeClient, call: Callable[[str], CloudResult]
) -> CloudResult:
    """``call(access_token)`` with the one-refresh rule (module docstring).

    Raises ``CloudConfigError`` when no token can be had because the cloud refuses our
    credentials, ``CloudTransientError`` when it cannot be asked right now.
    """
    tenant = client.tenant.name

    def fetch() -> Any:
        return fetch_access_token(client)

    try:
        token = rt.tokens.get(tenant, fetch)
        result = call(token)
        if result.outcome is not OutcomeClass.AUTH_EXPIRED:
            return result
        rt.tokens.invalidate(tenant, token)
        log.info("access token refused, refreshing once", extra={"tenant": tenant})
        token = rt.tokens.get(tenant, fetch)
        return call(token).refreshed()
    except TokenUnavailable as exc:
        raise CloudTransientError(str(exc)) from exc
