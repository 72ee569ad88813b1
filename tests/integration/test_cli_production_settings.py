"""Production without API keys: only the HTTP API refuses; migrations, reads and workers start.

Every command here reads its settings from real ``FAPIAO_*`` variables (no injected context),
as a production container does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from producers.cli import app
from producers.testing import write_tenants_toml
from schemas.settings import SettingsError


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """FAPIAO_ENVIRONMENT=production, a fresh SQLite file, real-looking tenants, NO API keys."""
    for name in list(os.environ):
        if name.upper().startswith("FAPIAO_"):
            monkeypatch.delenv(name)
    url = f"sqlite:///{tmp_path / 'prod.db'}"
    monkeypatch.setenv("FAPIAO_ENVIRONMENT", "production")
    monkeypatch.setenv("FAPIAO_DATABASE_URL", url)
    monkeypatch.setenv("FAPIAO_TENANTS_FILE", str(write_tenants_toml(tmp_path / "t.toml")))
    monkeypatch.setenv("FAPIAO_REDIS_URL", "redis://127.0.0.1:9/0")  # never contacted
    monkeypatch.setenv("FAPIAO_BROKER_URL", "redis://127.0.0.1:9/0")
    return url


def fapiao(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_db_upgrade_current_and_read_commands_need_no_api_keys(production: str) -> None:
    code, output = fapiao("db", "upgrade")
    assert code == 0, output
    assert "database at revision" in output

    code, output = fapiao("db", "current", "--json")
    assert code == 0, output
    revisions = json.loads(output)
    assert revisions["current"] == revisions["head"]

    code, output = fapiao("status", "--json")
    assert code == 0, output
    assert [row["tenant"] for row in json.loads(output)["tenants"]] == ["demo", "shop"]

    code, output = fapiao("tenants", "list", "--json")
    assert code == 0, output
    assert [row["name"] for row in json.loads(output)] == ["demo", "shop"]

    code, output = fapiao("replay", "--dry-run", "--json")
    assert code == 0, output
    assert json.loads(output)["count"] == 0


def test_fapiao_api_refuses_without_keys_in_production(production: str) -> None:
    code, output = fapiao("api", "--port", "1")
    assert code == 2
    assert "FAPIAO_API_KEYS is required in production" in output
    assert "FAPIAO_CALLBACK_SECRET is required in production" in output


def test_fapiao_api_still_refuses_placeholder_keys(
    production: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAPIAO_API_KEYS", "change-me-api-key")
    monkeypatch.setenv("FAPIAO_CALLBACK_SECRET", "cb-Vq2Jx8Rk4Nz6Wm")
    code, output = fapiao("api", "--port", "1")
    assert code == 2
    assert "FAPIAO_API_KEYS" in output and "placeholder" in output
    assert "change-me-api-key" not in output


def test_the_api_factory_refuses_without_keys(production: str) -> None:
    from producers.http import app_from_environment

    with pytest.raises(SettingsError, match="FAPIAO_API_KEYS is required in production"):
        app_from_environment()


def test_the_celery_app_builds_without_api_keys(production: str) -> None:
    """What ``celery -A worker worker`` and ``celery -A worker beat`` load."""
    from worker.app import create_app

    celery_app = create_app()
    assert celery_app.settings.environment == "production"
    assert celery_app.settings.api_keys == []
