"""Coalesced messages: at most one ``fapiao.push`` per tenant, one ``fapiao.reconcile``, waiting.

A stream of one-item requests would send one message per item while the task they start
gathers every waiting item (``worker.services.push`` gathers a tenant's due drafts,
``worker.services.reconcile`` the stored callbacks); all but a few of those messages would
find their item claimed and be skipped, each still a task. Instead, one ``Coalescer`` (a Redis
key prefix) per kind of message:

| class                   | key                           | owed by (after the commit)         |
|-------------------------|-------------------------------|------------------------------------|
| ``PushCoalescer``       | ``fapiao:push-owed:<tenant>`` | the intake, for a lone document    |
| ``ReconcileCoalescer``  | ``fapiao:reconcile-owed:all`` | the callback receiver, a new row   |

| who                              | does                                                        |
|----------------------------------|-------------------------------------------------------------|
| the producer, after the commit   | ``owe(scope)``: ``SET <prefix><scope> NX PX``; set → send   |
|                                  | its message; already set → send nothing: a task of that     |
|                                  | scope is waiting and will gather this item                  |
| the task, before gathering       | ``release(scopes)``: ``DEL`` the keys, THEN read the items  |

Why nothing is left behind: an item whose ``owe`` found the key was committed before that
``SET``; the key was set by a message that had not yet run its ``release`` (any ``release``
ends the key, a new key comes with a new message). That message's ``release`` therefore
comes later, and its gathering read after it sees the item (unless another task's live claim
holds it: that task does it). A gathering that fills its batch sends a message for the next
waiting item, so a chain of full batches ends only with a gathering that took everything
waiting. What breaks the chain — the key-holding message lost (broker flushed, never sent) —
lasts until the key expires (``TTL``); items that came meanwhile are found by the sweeper
(``due_drafts``, ``stale_inbox``), as any lost message is. Redis failing: ``owe`` sends (fail
open), ``release`` does nothing (the key expires).

Scopes: a push task gathers its own tenants' drafts only, so its key is per tenant. A
reconcile task gathers every waiting callback whatever its tenant (oldest first), so any
reconcile message covers any callback: one shared key (scope ``all``) is enough, and a key
per tenant would only let more messages wait, each gathering what the first one took.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from redis.exceptions import RedisError

__all__ = [
    "KEY_PREFIX",
    "RECONCILE_KEY_PREFIX",
    "RECONCILE_SCOPE",
    "TTL_MS",
    "Coalescer",
    "PushCoalescer",
    "ReconcileCoalescer",
]

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "fapiao:push-owed:"
RECONCILE_KEY_PREFIX: Final = "fapiao:reconcile-owed:"
RECONCILE_SCOPE: Final = "all"
# Bounds how long a lost key-holding message holds back the next one's send.
TTL_MS: Final = 2000


class Coalescer:
    """The ``<prefix><scope>`` keys (module docstring) on one Redis client."""

    def __init__(self, redis: Any, prefix: str, what: str, ttl_ms: int = TTL_MS) -> None:
        self._redis = redis
        self._prefix = prefix
        self._what = what  # for the logs
        self._ttl_ms = ttl_ms

    def owe(self, scope: str) -> bool:
        """True: send this item's message; False: one of ``scope`` is waiting and gathers it."""
        try:
            return bool(self._redis.set(self._prefix + scope, b"1", nx=True, px=self._ttl_ms))
        except (RedisError, OSError) as exc:
            log.info("%s coalescing unavailable (%s); sending", self._what, type(exc).__name__)
            return True

    def release(self, scopes: Iterable[str]) -> None:
        """Before a task reads its scopes' waiting items: new ones send again."""
        keys = [self._prefix + scope for scope in scopes]
        if not keys:
            return
        try:
            self._redis.delete(*keys)
        except (RedisError, OSError) as exc:
            log.info(
                "%s coalescing key not released (%s); it expires", self._what, type(exc).__name__
            )


class PushCoalescer(Coalescer):
    """One-document pushes, a key per tenant."""

    def __init__(self, redis: Any, ttl_ms: int = TTL_MS) -> None:
        super().__init__(redis, KEY_PREFIX, "push", ttl_ms)


class ReconcileCoalescer(Coalescer):
    """Stored callbacks' reconciles, one shared key (module docstring: scopes)."""

    def __init__(self, redis: Any, ttl_ms: int = TTL_MS) -> None:
        super().__init__(redis, RECONCILE_KEY_PREFIX, "reconcile", ttl_ms)

    def owe_reconcile(self) -> bool:
        return self.owe(RECONCILE_SCOPE)

    def release_reconcile(self) -> None:
        self.release([RECONCILE_SCOPE])
