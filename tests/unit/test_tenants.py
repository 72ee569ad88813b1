"""The tenants TOML file: validation, lookups, placeholder secrets, secrets never printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.tenants import (
    TenantConfig,
    TenantsFile,
    TenantsFileError,
    is_placeholder_secret,
    load_tenants,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "tenants.example.toml"
REAL_SECRET = "q8Zr3xNf0pL2vW7kT4"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)  # TOML basic strings and arrays match JSON


def tenant_block(**overrides: Any) -> str:
    fields: dict[str, Any] = {
        "name": "acme",
        "base_url": "https://cosmic-sandbox.piaozone.com/acme",
        "app_id": "acme-app",
        "app_secret": REAL_SECRET,
        "account_id": "1900000000000000009",
        "user": "integration",
        "usertype": "UserName",
        "business_system_code": "ACMEERP",
        "seller_tax_ids": ["91310000ACME000001"],
    }
    fields.update(overrides)
    lines = ["[[tenants]]"]
    lines += [f"{key} = {_value(value)}" for key, value in fields.items() if value is not None]
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, *blocks: str) -> Path:
    path = tmp_path / "tenants.toml"
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


def test_example_file_loads_in_development() -> None:
    tenants = load_tenants(EXAMPLE, "development")
    assert tenants.names == ["demo", "shop"]
    demo, shop = tenants.tenants
    assert demo.callback_style == "per_bill"  # 3std1… code
    assert shop.callback_style == "per_invoice"
    assert demo.base == "http://127.0.0.1:8765/demo"
    assert demo.tenant_path == "/demo"
    assert demo.url_for("/api/login.do") == "http://127.0.0.1:8765/demo/api/login.do"
    assert len(demo.seller_tax_ids) + len(shop.seller_tax_ids) >= 4
    lookup = tenants.tenant_for_seller(shop.seller_tax_ids[1].lower())
    assert lookup is not None and lookup.name == "shop"
    assert tenants.by_name("demo") is demo
    assert tenants.by_name("nobody") is None
    assert tenants.tenant_for_seller("91000000000000000X") is None


@pytest.mark.parametrize("environment", ["production", "test"])
def test_example_secrets_are_refused_outside_development(environment: str) -> None:
    with pytest.raises(TenantsFileError) as info:
        load_tenants(EXAMPLE, environment)
    message = str(info.value)
    assert str(EXAMPLE) in message
    assert "tenant 'demo'" in message and "tenant 'shop'" in message
    assert "'app_secret'" in message
    assert "change-me" not in message  # the refused value itself is never echoed


def test_real_looking_secrets_load_in_production(tmp_path: Path) -> None:
    path = write(tmp_path, tenant_block(erp_webhook_url="https://erp.example.cn/hook"))
    tenants = load_tenants(path, "production")
    [acme] = tenants.tenants
    assert acme.app_secret.get_secret_value() == REAL_SECRET
    assert acme.auto_invoice is True
    assert acme.paused is False
    assert acme.rate_limit_per_second == 5.0
    assert str(acme.erp_webhook_url) == "https://erp.example.cn/hook"


def test_placeholder_webhook_secret_is_refused_in_production(tmp_path: Path) -> None:
    path = write(tmp_path, tenant_block(erp_webhook_secret="<webhook secret>"))
    with pytest.raises(TenantsFileError, match="'erp_webhook_secret'"):
        load_tenants(path, "production")
    assert load_tenants(path, "development").tenants[0].erp_webhook_secret is not None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "short",
        "1234567",
        "change-me-before-prod",
        "ChangeMe2025!!",
        "xxxxxxxxxxxx",
        "aaaaaaaaaaaaaaaa",
        "<your app secret>",
        "PLACEHOLDER-VALUE",
        "password",
        "my-example-secret",
    ],
)
def test_placeholder_secrets(value: str) -> None:
    assert is_placeholder_secret(value)


@pytest.mark.parametrize("value", [REAL_SECRET, "3f9c1e7a5b2d4f60", "Kd8#mZ2q!vR5tY"])
def test_real_secrets_are_not_placeholders(value: str) -> None:
    assert not is_placeholder_secret(value)


def test_a_seller_tax_id_belongs_to_one_tenant_only(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        tenant_block(),
        tenant_block(name="other", seller_tax_ids=["91310000acme000001"]),
    )
    with pytest.raises(TenantsFileError) as info:
        load_tenants(path, "production")
    message = str(info.value)
    assert "91310000ACME000001" in message
    assert "'acme'" in message and "'other'" in message
    assert str(path) in message


def test_tenant_names_are_unique(tmp_path: Path) -> None:
    path = write(tmp_path, tenant_block(), tenant_block(seller_tax_ids=["91310000ACME000002"]))
    with pytest.raises(TenantsFileError, match="'acme' is used twice"):
        load_tenants(path, "production")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"base_url": "not a url"}, "base_url"),
        ({"base_url": "ftp://host/acme"}, "base_url"),
        ({"base_url": "https://host/acme?access_token=x"}, "base_url"),
        ({"erp_webhook_url": "mailto:ap@example.com"}, "erp_webhook_url"),
        ({"seller_tax_ids": []}, "seller_tax_ids"),
        ({"seller_tax_ids": ["123"]}, "seller_tax_ids"),
        ({"seller_tax_ids": ["91310000ACME000001", "91310000acme000001"]}, "seller_tax_ids"),
        ({"usertype": "Email"}, "usertype"),
        ({"rate_limit_per_second": 0}, "rate_limit_per_second"),
        ({"name": "Bad Name"}, "name"),
        ({"app_id": "  "}, "app_id"),
        ({"business_system_code": None}, "business_system_code"),
        ({"app_secert": "typo-of-the-key"}, "app_secert"),
    ],
)
def test_invalid_tenant_errors_name_file_tenant_and_field(
    tmp_path: Path, overrides: dict[str, Any], field: str
) -> None:
    path = write(tmp_path, tenant_block(**overrides))
    with pytest.raises(TenantsFileError) as info:
        load_tenants(path, "development")
    message = str(info.value)
    assert str(path) in message
    assert "tenant " in message
    assert f"field '{field}'" in message


def test_unreadable_files_are_reported_with_their_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(TenantsFileError, match="not found") as info:
        load_tenants(missing, "development")
    assert str(missing) in str(info.value)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[tenants]\nname = ", encoding="utf-8")
    with pytest.raises(TenantsFileError, match="not valid TOML"):
        load_tenants(broken, "development")
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(TenantsFileError, match=r"\[\[tenants\]\]"):
        load_tenants(empty, "development")


def test_secrets_are_never_printed(tmp_path: Path) -> None:
    path = write(tmp_path, tenant_block(erp_webhook_secret="hook-" + REAL_SECRET))
    tenants = load_tenants(path, "production")
    [acme] = tenants.tenants
    for text in (
        repr(acme),
        str(acme),
        acme.model_dump_json(),
        repr(tenants),
        tenants.model_dump_json(),
        json.dumps(acme.model_dump(mode="json")),
    ):
        assert REAL_SECRET not in text
    assert acme.erp_webhook_secret is not None
    assert acme.erp_webhook_secret.get_secret_value() == "hook-" + REAL_SECRET


def test_models_are_usable_without_a_file() -> None:
    config = TenantConfig(
        name="x",
        base_url="http://127.0.0.1:8765/",
        app_id="a",
        app_secret="s",
        account_id="1",
        user="u",
        business_system_code="B",
        seller_tax_ids=[" 91310000acme000003 "],
    )
    assert config.seller_tax_ids == ["91310000ACME000003"]
    assert config.usertype == "Mobile"
    assert config.tenant_path == ""
    assert config.base == "http://127.0.0.1:8765"
    with pytest.raises(ValueError):
        TenantsFile(tenants=[])
