"""Per-tenant rate limit toward the cloud, shared by every worker process (Redis fixed window).

| piece      | value                                                                  |
|------------|------------------------------------------------------------------------|
| key        | ``fapiao:rate:<tenant>:<window number>``                               |
| window     | 1 s when the rate is ≥ 1/s, else 1/rate seconds (0.2/s → 5 s windows)  |
| allowance  | ⌊rate × window⌋ calls per window, at least 1                            |
| atomicity  | one Lua script: INCR, and PEXPIRE on the first call of the window       |
| when full  | sleep until the next window and try again, up to ``max_wait``; then     |
|            | ``CloudTransientError`` (nothing was sent, the caller retries later)    |

A fixed window may let through up to twice the allowance across a window boundary; that is
accepted (the cloud's own limits are unknown, §13) in exchange for one round trip per call.
Each tenant has its own keys, so a tenant that is throttled never slows another.
Thread-safe: no state but the Redis client (itself thread-safe); the count is kept in Redis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from redis import Redis

from worker import metrics
from worker.kingdee import CloudTransientError

__all__ = ["RedisRateGate"]

KEY_PREFIX: Final = "fapiao:rate:"

_TAKE_LUA: Final = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
"""


class RedisRateGate:
    """``RateGate`` over Redis (module docstring)."""

    def __init__(
        self,
        redis: Redis,
        *,
        max_wait_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._redis = redis
        self._take = redis.register_script(_TAKE_LUA)
        self._max_wait = max_wait_seconds
        self._clock = clock
        self._sleep = sleep

    def wait(self, tenant: str, per_second: float) -> None:
        """Block until ``tenant`` may make one more call; ``CloudTransientError`` after max_wait."""
        window = 1.0 if per_second >= 1 else 1.0 / per_second
        allowance = max(1, math.floor(per_second * window))
        window_ms = int(window * 1000)
        deadline = self._clock() + self._max_wait
        delayed = False
        while True:
            now = self._clock()
            number = int(now * 1000) // window_ms
            key = f"{KEY_PREFIX}{tenant}:{number}"
            taken = int(self._take(keys=[key], args=[window_ms * 2]))
            if taken <= allowance:
                return
            if not delayed:
                delayed = True
                metrics.rate_limited().labels(tenant=tenant).inc()
            next_window = (number + 1) * window_ms / 1000
            if next_window > deadline:
                raise CloudTransientError(
                    f"rate limit of tenant {tenant!r} ({per_second:g}/s) still full after"
                    f" {self._max_wait:g}s / 超过租户调用频率限制"
                )
            self._sleep(max(0.0, next_window - now))
