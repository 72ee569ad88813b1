"""Alembic environment: where the URL comes from, and how migrations run on both databases.

URL, first found wins: `config.attributes["connection"]` (an open Connection),
`config.attributes["url"]`, `alembic -x url=...`, the `FAPIAO_DATABASE_URL` environment
variable, `sqlite:///fapiao.db` (the same default as the settings). The URL is read here
directly rather than through the settings object so migrations run with nothing else
configured.

SQLite cannot ALTER most things, so migrations render in batch mode there
(`render_as_batch`); engines come from `store.db.make_engine` so SQLite gets the same
pragmas (foreign keys on, WAL) as the application.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

from store.db import make_engine
from store.models import metadata

DEFAULT_DATABASE_URL = "sqlite:///fapiao.db"

config = context.config
target_metadata = metadata


def database_url() -> str:
    explicit = config.attributes.get("url")
    if explicit:
        return str(explicit)
    x_args = context.get_x_argument(as_dictionary=True)
    if x_args.get("url"):
        return str(x_args["url"])
    return os.environ.get("FAPIAO_DATABASE_URL") or DEFAULT_DATABASE_URL


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render our column types as the plain SQLAlchemy types they store as."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        impl = obj.impl_instance
        autogen_context.imports.add("import sqlalchemy as sa")
        return f"sa.{impl!r}"
    return False


def configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=database_url().startswith("sqlite"),
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(database_url())
    try:
        with engine.connect() as connection:
            configure(connection)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
