"""Is some beat of this deployment firing? ``python -m worker.beat`` (the compose health probe).

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

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.exceptions import RedisError

__all__ = ["last_fired", "main", "stale_after"]


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
