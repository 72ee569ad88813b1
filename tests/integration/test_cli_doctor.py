"""fapiao doctor against real services: the database, Redis and the simulated cloud."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from producers.cli import CliContext, app
from producers.testing import API_KEY, CALLBACK_SECRET
from schemas.settings import Settings, SettingsError
from simulator.testing import SimulatorHandle, running_simulator
from store.models import CloudCall


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorHandle]:
    with running_simulator() as handle:
        yield handle


def settings_for(database_url: str, redis_url: str, tenants_file: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "redis_url": redis_url,
        "broker_url": redis_url,
        "tenants_file": tenants_file,
        "api_keys": [API_KEY],
        "callback_secret": CALLBACK_SECRET,
    }
    values.update(extra)
    return Settings(**values)


def doctor(settings: Settings | Exception, *args: str) -> tuple[Result, dict[str, Any]]:
    def load() -> Settings:
        if isinstance(settings, Exception):
            raise settings
        return settings

    result = CliRunner().invoke(
        app, ["doctor", "--json", *args], obj=CliContext(load_settings=load)
    )
    return result, json.loads(result.output)


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


def test_everything_reachable_and_every_token_obtainable(
    simulator: SimulatorHandle,
    database_url: str,
    redis_url: str,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    tenants = simulator.write_tenants_file(tmp_path / "tenants.toml")

    result, report = doctor(settings_for(database_url, redis_url, tenants))

    assert result.exit_code == 0, result.output
    found = checks(report)
    assert report["ok"] is True
    assert [name for name in found] == [
        "settings",
        "tenants",
        "database",
        "redis",
        "token:demo",
        "token:shop",
    ]
    assert "access_token obtained" in found["token:demo"]["detail"]
    with session_factory() as session:
        # the token calls went through the worker's client, so they are in the ledger
        interfaces = sorted(session.scalars(select(CloudCall.interface)))
    assert interfaces == ["getAppToken", "getAppToken", "login", "login"]


def test_a_wrong_secret_fails_that_tenant_only_and_says_what_to_fix(
    simulator: SimulatorHandle,
    database_url: str,
    redis_url: str,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    tenants = simulator.write_tenants_file(tmp_path / "tenants.toml")
    text = tenants.read_text(encoding="utf-8")
    blocks = text.split("[[tenants]]")
    shop = next(i for i, block in enumerate(blocks) if 'name = "shop"' in block)
    blocks[shop] = re.sub(
        r'app_secret = ".*"', 'app_secret = "wrong-secret-0123456789"', blocks[shop]
    )
    tenants.write_text("[[tenants]]".join(blocks), encoding="utf-8")

    result, report = doctor(settings_for(database_url, redis_url, tenants))

    assert result.exit_code == 1
    found = checks(report)
    assert found["token:demo"]["ok"] is True
    assert found["token:shop"]["ok"] is False
    assert "refused" in found["token:shop"]["detail"]
    assert "app_secret" in found["token:shop"]["hint"]
    assert "wrong-secret-0123456789" not in result.output  # secrets never printed


def test_an_unmigrated_database_and_a_dead_redis_are_named(
    simulator: SimulatorHandle, tmp_path: Path
) -> None:
    tenants = simulator.write_tenants_file(tmp_path / "tenants.toml")
    settings = settings_for(f"sqlite:///{tmp_path / 'empty.db'}", "redis://127.0.0.1:9/0", tenants)

    result, report = doctor(settings, "--no-tokens")

    assert result.exit_code == 1
    found = checks(report)
    assert found["database"]["ok"] is False
    assert "fapiao db upgrade" in found["database"]["hint"]
    assert found["redis"]["ok"] is False
    assert not any(name.startswith("token:") for name in found)


def test_bad_settings_and_a_missing_tenants_file(tmp_path: Path) -> None:
    bad, bad_report = doctor(SettingsError("invalid settings:\nFAPIAO_REDIS_URL: must be redis://"))
    missing, missing_report = doctor(
        settings_for(
            f"sqlite:///{tmp_path / 'x.db'}", "redis://127.0.0.1:9/0", tmp_path / "no.toml"
        ),
        "--no-tokens",
    )

    assert bad.exit_code == 1
    assert bad_report["checks"][0]["name"] == "settings"
    assert "FAPIAO_REDIS_URL" in bad_report["checks"][0]["detail"]
    assert missing.exit_code == 1
    assert checks(missing_report)["tenants"]["ok"] is False
    assert "tenants file not found" in checks(missing_report)["tenants"]["detail"]
