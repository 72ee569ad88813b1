"""Access tokens per tenant, cached in Redis and refreshed single-flight across all processes.

Flow of ``TokenCache.get(tenant, fetch)``

| step | what                                                  | why                            |
|------|-------------------------------------------------------|--------------------------------|
| 0    | this process's copy of the tenant's token, if fresh   | the common case: no Redis call |
| 1    | read ``fapiao:token:<tenant>`` (hash: token, expiry)  | one HGETALL; a fresh token     |
|      |                                                       | read there becomes the copy    |
| 2    | fresh ⇔ now < expires − min(margin, lifetime / 2)     | refresh *before* expire_time   |
| 3    | else take the lock ``fapiao:token-lock:<tenant>``     | one refresh per tenant across  |
|      | (timeout + blocking_timeout); while ``fetch`` runs a  | every worker process, however  |
|      | keeper thread extends it every timeout / 3            | slow the cloud answers         |
| 4    | re-read the cache under the lock                      | a waiter finds the new token   |
| 5    | ``fetch()`` (getAppToken + login), store with a TTL   | the key dies with the token    |
|      | ending at ``expire_time``                             |                                |

``invalidate(tenant, failed_token)`` deletes the cached token only if it is the one that
failed (a Lua compare-and-delete): when twenty pushes fail with the same expired token, the
first deletes it and refreshes, the other nineteen find the fresh one — one refresh, not
twenty. Tenants never share a key or a lock, so one tenant's auth trouble never slows another.

The per-process copy (step 0) is judged by the same expiry and margin as the Redis copy, so
every process goes back to Redis at the moment a refresh is due. A token the cloud stopped
accepting earlier (revoked, expired by an operator) is learnt from the expired-token answer:
``invalidate`` drops the process's copy too when it is the failed token, and the retry reads
Redis (another process's fresh token, or a refresh). A process may thus send one call with a
token another process already replaced; that call is refused before anything is done and
retried, as before. A flushed Redis leaves the copy in use until it is due or refused.
Thread-safe: the copies live in a dict changed under a lock (a push batch calls from threads).

Errors: ``TokenUnavailable`` (the lock could not be had within ``blocking_timeout``; the
caller treats it as transient). Whatever ``fetch`` raises propagates unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from redis import Redis
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from worker import metrics

__all__ = ["AccessToken", "TokenCache", "TokenUnavailable"]

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "fapiao:token:"
LOCK_PREFIX: Final = "fapiao:token-lock:"

# Compare-and-delete: only drop the token that actually failed.
_INVALIDATE_LUA: Final = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class TokenUnavailable(RuntimeError):
    """No token could be had in time (another process holds the refresh lock too long)."""


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An access_token and its absolute expiry (epoch ms, as the cloud sends ``expire_time``)."""

    value: str
    expires_ms: int
    issued_ms: int

    def __repr__(self) -> str:  # never print the token itself
        return f"AccessToken(expires_ms={self.expires_ms}, issued_ms={self.issued_ms})"


