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
``call_with_token``. A batch's calls (a push batch's BILL.PUSH, a reconcile batch's confirming
queries) run through ``call_each``: at most ``push.batch_concurrency`` at a time, on threads
kept by the process, not started again for every batch.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from schemas.cloud_contract import OutcomeClass
from worker.kingdee import CloudResult, CloudTransientError, KingdeeClient, fetch_access_token
from worker.runtime import Runtime
from worker.tokens import TokenUnavailable

__all__ = ["call_each", "call_with_token"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")
# (pid, size) -> pool: a pool inherited through fork has no threads, so each process builds its own.
_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def call_each(rt: Runtime, call: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``call`` on every item, at most ``push.batch_concurrency`` at a time; results in order.
    ``call`` must not raise (each caller turns its failures into an answer)."""
    workers = min(len(items), rt.settings.push.batch_concurrency)
    if workers <= 1:
        return [call(item) for item in items]
    size = rt.settings.push.batch_concurrency
    key = (os.getpid(), size)
    pool = _pools.get(key)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(key)
            if pool is None:
                pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="fapiao-call")
                _pools[key] = pool
    return list(pool.map(call, items))


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
