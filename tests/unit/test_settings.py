"""Settings from FAPIAO_* environment variables: defaults, nesting, lists, refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import schemas.settings as settings_module
from schemas.settings import (
    RETRY_DEFAULTS,
    ProcessRole,
    RetryRow,
    Settings,
    SettingsError,
    env_name,
)

KEY_1 = "k3y-ZmQ8r2vN0pX7"
KEY_2 = "k3y-Yt5wL9cB1sH4"
CALLBACK = "cb-Vq2Jx8Rk4Nz6Wm"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No FAPIAO_* variable of the machine running the tests leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("FAPIAO_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_in_development(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FAPIAO_ENVIRONMENT", "development")
    s = Settings.load()
    assert s.environment == "development"
    assert s.database_url == "sqlite:///fapiao.db"
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.tenants_file == Path("tenants.toml")
    assert s.api_keys == []
    assert s.callback_secret is None
    assert (s.log_format, s.log_level) == ("json", "INFO")
    assert s.tokens.refresh_margin_seconds == 600
    assert s.broker.visibility_timeout_seconds == 3600
    assert s.push.backoff_cap_seconds * 4 <= s.broker.visibility_timeout_seconds
    assert s.poll.schedule_seconds[:6] == [5, 15, 60, 300, 900, 3600]
    assert s.poll.cap_seconds == 21600
    assert s.callbacks.confirm_with_query is True
    assert s.callbacks.ip_allowlist == []
    assert s.callbacks.allows("203.0.113.9")


def test_environment_defaults_to_production_where_the_api_needs_keys() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(role="api")
    assert "FAPIAO_API_KEYS" in str(info.value)
    assert "FAPIAO_CALLBACK_SECRET" in str(info.value)


@pytest.mark.parametrize("role", [None, "worker", "cli"])
def test_processes_other_than_the_api_start_without_api_secrets(role: ProcessRole | None) -> None:
    s = Settings.load(role=role)
    assert s.environment == "production"
    assert s.api_keys == [] and s.callback_secret is None
    with pytest.raises(SettingsError, match="FAPIAO_API_KEYS is required in production"):
        s.require_api_secrets()


def test_the_api_role_is_satisfied_by_real_keys(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FAPIAO_API_KEYS", KEY_1)
    clean_env.setenv("FAPIAO_CALLBACK_SECRET", CALLBACK)
    s = Settings.load(role="api")
    assert [k.get_secret_value() for k in s.api_keys] == [KEY_1]


def test_placeholders_are_refused_without_the_api_role_too(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FAPIAO_API_KEYS", "change-me-please")
    with pytest.raises(SettingsError, match="FAPIAO_API_KEYS"):
        Settings.load(role="worker")


def test_production_from_env_with_nested_groups_and_comma_lists(
    clean_env: pytest.MonkeyPatch,
) -> None:
    env = {
        "FAPIAO_ENVIRONMENT": "Production",
        "FAPIAO_API_KEYS": f"{KEY_1}, {KEY_2}",
        "FAPIAO_CALLBACK_SECRET": CALLBACK,
        "FAPIAO_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "FAPIAO_TENANTS_FILE": "/etc/fapiao/tenants.toml",
        "FAPIAO_LOG_LEVEL": "debug",
        "FAPIAO_LOG_FORMAT": "console",
        "FAPIAO_PUSH__MAX_ATTEMPTS": "5",
        "FAPIAO_HTTP__READ_TIMEOUT_SECONDS": "12.5",
        "FAPIAO_POLL__SCHEDULE_SECONDS": "10, 20,40",
        "FAPIAO_POLL__CAP_SECONDS": "600",
        "FAPIAO_STUCK_ALERT__PUSHING": "120",
        "FAPIAO_CALLBACKS__IP_ALLOWLIST": "10.0.0.0/8,2001:db8::/32",
        "FAPIAO_CALLBACKS__CONFIRM_WITH_QUERY": "false",
        "FAPIAO_ERP_WEBHOOK__MAX_ATTEMPTS": "3",
    }
    for name, value in env.items():
        clean_env.setenv(name, value)
    s = Settings.load()
    assert s.environment == "production"
    assert [k.get_secret_value() for k in s.api_keys] == [KEY_1, KEY_2]
    assert s.callback_secret is not None and s.callback_secret.get_secret_value() == CALLBACK
    assert s.database_url.startswith("postgresql+psycopg://")
    assert s.tenants_file == Path("/etc/fapiao/tenants.toml")
    assert (s.log_level, s.log_format) == ("DEBUG", "console")
    assert s.push.max_attempts == 5
    assert s.http.read_timeout_seconds == 12.5
    assert s.poll.schedule_seconds == [10, 20, 40]
    assert [s.poll.delay_for(i) for i in range(5)] == [10, 20, 40, 600, 600]
    assert s.stuck_alert.for_state("pushing") == 120
    assert s.stuck_alert.for_state("draft") == 300
    assert s.stuck_alert.for_state("invoiced") is None
    assert s.callbacks.allows("10.20.30.40")
    assert s.callbacks.allows("2001:db8::1")
    assert not s.callbacks.allows("192.168.1.1")
    assert not s.callbacks.allows("not-an-ip")
    assert s.callbacks.confirm_with_query is False
    assert s.erp_webhook.max_attempts == 3


def test_lists_also_accept_json_arrays(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FAPIAO_ENVIRONMENT", "development")
    clean_env.setenv("FAPIAO_API_KEYS", f'["{KEY_1}"]')
    clean_env.setenv("FAPIAO_POLL__SCHEDULE_SECONDS", "[30, 60]")
    s = Settings.load()
    assert [k.get_secret_value() for k in s.api_keys] == [KEY_1]
    assert s.poll.schedule_seconds == [30, 60]


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("FAPIAO_PUSH__MAX_ATTEMPTS", "0", "FAPIAO_PUSH__MAX_ATTEMPTS"),
        ("FAPIAO_PUSH__MAX_ATTEMPTS", "lots", "FAPIAO_PUSH__MAX_ATTEMPTS"),
        ("FAPIAO_ENVIRONMENT", "staging", "FAPIAO_ENVIRONMENT"),
        ("FAPIAO_LOG_FORMAT", "xml", "FAPIAO_LOG_FORMAT"),
        ("FAPIAO_LOG_LEVEL", "chatty", "FAPIAO_LOG_LEVEL"),
        ("FAPIAO_DATABASE_URL", "mysql://db/fapiao", "FAPIAO_DATABASE_URL"),
        ("FAPIAO_REDIS_URL", "http://127.0.0.1:6379", "FAPIAO_REDIS_URL"),
        ("FAPIAO_BROKER_URL", "localhost", "FAPIAO_BROKER_URL"),
        ("FAPIAO_POLL__SCHEDULE_SECONDS", "60,5", "FAPIAO_POLL__SCHEDULE_SECONDS"),
        ("FAPIAO_POLL__SCHEDULE_SECONDS", "5,99999", "FAPIAO_POLL__CAP_SECONDS"),
        ("FAPIAO_POLL__SCHEDULE_SECONDS", "5,x", "FAPIAO_POLL__SCHEDULE_SECONDS"),
        ("FAPIAO_PUSH__BACKOFF_CAP_SECONDS", "3000", "FAPIAO_BROKER__VISIBILITY_TIMEOUT_SECONDS"),
        ("FAPIAO_PUSH__BACKOFF_CAP_SECONDS", "3000", "FAPIAO_PUSH__BACKOFF_CAP_SECONDS"),
        ("FAPIAO_PUSH__BACKOFF_BASE_SECONDS", "900", "FAPIAO_PUSH__BACKOFF_BASE_SECONDS"),
        ("FAPIAO_BROKER__VISIBILITY_TIMEOUT_SECONDS", "600", "FAPIAO_PUSH__BACKOFF_CAP_SECONDS"),
        ("FAPIAO_HTTP__READ_TIMEOUT_SECONDS", "-1", "FAPIAO_HTTP__READ_TIMEOUT_SECONDS"),
        ("FAPIAO_TOKENS__REFRESH_MARGIN_SECONDS", "99999", "FAPIAO_TOKENS__REFRESH_MARGIN_SECONDS"),
        ("FAPIAO_CALLBACKS__IP_ALLOWLIST", "10.0.0.0/8,nonsense", "FAPIAO_CALLBACKS__IP_ALLOWLIST"),
        ("FAPIAO_CALLBACKS__MAX_BODY_BYTES", "10", "FAPIAO_CALLBACKS__MAX_BODY_BYTES"),
        ("FAPIAO_STUCK_ALERT__PUSHING", "0", "FAPIAO_STUCK_ALERT__PUSHING"),
        ("FAPIAO_RETRY__RECONCILE__MAX_ATTEMPTS", "0", "FAPIAO_RETRY__RECONCILE__MAX_ATTEMPTS"),
        ("FAPIAO_RETRY__TASK__BASE_SECONDS", "60", "FAPIAO_RETRY__TASK__BASE_SECONDS"),
        ("FAPIAO_RETRY__TASK__JITTER", "maybe", "FAPIAO_RETRY__TASK__JITTER"),
        ("FAPIAO_RETRY__TASK__FACTOR", "0.5", "FAPIAO_RETRY__TASK__FACTOR"),
        ("FAPIAO_RETRY__PUBLISH__FACTOR", "2", "FAPIAO_RETRY__PUBLISH__FACTOR"),
        ("FAPIAO_RETRY__WITHDRAW__FACTOR", "2", "FAPIAO_RETRY__WITHDRAW"),
        ("FAPIAO_RETRY__WITHDRAW__MAX_ATTEMPTS", "3", "FAPIAO_RETRY__WITHDRAW"),
        ("FAPIAO_RETRY__PUSH__CAP_SECONDS", "3000", "FAPIAO_RETRY__PUSH__CAP_SECONDS"),
        ("FAPIAO_RETRY__WEBHOOK__CAP_SECONDS", "3000", "FAPIAO_BROKER__VISIBILITY_TIMEOUT_SECONDS"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    clean_env.setenv("FAPIAO_ENVIRONMENT", "development")
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        Settings.load()
    assert named in str(info.value)


@pytest.mark.parametrize("environment", ["production", "test"])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FAPIAO_API_KEYS", f"{KEY_1},change-me-please"),
        ("FAPIAO_API_KEYS", "t1ny"),
        ("FAPIAO_CALLBACK_SECRET", "<callback secret>"),
        ("FAPIAO_CALLBACK_SECRET", "secret"),
    ],
)
def test_placeholder_secrets_are_refused_outside_development(
    clean_env: pytest.MonkeyPatch, environment: str, name: str, value: str
) -> None:
    clean_env.setenv("FAPIAO_ENVIRONMENT", environment)
    clean_env.setenv("FAPIAO_API_KEYS", KEY_1)
    clean_env.setenv("FAPIAO_CALLBACK_SECRET", CALLBACK)
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        Settings.load()
    message = str(info.value)
    assert name in message
    assert value.split(",")[-1] not in message  # the refused secret is never echoed
    clean_env.setenv("FAPIAO_ENVIRONMENT", "development")
    assert Settings.load().environment == "development"


def test_test_environment_does_not_require_keys(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FAPIAO_ENVIRONMENT", "test")
    s = Settings.load()
    assert s.api_keys == [] and s.callback_secret is None


def test_production_api_requires_a_callback_secret(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FAPIAO_API_KEYS", KEY_1)
    with pytest.raises(SettingsError, match="FAPIAO_CALLBACK_SECRET") as info:
        Settings.load(role="api")
    assert "FAPIAO_API_KEYS" not in str(info.value)
    assert KEY_1 not in str(info.value)


def test_keyword_overrides_win_over_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FAPIAO_ENVIRONMENT", "production")
    s = Settings.load(environment="development", database_url="sqlite:///:memory:")
    assert (s.environment, s.database_url) == ("development", "sqlite:///:memory:")


def test_secrets_are_never_printed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FAPIAO_API_KEYS", KEY_1)
    clean_env.setenv("FAPIAO_CALLBACK_SECRET", CALLBACK)
    s = Settings.load()
    for text in (repr(s), str(s), s.model_dump_json()):
        assert KEY_1 not in text
        assert CALLBACK not in text


def test_load_tenants_delegates_to_the_tenants_file(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "tenants.example.toml"
    dev = Settings.load(environment="development", tenants_file=example)
    assert dev.load_tenants().names == ["demo", "shop"]
    prod = Settings.load(tenants_file=example, api_keys=[KEY_1], callback_secret=CALLBACK)
    with pytest.raises(ValueError, match="app_secret"):
        prod.load_tenants()
    missing = Settings.load(environment="development", tenants_file=tmp_path / "none.toml")
    with pytest.raises(ValueError, match="not found"):
        missing.load_tenants()


def test_helpers() -> None:
    assert env_name("push", "max_attempts") == "FAPIAO_PUSH__MAX_ATTEMPTS"
    assert env_name("poll", "schedule_seconds", 2) == "FAPIAO_POLL__SCHEDULE_SECONDS"
    assert env_name("retry", "reconcile", "max_attempts") == (
        "FAPIAO_RETRY__RECONCILE__MAX_ATTEMPTS"
    )


def test_every_retry_row_defaults_to_the_documented_table() -> None:
    s = Settings.load(environment="development")
    rows = {kind: s.retry_row(kind) for kind in RETRY_DEFAULTS}
    assert rows == {
        "push": RetryRow(8, 2.0, 2.0, 0.0, 300.0, True),
        "withdraw": RetryRow(0, 30.0, 1.0, 0.0, 30.0, False),
        "webhook": RetryRow(12, 5.0, 2.0, 0.0, 600.0, True),
        "reconcile": RetryRow(30, 2.0, 1.0, 2.0, 60.0, False),
        "task": RetryRow(6, 2.0, 2.0, 0.0, 30.0, True),
        "publish": RetryRow(3, 0.0, 1.0, 0.2, 0.5, False),
    }
    # The older names' defaults are the table's.
    assert (s.push.max_attempts, s.push.backoff_base_seconds, s.push.backoff_cap_seconds) == (
        8, 2.0, 300.0,
    )  # fmt: skip
    assert (s.erp_webhook.max_attempts, s.erp_webhook.backoff_cap_seconds) == (12, 600.0)


def test_retry_rows_come_from_retry_variables_and_the_older_names(
    clean_env: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "FAPIAO_ENVIRONMENT": "development",
        "FAPIAO_RETRY__RECONCILE__MAX_ATTEMPTS": "5",
        "FAPIAO_RETRY__RECONCILE__STEP_SECONDS": "3",
        "FAPIAO_RETRY__TASK__JITTER": "false",
        "FAPIAO_RETRY__WITHDRAW__BASE_SECONDS": "10",
        "FAPIAO_PUSH__MAX_ATTEMPTS": "4",
        "FAPIAO_RETRY__PUSH__FACTOR": "3",
        "FAPIAO_ERP_WEBHOOK__BACKOFF_CAP_SECONDS": "2",
    }.items():
        clean_env.setenv(name, value)
    s = Settings.load()
    assert s.retry_row("reconcile") == RetryRow(5, 2.0, 1.0, 3.0, 60.0, False)
    assert s.retry_row("task").jitter is False
    # An unset base never exceeds the cap it meets.
    assert s.retry_row("withdraw") == RetryRow(0, 10.0, 1.0, 0.0, 30.0, False)
    assert s.retry_row("push") == RetryRow(4, 2.0, 3.0, 0.0, 300.0, True)
    assert s.retry_row("webhook") == RetryRow(12, 2.0, 2.0, 0.0, 2.0, True)


def test_an_older_name_and_its_retry_twin_must_agree(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FAPIAO_ENVIRONMENT", "development")
    clean_env.setenv("FAPIAO_PUSH__MAX_ATTEMPTS", "4")
    clean_env.setenv("FAPIAO_RETRY__PUSH__MAX_ATTEMPTS", "4")
    assert Settings.load().retry_row("push").max_attempts == 4
    clean_env.setenv("FAPIAO_RETRY__PUSH__MAX_ATTEMPTS", "5")
    with pytest.raises(SettingsError) as info:
        Settings.load()
    assert "FAPIAO_RETRY__PUSH__MAX_ATTEMPTS" in str(info.value)
    assert "FAPIAO_PUSH__MAX_ATTEMPTS" in str(info.value)


def test_nothing_is_built_at_import_time() -> None:
    assert not any(isinstance(v, Settings) for v in vars(settings_module).values())
