"""Run the Alembic migrations from Python (`fapiao db upgrade`, tests, the demo).

| function                       | does                                                  |
|--------------------------------|-------------------------------------------------------|
| `upgrade(url, revision)`       | migrate the database at `url` up to `revision`        |
| `downgrade(url, revision)`     | migrate it down to `revision` (`"base"`: empty)       |
| `current(url)`                 | the revision the database is at (`None`: never migrated) |
| `head()`                       | the newest revision the code knows                    |

The scripts are found as the package resource `migrations:` (works from a checkout and from
an installed wheel); `alembic.ini` is not needed. The URL is handed to `migrations/env.py`
through `config.attributes["url"]`, so it wins over `FAPIAO_DATABASE_URL`.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from store.db import make_engine

__all__ = ["SCRIPT_LOCATION", "alembic_config", "current", "downgrade", "head", "upgrade"]

SCRIPT_LOCATION = "migrations:"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config pointing at our scripts (and at `url`, when given)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
