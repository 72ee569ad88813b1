"""Alembic migrations for fapiao-bridge (`script_location = migrations`, or `migrations:`).

Run them with `fapiao db upgrade`, `store.migrate.upgrade(url)` or `alembic upgrade head`.
"""
