"""store.db on PostgreSQL: the checkout liveness check that replaces ``pool_pre_ping``, and
statements run in autocommit (``single_statements``, ``autocommit_session``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from store.db import (
    _server_spoke,
    autocommit_session,
    make_engine,
    make_session_factory,
    single_statements,
)

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def counted_engine(database_url: str) -> Iterator[tuple[Engine, list[int]]]:
    """An engine from ``make_engine`` (pool of one) whose pings are counted."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        yield engine, _count_pings(engine)
    finally:
        engine.dispose()


def _count_pings(engine: Engine) -> list[int]:
    pings: list[int] = []
    original = engine.dialect.do_ping

    def counting_ping(dbapi_connection: Any) -> bool:
        pings.append(1)
        return bool(original(dbapi_connection))

    engine.dialect.do_ping = counting_ping  # type: ignore[method-assign]
    return pings


def _backend_pid(engine: Engine) -> int:
    with engine.begin() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_hot_connections_are_not_pinged(counted_engine: tuple[Engine, list[int]]) -> None:
    engine, pings = counted_engine
    pids = {_backend_pid(engine) for _ in range(20)}
    assert len(pids) == 1  # the same pooled connection every time
    assert pings == []


def test_idle_connections_are_pinged(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1, max_overflow=0, ping_idle_seconds=0.05)
    pings = _count_pings(engine)
    try:
        _backend_pid(engine)  # fresh: no ping
        _backend_pid(engine)  # hot: no ping
        assert pings == []
        time.sleep(0.1)
        _backend_pid(engine)
        assert pings == [1]
    finally:
        engine.dispose()


def test_a_terminated_backend_is_replaced_before_use(
    counted_engine: tuple[Engine, list[int]], engine: Engine
) -> None:
    """What a PostgreSQL restart does to every pooled connection, for one connection."""
    pooled, pings = counted_engine
    with pooled.begin() as conn:
        victim = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        raw = conn.connection.dbapi_connection
    with engine.begin() as admin:
        assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim}).scalar()
    deadline = time.monotonic() + 5
    while not _server_spoke(raw) and time.monotonic() < deadline:
        time.sleep(0.01)
    # Hot (used moments ago), yet pinged: the server hung up on it.
    assert _server_spoke(raw) is True

    replacement = _backend_pid(pooled)  # no OperationalError: reconnected on checkout
    assert replacement != victim
    assert pings == [1]
    assert _backend_pid(pooled) == replacement
    assert pings == [1]


def test_a_quiet_connection_has_nothing_to_read(counted_engine: tuple[Engine, list[int]]) -> None:
    pooled, _ = counted_engine
    with pooled.connect() as conn:
        conn.execute(text("SELECT 1"))
        conn.rollback()
        assert _server_spoke(conn.connection.dbapi_connection) is False


def test_a_connection_closed_under_the_pool_is_replaced(
    counted_engine: tuple[Engine, list[int]],
) -> None:
    pooled, pings = counted_engine
    with pooled.begin() as conn:
        victim = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.close()  # e.g. the driver gave up on it
    assert _backend_pid(pooled) != victim
    assert pings == [1]


def test_single_statements_commit_as_they_return_and_leave_the_pool_transactional(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    pooled = make_engine(database_url, pool_size=1, max_overflow=0)
    insert = text("INSERT INTO tenant_state (tenant, paused, updated_at) VALUES (:t, false, now())")
    count = text("SELECT count(*) FROM tenant_state WHERE tenant = :t")
    try:
        with single_statements(pooled) as conn:
            conn.execute(insert, {"t": "autocommitted"})
            # Committed already: another connection sees it while this block is still open.
            with engine.connect() as other:
                assert other.execute(count, {"t": "autocommitted"}).scalar_one() == 1
        # The same pooled connection is transactional again: a rollback undoes.
        with pooled.connect() as conn:
            conn.execute(insert, {"t": "rolled-back"})
            conn.rollback()
        with engine.connect() as other:
            assert other.execute(count, {"t": "rolled-back"}).scalar_one() == 0
        with autocommit_session(make_session_factory(pooled)) as session:
            session.execute(insert, {"t": "session"})
            with engine.connect() as other:
                assert other.execute(count, {"t": "session"}).scalar_one() == 1
    finally:
        pooled.dispose()
