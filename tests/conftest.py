"""Fixtures shared by the whole suite: a fresh database per run, sessions, Redis.

| fixture           | scope    | gives                                                          |
|-------------------|----------|----------------------------------------------------------------|
| `db_backend`      | session  | `"postgresql"` or `"sqlite"` (from FAPIAO_TEST_DATABASE_URL)   |
| `database_url`    | session  | URL of a database created for this run (migrated by `engine`)  |
| `engine`          | session  | engine on it, schema built by the Alembic migrations (head)    |
| `session_factory` | function | `sessionmaker`; every table is emptied after the test          |
| `db_session`      | function | one open Session from `session_factory` (closed, then emptied) |
| `make_document`   | function | `make_document(status=..., **columns)`: a committed Document   |
| `redis_url`       | function | FAPIAO_TEST_REDIS_URL (default db 15), FLUSHDB before & after  |

FAPIAO_TEST_DATABASE_URL: a `postgresql...` URL -> a fresh database `fapiao_test_<random>`
is created on that server and dropped at the end; `sqlite` or unset -> a file in a tmp dir.

Isolation: tables are emptied after each test that used `session_factory`/`db_session`
(TRUNCATE on PostgreSQL, DELETE on SQLite) rather than rolling back one outer transaction,
because tests commit from several threads and processes. Tests that use `engine` directly
and write must also request `session_factory` (or clean up themselves).

Marker `postgres_only`: skipped on the SQLite run.

FAPIAO_TEST_DB_INDEPENDENT=skip (`make test` sets it for one of its two concurrent suites):
deselect the tests that do not depend on the configured database, because the other suite
runs them (the same test, the same result). Depending = the test's fixtures include
`database_url` or `db_backend` (directly or through other fixtures, e.g. `session_factory`,
`world`); tests marked `postgres_only` are never deselected (the SQLite suite skips them). A
fixture that requests a database fixture by name at run time (`request.getfixturevalue`) must
be in `DATABASE_FIXTURES`; every run checks that after each test.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from store import migrate
from store.columns import utcnow
from store.db import make_engine, make_session_factory
from store.models import Document, metadata

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
# A test depends on the configured database when one of these is among its fixtures.
# `either_world` requests `world` or `trusting_world` by name, so its closure does not show it.
DATABASE_FIXTURES = frozenset({"database_url", "db_backend", "either_world"})


def _configured_database_url() -> str:
    return os.environ.get("FAPIAO_TEST_DATABASE_URL", "").strip() or "sqlite"


def _backend() -> str:
    return "postgresql" if _configured_database_url().startswith("postgresql") else "sqlite"


def depends_on_database(item: pytest.Item) -> bool:
    return not DATABASE_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("FAPIAO_TEST_DB_INDEPENDENT", "run").strip() == "skip":
        elsewhere = [
            i for i in items if not depends_on_database(i) and "postgres_only" not in i.keywords
        ]
        if elsewhere:
            config.hook.pytest_deselected(items=elsewhere)
            gone = set(map(id, elsewhere))
            items[:] = [i for i in items if id(i) not in gone]
    if _backend() == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (FAPIAO_TEST_DATABASE_URL=postgresql...)")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _database_use_matches_fixtures(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test classified database-independent must not have used the database after all
    (it would run on one database only when FAPIAO_TEST_DB_INDEPENDENT=skip)."""
    yield
    if not depends_on_database(request.node) and not DATABASE_FIXTURES.isdisjoint(
        request.fixturenames
    ):
        pytest.fail(
            f"{request.node.nodeid} reached a database fixture at run time "
            "(request.getfixturevalue): add the fixture that requested it to "
            "tests/conftest.py's DATABASE_FIXTURES"
        )


@pytest.fixture(scope="session")
def db_backend() -> str:
    return _backend()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = _configured_database_url()
    if not configured.startswith("postgresql"):
        path: Path = tmp_path_factory.mktemp("db") / "fapiao_test.db"
        yield f"sqlite:///{path}"
        return

    name = f"fapiao_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(configured, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(configured).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    migrate.upgrade(database_url)
    eng = make_engine(database_url)
    try:
        yield eng
    finally:
        eng.dispose()


# Up to this many rows in every table, PostgreSQL empties them with DELETE: TRUNCATE makes new
# files for every table and costs ~45 ms per test, DELETE of a test's few rows ~3 ms.
FEW_ROWS = 1000


def empty_all_tables(engine: Engine) -> None:
    """Remove every row of every table and restart their identity sequences (the schema and
    Alembic's version row stay)."""
    tables = [t.name for t in reversed(metadata.sorted_tables)]  # children first
    with engine.begin() as conn:
        if engine.dialect.name != "postgresql":
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
            return
        # Fail loudly instead of hanging if a test leaked an open transaction.
        conn.execute(text("SET LOCAL lock_timeout = '20s'"))
        capped = " UNION ALL ".join(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {FEW_ROWS + 1}) AS {table}"
            for table in tables
        )
        if conn.execute(text(f"SELECT max(count) FROM ({capped}) AS counts")).scalar_one() > (
            FEW_ROWS
        ):
            # Many dead rows would slow the next tests' scans until autovacuum came by.
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            return
        for table in tables:
            conn.execute(text(f"DELETE FROM {table}"))
        # What RESTART IDENTITY does: every sequence owned by a column of these tables.
        conn.execute(
            text(
                "SELECT setval(seq.oid, ps.start_value, false)"
                " FROM pg_class AS seq"
                " JOIN pg_depend AS dep ON dep.objid = seq.oid AND dep.deptype IN ('a', 'i')"
                " JOIN pg_class AS tab ON tab.oid = dep.refobjid"
                " JOIN pg_sequences AS ps ON ps.schemaname = current_schema()"
                " AND ps.sequencename = seq.relname"
                " WHERE seq.relkind = 'S' AND tab.relname = ANY(:tables)"
                " AND tab.relnamespace = seq.relnamespace"
            ),
            {"tables": tables},
        )


@pytest.fixture
def session_factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    try:
        yield make_session_factory(engine)
    finally:
        empty_all_tables(engine)


@pytest.fixture
def db_session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    session = session_factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


_bill_numbers = itertools.count(1)


@pytest.fixture
def make_document(session_factory: sessionmaker[Session]) -> Callable[..., Document]:
    """Insert a document directly in any state (test set-up only; code uses the lifecycle)."""

    def make(status: str = "draft", **columns: Any) -> Document:
        now = utcnow()
        bill_no = columns.pop("bill_no", f"TEST-{next(_bill_numbers):06d}")
        fields: dict[str, Any] = {
            "tenant": "acme",
            "seller_tax_id": "91330100MA27XXXX0X",
            "bill_no": bill_no,
            "content_hash": f"hash-{bill_no}",
            "total_amount": Decimal("113.00"),
            "payload": {"billNo": bill_no, "totalAmount": "113.00"},
            "next_attempt_at": now if status == "draft" else None,
            "created_at": now,
            "updated_at": now,
            "status_changed_at": now,
        }
        fields.update(columns)
        document = Document(status=status, **fields)
        with session_factory() as session:
            session.add(document)
            session.commit()
        return document

    return make


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = os.environ.get("FAPIAO_TEST_REDIS_URL", "").strip() or DEFAULT_REDIS_URL
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        yield url
        client.flushdb()
    finally:
        client.close()
