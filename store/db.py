"""Engines, sessions and the unit of work. Nothing is built at import time.

| database   | URL                                 | what `make_engine` adds                    |
|------------|-------------------------------------|--------------------------------------------|
| PostgreSQL | `postgresql+psycopg://user@host/db` | liveness check on checkout (below);        |
|            |                                     | sessions in UTC                            |
| SQLite     | `sqlite:///path/fapiao.db`          | WAL, `busy_timeout`, `foreign_keys=ON`,    |
|            |                                     | every transaction opened `BEGIN IMMEDIATE` |

Why `BEGIN IMMEDIATE` on SQLite: SQLite ignores `FOR UPDATE SKIP LOCKED`, and a deferred
transaction that reads first and writes later can fail to upgrade its lock (or, worse, two
sessions can both read the same due rows). Taking the write lock when the transaction starts
serialises writers (waiting up to `busy_timeout`), which keeps compare-and-set claims and
batch claims disjoint. Readers outside transactions still run concurrently (WAL). The price is
one writer at a time — right for the embedded default; use PostgreSQL for throughput.

Liveness of pooled PostgreSQL connections (instead of `pool_pre_ping`, which costs a round
trip on EVERY checkout, i.e. every transaction): a pool `checkout` hook decides per checkout.

| the connection at checkout                                  | what happens                    |
|-------------------------------------------------------------|---------------------------------|
| fresh (just connected)                                      | used as is                      |
| idle in the pool for more than `ping_idle_seconds` (10 s)   | `SELECT 1` round trip           |
| its socket is readable although no query is outstanding:    | `SELECT 1` round trip (fails on |
| the server said something or hung up (restart, fast         | a dead connection)              |
| shutdown, `pg_terminate_backend`, idle timeout)             |                                 |
| otherwise (hot: used moments ago, server silent)            | used as is, no round trip       |

A ping that fails with a disconnect error invalidates the whole pool (`InvalidatePoolError`)
and the checkout reconnects transparently, as `pool_pre_ping` did. The readable-socket check
is one `poll(2)` with timeout 0 (no round trip): a PostgreSQL restart terminates every backend,
which sends its FATAL notice and closes the socket, so every pooled connection shows as
readable and is replaced before use. What remains uncovered is a server that vanished
silently (host down, network cut) within `ping_idle_seconds` of a connection's last use: the
first statement then fails with a disconnect error, SQLAlchemy invalidates the pool (every
older connection is replaced at its next checkout), and the caller sees `OperationalError` —
Celery tasks retry it (`worker.tasks`); an HTTP request fails and its client retries, as with
a failure mid-transaction under `pool_pre_ping`. `pool_pre_ping=True` passed
explicitly still gets SQLAlchemy's ping on every checkout (this hook is then not installed).

`unit_of_work(session_factory)` yields a session, commits when the block succeeds and rolls
back when it raises; it is the only place services should commit.

Statements that need no transaction around them (psycopg sends `BEGIN` and `COMMIT` as round
trips of their own, so a one-statement transaction is three round trips):

| helper                                | PostgreSQL                         | SQLite            |
|---------------------------------------|------------------------------------|-------------------|
| `single_statements(engine)`           | a Core connection in autocommit:   | `engine.begin()`  |
| (a Connection)                        | each statement is its own          | (one `BEGIN       |
|                                       | transaction, committed (durably)   | IMMEDIATE`)       |
|                                       | when `execute` returns             |                   |
| `autocommit_session(session_factory)` | a Session on that autocommit       | `unit_of_work`    |
|                                       | engine                             |                   |

Use them only where each statement stands alone: a ledger row, reads whose answers need not
come from one snapshot (under READ COMMITTED each statement has its own snapshot anyway),
one compare-and-set `UPDATE`. Nothing is rolled back if the block raises after a statement.
"""

from __future__ import annotations

import select
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

__all__ = [
    "PING_IDLE_SECONDS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "autocommit_session",
    "install_liveness_check",
    "is_postgres",
    "is_sqlite",
    "make_engine",
    "make_session_factory",
    "single_statements",
    "unit_of_work",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000
PING_IDLE_SECONDS = 10.0
_IDLE_SINCE = "fapiao_idle_since"  # key in a pool record's ``info``


def make_engine(
    url: str,
    *,
    sqlite_begin: Literal["IMMEDIATE", "DEFERRED"] = "IMMEDIATE",
    sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    ping_idle_seconds: float = PING_IDLE_SECONDS,
    **kw: Any,
) -> Engine:
    """An engine for `url` configured as the module docstring says; `kw` go to create_engine.

    ``ping_idle_seconds``: PostgreSQL connections idle longer than this are pinged on checkout.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, sqlite_begin, sqlite_busy_timeout_ms, **kw)
    if backend == "postgresql":
        connect_args = dict(kw.pop("connect_args", {}))
        connect_args.setdefault("options", "-c timezone=UTC")
        engine = create_engine(url, connect_args=connect_args, **kw)
        if not kw.get("pool_pre_ping"):
            install_liveness_check(engine, ping_idle_seconds)
        return engine
    raise ValueError(f"unsupported database {backend!r} in {parsed.render_as_string()}")


def install_liveness_check(
    engine: Engine,
    idle_seconds: float = PING_IDLE_SECONDS,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Ping a pooled connection on checkout only when it needs it (module docstring table)."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = clock()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop(_IDLE_SINCE, None)
        if idle_since is None:
            return  # fresh connection (or a re-checkout without checkin)
        if clock() - idle_since <= idle_seconds and not _server_spoke(dbapi_connection):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.InvalidatePoolError(f"connection lost while idle: {error}") from error
            raise


def _server_spoke(dbapi_connection: Any) -> bool:
    """Has the server sent anything (or hung up) on this idle connection? No round trip.

    Unknown (no socket, no ``poll``) counts as yes: the caller then pings.
    """
    try:
        fd = dbapi_connection.fileno()  # raises when the driver knows it is closed
        poller = select.poll()
    except Exception:
        return True
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


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


_autocommit_engines: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def _autocommit(engine: Engine) -> Engine:
    """``engine`` with ``isolation_level=AUTOCOMMIT`` (same pool; built once per engine)."""
    found = _autocommit_engines.get(engine)
    if found is None:
        found = engine.execution_options(isolation_level="AUTOCOMMIT")
        _autocommit_engines[engine] = found
    return found


@contextmanager
def single_statements(engine: Engine) -> Iterator[Connection]:
    """A connection whose statements each commit on their own (module docstring table)."""
    if not is_postgres(engine):
        with engine.begin() as connection:
            yield connection
        return
    with _autocommit(engine).connect() as connection:
        yield connection


@contextmanager
def autocommit_session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose statements each commit on their own (module docstring table)."""
    bind = session_factory.kw.get("bind")
    if not isinstance(bind, Engine) or not is_postgres(bind):
        with unit_of_work(session_factory) as session:
            yield session
        return
    session = session_factory(bind=_autocommit(bind))
    try:
        yield session
        session.commit()  # nothing to send: every statement committed already
    finally:
        session.close()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
