"""Coalesced one-document pushes: at most one ``fapiao.push`` per tenant waiting to run.

A stream of one-document requests would send one ``fapiao.push`` per document; the push task
gathers every due draft of its tenant (``worker.services.push``), so all but a few of those
messages would find their document claimed and be skipped, each still a task. Instead:

| who                           | does                                                        |
|-------------------------------|-------------------------------------------------------------|
| the intake, after the commit  | ``owe(tenant)``: ``SET fapiao:push-owed:<tenant> NX PX``;    |
| (a lone document only)        | set → send its ``fapiao.push``; already set → send nothing: |
|                               | a push of that tenant is waiting and will gather this draft |
| a push task, before gathering | ``release(tenants)``: ``DEL`` the keys, THEN read the drafts |

Why nothing is left behind: a document whose ``owe`` found the key was committed before that
``SET``; the key was set by a message that had not yet run its ``release`` (any ``release``
ends the key, a new key comes with a new message). That message's ``release`` therefore
comes later, and its gathering read after it sees the document. A gathering that fills the
batch sends a ``fapiao.push`` for the next waiting draft (``worker.services.push``). What
breaks the chain — the key-holding message lost (broker flushed, never sent) — lasts until
the key expires (``TTL``); drafts that came meanwhile are found by the sweeper
(``due_drafts``), as any lost message is. Redis failing: ``owe`` sends (fail open),
``release`` does nothing (the key expires).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from redis.exceptions import RedisError

__all__ = ["KEY_PREFIX", "TTL_MS", "PushCoalescer"]

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "fapiao:push-owed:"
# Bounds how long a lost key-holding message holds back the next one's send.
TTL_MS: Final = 2000


class PushCoalescer:
    """The ``fapiao:push-owed:<tenant>`` keys (module docstring) on one Redis client."""

    def __init__(self, redis: Any, ttl_ms: int = TTL_MS) -> None:
        self._redis = redis
        self._ttl_ms = ttl_ms

    def owe(self, tenant: str) -> bool:
        """True: send this document's ``fapiao.push``; False: one of the tenant's is waiting."""
        try:
            return bool(self._redis.set(KEY_PREFIX + tenant, b"1", nx=True, px=self._ttl_ms))
        except (RedisError, OSError) as exc:
            log.info("push coalescing unavailable (%s); sending", type(exc).__name__)
            return True

    def release(self, tenants: Iterable[str]) -> None:
        """Before a push task reads its tenants' waiting drafts: new ones send again."""
        keys = [KEY_PREFIX + tenant for tenant in tenants]
        if not keys:
            return
        try:
            self._redis.delete(*keys)
        except (RedisError, OSError) as exc:
            log.info("push coalescing key not released (%s); it expires", type(exc).__name__)
