"""Beat's redbeat scheduler that survives Redis loss, and beat's health probe.

**The scheduler** (``ResilientRedBeatScheduler``) is celery-redbeat's, made to survive what
the bridge promises to survive: losing Redis. Plain redbeat keeps its lock and schedule in
Redis and assumes both stay there: after a Redis restart without persistence or a FLUSHALL
the lock extension raises ``LockNotOwnedError`` and beat exits, and a surviving beat would
find no schedule to fire — so the sweeper, which re-finds the work a lost broker dropped,
would stop exactly when it is needed.

| on a tick                          | plain redbeat        | this scheduler                 |
|------------------------------------|----------------------|--------------------------------|
| the lock vanished (flush, restart) | beat exits           | takes it again if free, else   |
|                                    |                      | stands by (another beat has it)|
| another beat holds the lock        | (blocked at start)   | stands by, fires nothing       |
| Redis unreachable                  | beat exits           | logs, fires nothing, retries   |
|                                    |                      | next loop                      |
| the schedule vanished              | fires nothing, ever  | stores ``beat_schedule`` again |

Only the lock holder ever sends, so two beats still never fire one entry twice.

**The probe** (``python -m worker.beat``): is some beat of this deployment firing?

Beat runs celery-redbeat (``worker.app.beat_config``): every ``celery -A worker beat`` of a
deployment shares one schedule and one lock in Redis; the lock holder fires, the others
wait. redbeat records each entry's ``last_run_at`` in Redis, so one probe answers for the
whole group, standbys included:

| exit | when                                                                      |
|------|---------------------------------------------------------------------------|
| 0    | an entry of ``beat_schedule`` ran less than ``stale_after`` ago            |
| 1    | none did (no beat holds the lock, or it is stuck), or Redis cannot be read |

``stale_after`` = 2 × the lock timeout + 30 s: longer than a takeover (the lock expires,
the standby retries within one loop interval), far shorter than the slowest entry would
let a dead beat go unnoticed (``fapiao.poll_due`` fires every few seconds).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, get_redis
from redis.exceptions import LockError, RedisError

__all__ = ["ResilientRedBeatScheduler", "last_fired", "main", "stale_after"]

log = logging.getLogger(__name__)


class ResilientRedBeatScheduler(RedBeatScheduler):  # type: ignore[misc]
    """redbeat that keeps firing after Redis loses its lock or schedule (module docstring)."""

    lock: Any = None  # redbeat's redis-py Lock, set at beat_init (or here, on the first tick)

    def tick(self, min: Callable[..., float] = min, **kwargs: Any) -> float:
        try:
            if self.lock_key and not self._hold_lock():
                return float(self.max_interval)
            self._restore_schedule_if_lost()
            remaining: list[float] = []
            try:
                for entry in self.schedule.values():
                    due_in = self.maybe_due(entry, **self._maybe_due_kwargs)
                    if due_in:
                        remaining.append(due_in)
            except RuntimeError:
                log.debug("beat: RuntimeError", exc_info=True)
            return float(min([*remaining, self.max_interval]))
        except RedisError as exc:
            log.warning("beat: Redis unavailable (%s); trying again in %ss", exc, self.max_interval)
            return float(self.max_interval)

    def _hold_lock(self) -> bool:
        """Extend our lock, or take it again when Redis lost it; False while another beat has it."""
        if self.lock is None:
            self.lock = self._new_lock()
        try:
            self.lock.extend(int(self.lock_timeout))
            return True
        except LockError:
            pass
        if self.lock.acquire(blocking=False):
            log.warning("beat: the lock had vanished from Redis (restart or flush); took it again")
            return True
        log.info("beat: another beat holds the lock; standing by")
        return False

    def _new_lock(self) -> Any:
        client = get_redis(self.app)
        lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
        # As redbeat's own: extend TO the timeout, not by it.
        lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
        return lock

    def _restore_schedule_if_lost(self) -> None:
        conf = self.app.redbeat_conf
        if conf.schedule and not get_redis(self.app).exists(conf.schedule_key):
            log.warning("beat: the schedule had vanished from Redis; storing it again")
            self.update_from_dict(conf.schedule)


def stale_after(app: Any) -> timedelta:
    return timedelta(seconds=2 * float(app.conf.redbeat_lock_timeout) + 30)


def last_fired(app: Any) -> datetime | None:
    """The most recent ``last_run_at`` of the app's beat entries in Redis (UTC), if any."""
    from redbeat.schedulers import RedBeatSchedulerEntry, ensure_conf

    ensure_conf(app)
    times: list[datetime] = []
    for name in app.conf.beat_schedule:
        try:
            entry = RedBeatSchedulerEntry.from_key(
                RedBeatSchedulerEntry.generate_key(app, name), app=app
            )
        except KeyError:  # never stored: no beat has started with this schedule
            continue
        ran = entry.last_run_at
        if isinstance(ran, datetime):
            times.append(ran if ran.tzinfo is not None else ran.replace(tzinfo=UTC))
    return max(times, default=None)


def main() -> int:
    from worker import get_app

    app = get_app()
    try:
        ran = last_fired(app)
    except (RedisError, OSError) as exc:
        print(f"beat: cannot read the schedule in Redis: {exc}", file=sys.stderr)
        return 1
    if ran is None:
        print("beat: no entry has run yet", file=sys.stderr)
        return 1
    age = datetime.now(UTC) - ran
    if age > stale_after(app):
        print(f"beat: nothing fired for {age.total_seconds():.0f} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
