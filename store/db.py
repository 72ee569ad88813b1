"""Engines, sessions and the unit of work. Nothing is built at import time.

| database   | URL                                 | what `make_engine` adds                    |
|------------|-------------------------------------|--------------------------------------------|
| PostgreSQL | `postgresql+psycopg://user@host/db` | `pool_pre_ping`; sessions in UTC           |
| SQLite     | `sqlite:///path/fapiao.db`          | WAL, `busy_timeout`, `foreign_keys=ON`,    |
|            |                                     | every transaction opened `BEGIN IMMEDIATE` |

Why `BEGIN IMMEDIATE` on SQLite: SQLite ignores `FOR UPDATE SKIP LOCKED`, and a deferred
transaction that reads first and writes later can fail to upgrade its lock (or, worse, two
sessions can both read the same due rows). Taking the write lock when the transaction starts
serialises writers (waiting up to `busy_timeout`), which keeps compare-and-set claims and
batch claims disjoint. Readers outside transactions still run concurrently (WAL). The price is
one writer at a time — right for the embedded default; use PostgreSQL for throughput.

`unit_of_work(session_factory)` yields a session, commits when the block succeeds and rolls
back when it raises; it is the only place services should commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "is_postgres",
    "is_sqlite",
    "make_engine",
    "make_session_factory",
    "unit_of_work",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(
    url: str,
    *,
    sqlite_begin: Literal["IMMEDIATE", "DEFERRED"] = "IMMEDIATE",
    sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    **kw: Any,
) -> Engine:
    """An engine for `url` configured as the module docstring says; `kw` go to create_engine."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, sqlite_begin, sqlite_busy_timeout_ms, **kw)
    if backend == "postgresql":
        kw.setdefault("pool_pre_ping", True)
        connect_args = dict(kw.pop("connect_args", {}))
        connect_args.setdefault("options", "-c timezone=UTC")
        return create_engine(url, connect_args=connect_args, **kw)
    raise ValueError(f"unsupported database {backend!r} in {parsed.render_as_string()}")


def _sqlite_engine(url: str, begin: str, busy_timeout_ms: int, **kw: Any) -> Engine:
    parsed = make_url(url)
    connect_args = dict(kw.pop("connect_args", {}))
    # Sessions move between threads in tests and thread pools; connections are never shared
    # by two threads at once (the pool hands each out to one user).
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", busy_timeout_ms / 1000)
    in_memory = parsed.database in (None, "", ":memory:")
    if in_memory:
        kw.setdefault("poolclass", StaticPool)
    engine = create_engine(url, connect_args=connect_args, **kw)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (the "begin" hook below): the sqlite3
        # module's own implicit BEGIN would be DEFERRED and would come too late.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(f"BEGIN {begin}")

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (services read ids after commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def unit_of_work(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits if the block succeeds and rolls back if it raises."""
    session = session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
