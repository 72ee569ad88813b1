"""The Celery application factory: ``create_app(settings)``; ``celery -A worker …`` uses it.

Configuration (why each knob is set; docs/STACK.md has the measurements)

| setting                         | value                       | why                          |
|---------------------------------|-----------------------------|------------------------------|
| serializer, accept_content      | json only                   | messages are ids; no pickle  |
| ``task_ignore_result``          | true, no result backend     | state lives in the database  |
| ``task_acks_late``              | true                        | ack after the work is done   |
| ``task_reject_on_worker_lost``  | true                        | a killed child's task is     |
|                                 |                             | re-queued                    |
| ``worker_prefetch_multiplier``  | 1                           | no hoarding by a busy worker |
| ``worker_disable_rate_limits``  | true                        | per-tenant limits live in    |
|                                 |                             | Redis (``worker.ratelimit``);|
|                                 |                             | saves Celery's per-task check|
| ``broker_transport``            | ``worker.broker`` for       | kombu's Redis transport      |
|                                 | ``redis(s)://``             | without a client per publish |
| ``broker_transport_options``    | explicit visibility timeout;| a dead worker's unacked      |
|                                 | restore interval 2 s,       | messages come back within    |
|                                 | throttle 1 (settings)       | seconds, not ~100 s          |
| ``task_queues``/``task_routes`` | ``worker.queues``           | a flood of one kind cannot   |
|                                 |                             | starve another               |
| ``worker_send_task_events``,    | true                        | Flower sees every task,      |
| ``task_send_sent_event``        |                             | including "sent"             |
| ``task_soft_time_limit`` /      | max(lease, 60 s) / + 15 s,  | a hung task ends before it   |
| ``task_time_limit``             | half the visibility timeout | is redelivered elsewhere     |
| ``beat_schedule``               | ``beat_schedule(settings)`` | sweeps, due polls (with      |
|                                 |                             | in-doubt), token refresh     |
| ``beat_scheduler``              | ``worker.beat``'s redbeat   | several beats never fire     |
|                                 | (``beat_config``)           | twice: one holds the lock    |
| log format                      | ``worker.logs``             | extras kept, secrets masked  |
| metrics exporter                | ``FAPIAO_METRICS__WORKER_`` | ``celery worker`` serves the |
|                                 | ``PORT`` (0: off)           | sum of its pool processes    |
|                                 |                             | (``worker.metrics``)         |

Beat intervals: ``fapiao.poll_due`` every min(5 s, first poll delay), ``fapiao.sweep`` every
min(10 s, push lease / 2), ``fapiao.refresh_tokens`` every max(30 s, refresh margin / 2);
``fapiao.reconcile_daily`` once a day at 02:30 Asia/Shanghai (18:30 UTC), for the day before.
Each beat message expires after one interval, so a stopped worker does not come back to a
pile of them.

Beat runs the celery-redbeat scheduler (``beat_config``): the schedule and a lock live in
Redis (``FAPIAO_REDIS_URL``), so any number of ``celery -A worker beat`` processes may run;
the one holding the lock fires, the others wait and take over within the lock timeout
(5 × the shortest interval, at least 10 s) plus one loop interval (the shortest interval).
Keys are prefixed ``fapiao:beat:<digest of the broker URL, password masked>:``: beats of one
deployment (one broker) share a lock, deployments sharing a Redis never block each other.
Beat's own messages (the maintenance tasks) are sent without a ``task-sent`` event
(``_quiet_beat``): with ``worker.tasks``' quiet maintenance tasks they stay out of Flower.

Broker countdowns are capped far below the visibility timeout (``Runtime.dispatch``); every
long wait is a due time in the database.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.schedules import crontab
from kombu.entity import Exchange, Queue
from kombu.utils.url import maybe_sanitize_url

from schemas.settings import Settings
from worker import broker, queues
from worker.runtime import policy_from_settings

if TYPE_CHECKING:
    from worker.runtime import Runtime

__all__ = [
    "BeatIntervals",
    "FapiaoCelery",
    "beat_config",
    "beat_intervals",
    "beat_key_prefix",
    "celery_config",
    "create_app",
]


class FapiaoCelery(Celery):  # type: ignore[misc]
    """A Celery app that knows its ``Settings`` and builds one ``Runtime`` per process."""

    settings: Settings

    def runtime(self) -> Runtime:
        from worker.tasks import runtime_for

        return runtime_for(self)


@dataclass(frozen=True, slots=True)
class BeatIntervals:
    poll_due: float
    sweep: float
    refresh_tokens: float


def beat_intervals(settings: Settings) -> BeatIntervals:
    lease = policy_from_settings(settings).push_lease.total_seconds()
    return BeatIntervals(
        poll_due=float(max(1, min(5, settings.poll.schedule_seconds[0]))),
        sweep=max(1.0, min(10.0, lease / 2)),
        refresh_tokens=float(max(30, settings.tokens.refresh_margin_seconds // 2)),
    )


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    every = beat_intervals(settings)

    def entry(task: str, seconds: float) -> dict[str, Any]:
        return {"task": task, "schedule": seconds, "options": {"expires": seconds}}

    return {
        "poll-due": entry(queues.POLL_DUE, every.poll_due),
        "sweep": entry(queues.SWEEP, every.sweep),
        "refresh-tokens": entry(queues.REFRESH_TOKENS, every.refresh_tokens),
        # 02:30 Asia/Shanghai (no DST): late callbacks of the day before have arrived.
        "reconcile-daily": {
            "task": queues.RECONCILE_DAILY,
            "schedule": crontab(minute=30, hour=18),
            "options": {"expires": 6 * 3600},
        },
    }


def beat_key_prefix(settings: Settings) -> str:
    """``fapiao:beat:<digest>:`` — one schedule and lock per broker (module docstring)."""
    broker = maybe_sanitize_url(settings.broker_url)
    return f"fapiao:beat:{hashlib.sha256(broker.encode()).hexdigest()[:12]}:"


def beat_config(settings: Settings) -> dict[str, Any]:
    """The scheduler settings of ``celery -A worker beat`` (celery-redbeat, module docstring)."""
    every = beat_intervals(settings)
    loop = min(every.poll_due, every.sweep, every.refresh_tokens)
    return {
        "beat_schedule": beat_schedule(settings),
        "beat_scheduler": "worker.beat:ResilientRedBeatScheduler",
        # The standby retries the lock every loop interval: keep it short.
        "beat_max_loop_interval": loop,
        "redbeat_redis_url": settings.redis_url,
        # Explicit, so redbeat does not borrow the broker's transport options.
        "redbeat_redis_options": {"socket_timeout": 10, "socket_connect_timeout": 5},
        "redbeat_key_prefix": beat_key_prefix(settings),
        "redbeat_lock_timeout": int(max(10, math.ceil(5 * loop))),
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting the module docstring lists, from ``settings``."""
    policy = policy_from_settings(settings)
    visibility = settings.broker.visibility_timeout_seconds
    soft_limit = min(max(policy.push_lease.total_seconds(), 60.0), visibility / 2 - 15)
    scheme = settings.broker_url.partition("://")[0].lower()
    return {
        "broker_url": settings.broker_url,
        # kombu's Redis transport, one client per channel (worker.broker); None: kombu's.
        "broker_transport": broker.TRANSPORT if scheme in ("redis", "rediss") else None,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            "unacked_restore_interval": settings.broker.unacked_restore_interval_seconds,
            "unacked_restore_throttle": max(
                1, int(settings.broker.unacked_restore_throttle_seconds)
            ),
            # Publishing must not hang a request when Redis is away: fail fast, the
            # sweeper re-enqueues from the database.
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
        },
        "result_backend": None,
        # No results to expire: keeps celery.backend_cleanup out of beat's schedule.
        "result_expires": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_disable_rate_limits": True,
        # One direct exchange per queue, routing key = name, so the banner and Flower show
        # the real binding of each queue.
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]
            for name in queues.QUEUES
        ],
        "task_default_queue": "maintenance",
        "task_routes": {task: {"queue": queue} for task, queue in queues.ROUTES.items()},
        "task_create_missing_queues": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_soft_time_limit": soft_limit,
        "task_time_limit": soft_limit + 15,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "timezone": "UTC",
        "enable_utc": True,
        **beat_config(settings),
    }


