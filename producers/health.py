"""``GET /healthz`` and ``fapiao doctor``: can this process reach what it needs?

| check | ok when | what to fix otherwise |
|---|---|---|
| ``database`` | ``SELECT 1`` answers, schema at Alembic head | start it / ``fapiao db upgrade`` |
| ``redis`` | ``PING`` answers | start Redis / fix ``FAPIAO_REDIS_URL`` |

Each check returns a ``Check`` (name, ok, detail, hint); nothing raises.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

__all__ = ["Check", "check_database", "check_redis", "redis_client"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    latency_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "detail": self.detail}
        if self.hint:
            out["hint"] = self.hint
        if self.latency_ms is not None:
            out["latency_ms"] = round(self.latency_ms, 1)
        return out


def redis_client(url: str, timeout: float = 2.0) -> Any:
    """A Redis client that fails fast: no retries, short timeouts (health checks, metrics).

    redis-py retries a refused connection with backoff by default (seconds); a health check
    must answer "down" at once instead.
    """
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def check_database(engine: Engine, *, expect_head: bool = True) -> Check:
    """Reachable, and (``expect_head``) migrated to the newest revision the code knows."""
    from alembic.runtime.migration import MigrationContext

    from store.migrate import head

    started = time.perf_counter()
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            revision = MigrationContext.configure(connection).get_current_revision()
    except Exception as exc:
        return Check(
            "database",
            False,
            f"unreachable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            "Start the database or fix FAPIAO_DATABASE_URL / 请检查数据库是否启动及连接地址",
            _ms(started),
        )
    latency = _ms(started)
    if expect_head:
        wanted = head()
        if revision != wanted:
            return Check(
                "database",
                False,
                f"schema at revision {revision or 'none'}, code expects {wanted}",
                "Run `fapiao db upgrade` / 请执行 fapiao db upgrade 升级数据库",
                latency,
            )
    return Check("database", True, f"reachable, schema at {revision}", latency_ms=latency)


def check_redis(client: Any, name: str = "redis") -> Check:
    started = time.perf_counter()
    try:
        client.ping()
    except Exception as exc:
        return Check(
            name,
            False,
            f"unreachable: {type(exc).__name__}",
            "Start Redis or fix FAPIAO_REDIS_URL / FAPIAO_BROKER_URL / 请检查Redis是否启动",
            _ms(started),
        )
    return Check(name, True, "PONG", latency_ms=_ms(started))
