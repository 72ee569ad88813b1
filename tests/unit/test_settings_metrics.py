"""FAPIAO_METRICS__*: the worker exporter's port (0 = off), interface and directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.settings import Settings, SettingsError


def test_metrics_exporter_is_off_by_default() -> None:
    settings = Settings.load(environment="development")
    assert settings.metrics.worker_port == 0
    assert settings.metrics.multiproc_dir is None


def test_metrics_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAPIAO_METRICS__WORKER_PORT", "9808")
    monkeypatch.setenv("FAPIAO_METRICS__HOST", "127.0.0.1")
    monkeypatch.setenv("FAPIAO_METRICS__MULTIPROC_DIR", str(tmp_path))
    settings = Settings.load(environment="development")
    assert settings.metrics.worker_port == 9808
    assert settings.metrics.host == "127.0.0.1"
    assert settings.metrics.multiproc_dir == tmp_path


def test_a_port_out_of_range_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAPIAO_METRICS__WORKER_PORT", "70000")
    with pytest.raises(SettingsError, match="FAPIAO_METRICS__WORKER_PORT"):
        Settings.load(environment="development")
