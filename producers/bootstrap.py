"""The composition root of a producer process (HTTP app or CLI command).

``Components.build(settings, ...)`` makes everything a producer uses from ``Settings``: the
tenants file, one engine and session factory, the enqueuer (``worker.enqueue``, over the
worker's Celery app), a Redis client for health checks and one on the broker for queue depths.
Tests pass their own pieces (any argument) — a fixture's session factory, a
``RecordingEnqueuer``, a fake Redis.
Nothing is built at import time; Redis clients connect on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from producers.health import redis_client
from producers.intake import Intake
from producers.reversal import RedLetterGate, runtime_query
from schemas.settings import Settings
from schemas.tenants import TenantsFile
from store.db import make_engine, make_session_factory

if TYPE_CHECKING:
    # Imported where used: importing producers loads no worker code (test_cli_servers).
    from worker.enqueue import Enqueuer

__all__ = ["Components"]

log = logging.getLogger(__name__)


@dataclass
class Components:
    """What producers need, built once per process."""

    settings: Settings
    tenants: TenantsFile
    sessions: sessionmaker[Session]
    enqueuer: Enqueuer
    redis: Any | None = None
    broker_redis: Any | None = None
    _closers: list[Callable[[], object]] = field(default_factory=list, repr=False)
    # The worker's runtime (Kingdee clients, token cache) for the few producer-side cloud
    # questions (what may still be reversed); built on first use, or given by a test.
    runtime: Any | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        tenants: TenantsFile | None = None,
        sessions: sessionmaker[Session] | None = None,
        enqueuer: Enqueuer | None = None,
        redis: Any | None = None,
        broker_redis: Any | None = None,
    ) -> Components:
        closers: list[Callable[[], object]] = []
        if tenants is None:
            tenants = settings.load_tenants()
        if sessions is None:
            engine = make_engine(settings.database_url)
            sessions = make_session_factory(engine)
            closers.append(engine.dispose)
        if enqueuer is None:
            from worker.app import create_app
            from worker.enqueue import CeleryEnqueuer

            # The worker's app, used only to publish; it connects on the first send.
            enqueuer = CeleryEnqueuer(create_app(settings))
        if redis is None:
            redis = redis_client(settings.redis_url)
            closers.append(redis.close)
        if broker_redis is None and settings.broker_url.startswith(("redis://", "rediss://")):
            if settings.broker_url == settings.redis_url:
                broker_redis = redis
            else:
                broker_redis = redis_client(settings.broker_url)
                closers.append(broker_redis.close)
        return cls(settings, tenants, sessions, enqueuer, redis, broker_redis, closers)

    @property
    def engine(self) -> Engine:
        bind = self.sessions.kw.get("bind")
        if not isinstance(bind, Engine):
            raise RuntimeError("the session factory is not bound to an engine")
        return bind

    def worker_runtime(self) -> Any:
        """The worker's ``Runtime`` over these components' database, tenants and broker."""
        if self.runtime is None:
            from worker.runtime import build_runtime

            self.runtime = build_runtime(
                self.settings, enqueuer=self.enqueuer, tenants=self.tenants, sessions=self.sessions
            )
            self._closers.append(self.runtime.close)
        return self.runtime

    def red_letters(self) -> RedLetterGate:
        return RedLetterGate(self.sessions, self.tenants, runtime_query(self.worker_runtime))

    def intake(self, actor: str = "erp") -> Intake:
        from worker.coalesce import PushCoalescer

        coalescer = PushCoalescer(self.redis) if self.redis is not None else None
        return Intake(
            self.sessions,
            self.tenants,
            self.enqueuer,
            actor,
            self.settings.push.batch_size,
            red_letters=self.red_letters(),
            coalescer=coalescer,
        )

    def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:  # closing is best effort at shutdown
                log.debug("close step failed", exc_info=True)
        self._closers.clear()
