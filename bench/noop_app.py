"""The raw-Celery baseline: the bridge's own Celery configuration with one no-op task.

``celery -A bench.noop_app worker -Q bench_noop`` runs it (``bench.throughput`` starts it on
the same Redis, with the same concurrency as the bridge's worker). The task ``bench.noop``
does nothing but ``INCR`` a Redis counter, so the sender can tell when all N have run; the
configuration is ``worker.app.celery_config`` (acks late, prefetch 1, events on, JSON), so
the difference from the bridge is the work per task, not Celery's settings.
"""

from __future__ import annotations

from typing import Any, Final

from celery import Celery
from kombu.entity import Queue

from schemas.settings import Settings
from worker.app import celery_config

__all__ = ["COUNTER_KEY", "NOOP_QUEUE", "NOOP_TASK", "create_noop_app"]

NOOP_TASK: Final = "bench.noop"
NOOP_QUEUE: Final = "bench_noop"
COUNTER_KEY: Final = "bench:noop:done"


def create_noop_app(settings: Settings | None = None) -> Celery:
    settings = settings if settings is not None else Settings.load()
    app = Celery("bench-noop", set_as_current=False)
    config = celery_config(settings)
    config.update(
        task_queues=[Queue(NOOP_QUEUE)],  # type: ignore[no-untyped-call]
        task_default_queue=NOOP_QUEUE,
        task_routes={NOOP_TASK: {"queue": NOOP_QUEUE}},
        beat_schedule={},
    )
    app.conf.update(config)
    redis_url = settings.redis_url
    state: dict[str, Any] = {}

    @app.task(name=NOOP_TASK, shared=False)  # type: ignore[untyped-decorator]
    def noop(n: int) -> None:
        client = state.get("redis")
        if client is None:
            import redis

            client = state["redis"] = redis.Redis.from_url(redis_url)
        client.incr(COUNTER_KEY)

    return app


def __getattr__(name: str) -> Any:
    # ``celery -A bench.noop_app`` looks up ``app``; build it only then (never at import).
    if name in ("app", "celery"):
        return create_noop_app()
    raise AttributeError(name)