class TokenCache:
    """Redis-backed, single-flight access-token cache (module docstring)."""

    def __init__(
        self,
        redis: Redis,
        *,
        refresh_margin: timedelta,
        lock_timeout: float = 10.0,
        blocking_timeout: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._margin_ms = int(refresh_margin.total_seconds() * 1000)
        self._lock_timeout = lock_timeout
        self._blocking_timeout = blocking_timeout
        self._clock = clock
        self._invalidate = redis.register_script(_INVALIDATE_LUA)
        self._local: dict[str, AccessToken] = {}
        self._local_lock = threading.Lock()
        self.refreshes = 0  # this process only; the Prometheus counter is the fleet view

    def get(self, tenant: str, fetch: Callable[[], AccessToken]) -> str:
        """A fresh access_token for ``tenant``; calls ``fetch`` at most once across processes."""
        local = self._local.get(tenant)
        if local is not None and self._fresh(local):
            return local.value
        cached = self._read(tenant)
        if cached is not None and self._fresh(cached):
            self._keep(tenant, cached)
            return cached.value
        lock = self._redis.lock(
            LOCK_PREFIX + tenant,
            timeout=self._lock_timeout,
            blocking_timeout=self._blocking_timeout,
            sleep=0.05,
            thread_local=False,  # the keeper thread extends it
        )
        if not lock.acquire():
            raise TokenUnavailable(
                f"token refresh for tenant {tenant!r} is held by another process for more"
                f" than {self._blocking_timeout:g}s / 令牌刷新超时"
            )
        keeper = _LockKeeper(lock, self._lock_timeout, tenant)
        try:
            cached = self._read(tenant)
            if cached is not None and self._fresh(cached):
                self._keep(tenant, cached)
                return cached.value
            keeper.start()
            token = fetch()
            self._store(tenant, token)
            self._keep(tenant, token)
            self.refreshes += 1
            metrics.token_refreshes().labels(tenant=tenant).inc()
            log.info("token refreshed", extra={"tenant": tenant, "expires_ms": token.expires_ms})
            return token.value
        finally:
            keeper.stop()
            try:
                lock.release()
            except (LockNotOwnedError, LockError):
                # The lock timed out while fetching (a slow cloud); the token is stored anyway.
                log.warning("token lock expired during refresh", extra={"tenant": tenant})

    def peek(self, tenant: str) -> AccessToken | None:
        """The cached token, fresh or not (None when absent). For tests and ``doctor``."""
        return self._read(tenant)

    def invalidate(self, tenant: str, failed_token: str) -> bool:
        """Drop the cached token if it is ``failed_token`` (this process's copy and Redis's);
        True when Redis's was dropped."""
        with self._local_lock:
            local = self._local.get(tenant)
            if local is not None and local.value == failed_token:
                del self._local[tenant]
        return bool(self._invalidate(keys=[KEY_PREFIX + tenant], args=[failed_token]))

    def _keep(self, tenant: str, token: AccessToken) -> None:
        with self._local_lock:
            held = self._local.get(tenant)
            # A thread that read Redis before another thread's refresh must not put the
            # older token back over the newer one.
            if held is None or held.issued_ms <= token.issued_ms:
                self._local[tenant] = token

    def _fresh(self, token: AccessToken) -> bool:
        now_ms = int(self._clock() * 1000)
        lifetime = max(0, token.expires_ms - token.issued_ms)
        margin = min(self._margin_ms, lifetime // 2)
        return now_ms < token.expires_ms - margin

    def _read(self, tenant: str) -> AccessToken | None:
        raw: dict[Any, Any] = self._redis.hgetall(KEY_PREFIX + tenant)
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        try:
            return AccessToken(
                value=fields["token"],
                expires_ms=int(fields["expires_ms"]),
                issued_ms=int(fields.get("issued_ms", "0")),
            )
        except (KeyError, ValueError):
            return None

    def _store(self, tenant: str, token: AccessToken) -> None:
        key = KEY_PREFIX + tenant
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(
            key,
            mapping={
                "token": token.value,
                "expires_ms": str(token.expires_ms),
                "issued_ms": str(token.issued_ms),
            },
        )
        # Relative TTL from our clock: the key dies with the token whatever Redis's clock says.
        pipe.pexpire(key, max(1000, token.expires_ms - int(self._clock() * 1000)))
        pipe.execute()


class _LockKeeper:
    """Extends the refresh lock while ``fetch`` runs, so it never expires mid-refresh.

    One refresh is getAppToken + login, each allowed connect + read timeout: with a slow
    cloud that outlasts any fixed lock timeout, and an expired lock lets a second process
    refresh too (and invalidate the first one's token). The keeper renews the lock every
    third of its timeout; if this process dies, the lock still expires after ``timeout``.
    """

    def __init__(self, lock: Any, timeout: float, tenant: str) -> None:
        self._lock = lock
        self._timeout = timeout
        self._tenant = tenant
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"token-lock-keeper-{tenant}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(1.0, self._timeout))

    def _run(self) -> None:
        while not self._done.wait(self._timeout / 3):
            try:
                self._lock.extend(self._timeout, replace_ttl=True)
            except (LockError, LockNotOwnedError, RedisError):
                log.warning("token lock could not be extended", extra={"tenant": self._tenant})
                return


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
