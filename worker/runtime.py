"""The composition root of a worker process: everything a service needs, built once from Settings.

``Runtime`` is what services receive instead of globals. ``build_runtime`` makes one from
``Settings`` (the database engine, one Redis client, one pooled httpx client, the token
cache, the per-tenant Kingdee clients, the policies); tests build one around their own
fixtures and fakes (any field can be given). Nothing is built at import time.

Derived policy values (settings → runtime)

| runtime field         | from settings                                                       |
|-----------------------|---------------------------------------------------------------------|
| ``push_lease``        | 2 × (connect + read timeout) + 5 s: a push (token + call) fits       |
| ``retries``           | the retry table (``worker.retry_policy.retry_table``): every retry  |
| ``backoff``           | its ``push`` row                                                     |
| ``poll_schedule``     | its ``query`` row (``poll.schedule_seconds``, ``poll.cap_seconds``) |
|                       | and ``poll.alert_after_seconds``                                     |
| ``webhook_backoff``   | its ``webhook`` row                                                  |
| ``in_doubt_max_queries`` | its ``query`` row's attempts (``in_doubt.max_queries``)           |
| ``max_countdown``     | visibility timeout / 10, at most 60 s: longer waits are DB due times |

``Enqueuer`` (``worker.enqueue``) is the port to the broker: services return ``Followup``s,
tasks hand them to ``Runtime.dispatch`` after the unit of work committed, which sends them as
one batch.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from schemas.settings import Settings
from schemas.tenants import TenantConfig, TenantsFile
from store.columns import utcnow
from store.db import make_engine, make_session_factory
from worker.enqueue import Enqueuer, Followup
from worker.kingdee import HttpKingdeeClient, KingdeeClient, make_http_client
from worker.ledger import SqlCallLedger
from worker.ratelimit import RedisRateGate
from worker.retry_policy import Backoff, PollSchedule, RetryTable, retry_table
from worker.tokens import TokenCache

__all__ = [
    "Enqueuer",
    "Followup",
    "Runtime",
    "build_runtime",
    "policy_from_settings",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Policy:
    push_lease: timedelta
    retries: RetryTable
    backoff: Backoff
    poll_schedule: PollSchedule
    webhook_backoff: Backoff
    max_countdown: float
    in_doubt_max_age: timedelta
    in_doubt_max_queries: int


def policy_from_settings(settings: Settings) -> Policy:
    """The derived values of the module docstring table."""
    http = settings.http
    retries = retry_table(settings)
    return Policy(
        push_lease=timedelta(
            seconds=2 * (http.connect_timeout_seconds + http.read_timeout_seconds) + 5
        ),
        retries=retries,
        backoff=retries.push,
        poll_schedule=PollSchedule(
            delays_seconds=retries.query.schedule_seconds,
            cap_seconds=retries.query.cap_seconds,
            alert_after=timedelta(seconds=settings.poll.alert_after_seconds),
        ),
        webhook_backoff=retries.webhook,
        max_countdown=min(60.0, settings.broker.visibility_timeout_seconds / 10),
        in_doubt_max_age=timedelta(seconds=settings.in_doubt.max_age_seconds),
        in_doubt_max_queries=retries.query.max_attempts,
    )


@dataclass
class Runtime:
    """Everything services use; one per worker process (module docstring)."""

    settings: Settings
    tenants: TenantsFile
    sessions: sessionmaker[Session]
    redis: Redis
    tokens: TokenCache
    http: httpx.Client
    make_client: Callable[[TenantConfig], KingdeeClient]
    enqueuer: Enqueuer
    policy: Policy
    clock: Callable[[], datetime] = utcnow
    rng: random.Random = field(default_factory=random.Random)
    actor: str = "worker"
    _clients: dict[str, KingdeeClient] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def tenant(self, name: str) -> TenantConfig | None:
        return self.tenants.by_name(name)

    def client(self, tenant: TenantConfig) -> KingdeeClient:
        """The Kingdee client of ``tenant`` (one per tenant per process, sharing the pool)."""
        with self._lock:
            client = self._clients.get(tenant.name)
            if client is None:
                client = self.make_client(tenant)
                self._clients[tenant.name] = client
            return client

    def dispatch(self, followups: Iterable[Followup]) -> int:
        """Send ``followups`` as one batch (after commit); returns how many the broker took."""
        batch = [self._capped(followup) for followup in followups]
        return self.enqueuer.send(batch) if batch else 0

    def _capped(self, followup: Followup) -> Followup:
        countdown = followup.countdown
        if countdown is None:
            return followup
        # Long waits belong in the database (due columns), never in the broker.
        capped = max(0.0, min(countdown, self.policy.max_countdown))
        return Followup(followup.task, followup.kwargs, capped)

    def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:  # closing is best effort at process exit
                log.debug("runtime close step failed", exc_info=True)
        self._closers.clear()


def build_runtime(
    settings: Settings,
    *,
    enqueuer: Enqueuer,
    tenants: TenantsFile | None = None,
    sessions: sessionmaker[Session] | None = None,
    redis: Redis | None = None,
    http: httpx.Client | None = None,
    make_client: Callable[[TenantConfig], KingdeeClient] | None = None,
    clock: Callable[[], datetime] = utcnow,
    rng: random.Random | None = None,
    actor: str | None = None,
) -> Runtime:
    """A ``Runtime`` from ``settings``; every dependency can be supplied instead of built."""
    closers: list[Callable[[], None]] = []
    if tenants is None:
        tenants = settings.load_tenants()
    if sessions is None:
        engine = make_engine(settings.database_url)
        sessions = make_session_factory(engine)
        closers.append(engine.dispose)
    if redis is None:
        redis = Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
        closers.append(redis.close)
    if http is None:
        http = make_http_client(settings.http)
        closers.append(http.close)
    tokens = TokenCache(
        redis,
        refresh_margin=timedelta(seconds=settings.tokens.refresh_margin_seconds),
        lock_timeout=settings.tokens.lock_timeout_seconds,
        blocking_timeout=settings.tokens.lock_wait_seconds,
    )
    if make_client is None:
        ledger = SqlCallLedger(sessions)
        gate = RedisRateGate(redis)
        client_http = http

        def make_client(tenant: TenantConfig) -> KingdeeClient:
            return HttpKingdeeClient(tenant, client_http, ledger=ledger, rate_gate=gate)

    runtime = Runtime(
        settings=settings,
        tenants=tenants,
        sessions=sessions,
        redis=redis,
        tokens=tokens,
        http=http,
        make_client=make_client,
        enqueuer=enqueuer,
        policy=policy_from_settings(settings),
        clock=clock,
        rng=rng or random.Random(),
        actor=actor or f"worker:{os.getpid()}",
    )
    runtime._closers.extend(closers)
    return runtime