def create_app(settings: Settings | None = None, *, main: str = "fapiao") -> FapiaoCelery:
    """A configured app with every ``fapiao.*`` task registered; connects to nothing yet."""
    from worker.tasks import register_tasks

    settings = settings if settings is not None else Settings.load()
    app = FapiaoCelery(main, set_as_current=False)
    app.settings = settings
    app.conf.update(celery_config(settings))
    register_tasks(app)
    _structured_logs(settings)
    _metrics_exporter()
    _quiet_beat()
    return app


def _quiet_beat() -> None:
    """In a beat process, send without ``task-sent`` events (module docstring).

    Beat sends only the maintenance tasks; a worker (another process, or the forked child
    of ``worker -B``) keeps announcing every message it sends.
    """
    from celery.signals import beat_init

    def quiet(sender: Any = None, **_: Any) -> None:
        app = getattr(sender, "app", None)
        if app is not None:
            app.conf.task_send_sent_event = False

    beat_init.disconnect(dispatch_uid="fapiao-quiet-beat")
    beat_init.connect(quiet, weak=False, dispatch_uid="fapiao-quiet-beat")


def _structured_logs(settings: Settings) -> None:
    """Celery's worker/beat loggers get ``worker.logs`` formatters (last app built wins)."""
    from celery.signals import after_setup_logger, after_setup_task_logger

    from worker.logs import install_formatter

    def install(logger: Any = None, **_: Any) -> None:
        if logger is not None:
            install_formatter(logger, settings.log_format)

    for signal in (after_setup_logger, after_setup_task_logger):
        uid = f"fapiao-logs-{signal.name}"
        signal.disconnect(dispatch_uid=uid)
        signal.connect(install, weak=False, dispatch_uid=uid)


def _metrics_exporter() -> None:
    """``celery worker`` (its parent process) serves ``worker.metrics`` when a port is set."""
    from celery.signals import celeryd_init, worker_process_shutdown, worker_shutdown

    from worker import metrics

    running: list[metrics.Exporter] = []

    def start(instance: Any = None, **_: Any) -> None:
        # celeryd_init: the CLI worker only, before the pool forks (children inherit the mode).
        settings: Settings = instance.app.settings
        if not settings.metrics.worker_port or running:
            return
        prepared = metrics.prepare_multiprocess(settings.metrics.multiproc_dir)
        if prepared.reexec_needed:
            # Nothing is connected or forked yet; the new image finds the variable set.
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
        running.append(
            metrics.start_exporter(
                settings.metrics.worker_port, settings.metrics.host, prepared.path
            )
        )

    def child_exited(pid: int | None = None, **_: Any) -> None:
        if running and pid is not None:
            metrics.process_dead(pid)

    def stop(**_: Any) -> None:
        while running:
            running.pop().stop()

    for signal, receiver in (
        (celeryd_init, start),
        (worker_process_shutdown, child_exited),
        (worker_shutdown, stop),
    ):
        uid = f"fapiao-metrics-{signal.name}"
        signal.disconnect(dispatch_uid=uid)
        signal.connect(receiver, weak=False, dispatch_uid=uid)
