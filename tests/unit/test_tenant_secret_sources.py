"""Tenant secrets from files (docker secrets) or environment variables instead of plaintext."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.tenants import TenantsFileError, load_tenants
from tests.unit.test_tenants import REAL_SECRET, tenant_block, write

WEBHOOK_SECRET = "wh-Hq7Lm2Xc9Rt4Vb1N"


def secret_file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / "secrets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


def test_app_secret_from_a_file_without_its_trailing_newline(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "acme_app_secret", REAL_SECRET.encode() + b"\n")
    tenants = load_tenants(
        write(tmp_path, tenant_block(app_secret=None, app_secret_file=str(path))), "production"
    )
    assert tenants.tenants[0].app_secret.get_secret_value() == REAL_SECRET


def test_a_relative_secret_file_is_relative_to_the_tenants_file(tmp_path: Path) -> None:
    secret_file(tmp_path, "acme_app_secret", REAL_SECRET.encode() + b"\r\n")
    block = tenant_block(app_secret=None, app_secret_file="secrets/acme_app_secret")
    tenants = load_tenants(write(tmp_path, block), "production")
    assert tenants.tenants[0].app_secret.get_secret_value() == REAL_SECRET


def test_secrets_from_environment_variables(tmp_path: Path) -> None:
    block = tenant_block(
        app_secret=None,
        app_secret_env="ACME_APP_SECRET",
        erp_webhook_url="https://erp.example.com/hook",
        erp_webhook_secret_env="ACME_WEBHOOK_SECRET",
    )
    environ = {"ACME_APP_SECRET": REAL_SECRET, "ACME_WEBHOOK_SECRET": WEBHOOK_SECRET}
    tenant = load_tenants(write(tmp_path, block), "production", environ=environ).tenants[0]
    assert tenant.app_secret.get_secret_value() == REAL_SECRET
    assert tenant.erp_webhook_secret is not None
    assert tenant.erp_webhook_secret.get_secret_value() == WEBHOOK_SECRET


def test_the_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_APP_SECRET_FOR_TEST", REAL_SECRET)
    block = tenant_block(app_secret=None, app_secret_env="ACME_APP_SECRET_FOR_TEST")
    tenant = load_tenants(write(tmp_path, block), "production").tenants[0]
    assert tenant.app_secret.get_secret_value() == REAL_SECRET


def test_webhook_secret_from_a_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "hook", WEBHOOK_SECRET.encode())
    block = tenant_block(
        erp_webhook_url="https://erp.example.com/hook", erp_webhook_secret_file=str(path)
    )
    tenant = load_tenants(write(tmp_path, block), "production").tenants[0]
    assert tenant.erp_webhook_secret is not None
    assert tenant.erp_webhook_secret.get_secret_value() == WEBHOOK_SECRET


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"\xff\xfe not utf-8", "is not UTF-8"),
    ],
)
def test_a_bad_secret_file_names_tenant_key_and_path(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "secrets" / "acme_app_secret"
    if content is not None:
        secret_file(tmp_path, "acme_app_secret", content)
    block = tenant_block(app_secret=None, app_secret_file=str(path))
    with pytest.raises(TenantsFileError) as info:
        load_tenants(write(tmp_path, block), "development")
    message = str(info.value)
    assert "tenant 'acme'" in message
    assert "'app_secret_file'" in message
    assert str(path) in message
    assert expected in message


def test_an_unreadable_secret_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.mkdir()  # a directory cannot be read as a file, not even by root
    block = tenant_block(app_secret=None, app_secret_file=str(path))
    with pytest.raises(TenantsFileError, match="cannot read secret file") as info:
        load_tenants(write(tmp_path, block), "production")
    assert str(path) in str(info.value)
    assert "tenant 'acme'" in str(info.value)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, "ACME_APP_SECRET is not set"), ({"ACME_APP_SECRET": ""}, "ACME_APP_SECRET is empty")],
)
def test_an_unset_or_empty_variable_names_tenant_key_and_variable(
    tmp_path: Path, environ: dict[str, str], expected: str
) -> None:
    block = tenant_block(app_secret=None, app_secret_env="ACME_APP_SECRET")
    with pytest.raises(TenantsFileError) as info:
        load_tenants(write(tmp_path, block), "production", environ=environ)
    message = str(info.value)
    assert "tenant 'acme'" in message and "'app_secret_env'" in message
    assert expected in message


@pytest.mark.parametrize(
    "extra",
    [
        {"app_secret_env": "ACME_APP_SECRET"},
        {"app_secret_file": "/run/secrets/acme_app_secret"},
    ],
)
def test_two_forms_of_one_secret_are_refused_naming_both(
    tmp_path: Path, extra: dict[str, str]
) -> None:
    block = tenant_block(**extra)  # app_secret (plaintext) is in the block as well
    with pytest.raises(TenantsFileError) as info:
        load_tenants(write(tmp_path, block), "development", environ={"ACME_APP_SECRET": "x" * 9})
    message = str(info.value)
    (form,) = extra
    assert f"'app_secret' and '{form}'" in message
    assert "tenant 'acme'" in message
    assert REAL_SECRET not in message


def test_all_three_forms_are_refused(tmp_path: Path) -> None:
    block = tenant_block(app_secret_file="s", app_secret_env="E")
    with pytest.raises(TenantsFileError, match="'app_secret' and 'app_secret_file' and"):
        load_tenants(write(tmp_path, block), "development")


def test_no_form_at_all_is_still_a_missing_field(tmp_path: Path) -> None:
    with pytest.raises(TenantsFileError, match="field 'app_secret'"):
        load_tenants(write(tmp_path, tenant_block(app_secret=None)), "development")


@pytest.mark.parametrize("environment", ["production", "test"])
def test_placeholder_refusal_applies_to_the_resolved_value(
    tmp_path: Path, environment: str
) -> None:
    path = secret_file(tmp_path, "acme_app_secret", b"change-me-later\n")
    block = tenant_block(app_secret=None, app_secret_file=str(path))
    with pytest.raises(TenantsFileError) as info:
        load_tenants(write(tmp_path, block), environment)
    message = str(info.value)
    assert "placeholder" in message and "'app_secret'" in message
    assert str(path) in message  # says where the refused value came from …
    assert "change-me-later" not in message  # … never the value
    # The same file is accepted in development (the simulator's placeholders).
    dev = load_tenants(write(tmp_path, block), "development")
    assert dev.tenants[0].app_secret.get_secret_value() == "change-me-later"


def test_placeholder_from_a_variable_is_refused_in_production(tmp_path: Path) -> None:
    block = tenant_block(app_secret=None, app_secret_env="ACME_APP_SECRET")
    with pytest.raises(TenantsFileError, match="app_secret_env ACME_APP_SECRET"):
        load_tenants(write(tmp_path, block), "production", environ={"ACME_APP_SECRET": "short"})


def test_resolved_secrets_are_never_printed(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "acme_app_secret", REAL_SECRET.encode())
    block = tenant_block(app_secret=None, app_secret_file=str(path))
    tenants = load_tenants(write(tmp_path, block), "production")
    for text in (repr(tenants), str(tenants), tenants.model_dump_json()):
        assert REAL_SECRET not in text
    assert str(path) not in repr(tenants)  # the source is not kept either


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    first = tenant_block(app_secret=None, app_secret_env="ACME_APP_SECRET")
    second = tenant_block(
        name="beta",
        app_secret=None,
        app_secret_file=str(tmp_path / "missing"),
        seller_tax_ids=["91310000BETA000001"],
    )
    with pytest.raises(TenantsFileError) as info:
        load_tenants(write(tmp_path, first, second), "production", environ={})
    message = str(info.value)
    assert "tenant 'acme' (#1), field 'app_secret_env'" in message
    assert "tenant 'beta' (#2), field 'app_secret_file'" in message
