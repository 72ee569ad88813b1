"""``[tenants.cloud]``: what is known of a tenant's contract dialect, checked against the
registry of ``schemas.cloud_contract.DIALECT_SWITCHES``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas.cloud_contract import DIALECT_SWITCHES, DialectError
from schemas.tenants import TenantsFileError, load_tenants
from tests.unit.test_tenants import EXAMPLE, tenant_block, write


def cloud_table(**switches: str) -> str:
    return "[tenants.cloud]\n" + "".join(f'{k} = "{v}"\n' for k, v in switches.items())


def test_declared_switches_are_exposed_and_the_rest_is_unknown(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        tenant_block() + cloud_table(unknown_bill="empty_list", withdraw_refusal="envelope"),
        tenant_block(name="other", seller_tax_ids=["91310000ACME000002"]),
    )
    acme, other = load_tenants(path, "production").tenants
    assert acme.cloud == {"unknown_bill": "empty_list", "withdraw_refusal": "envelope"}
    assert acme.declared("unknown_bill") == "empty_list"
    assert acme.declares("withdraw_refusal", "envelope")
    assert acme.declared("duplicate_bill") is None  # not declared: unknown
    assert not acme.declares("duplicate_bill", "refused")
    assert other.cloud == {}
    assert all(other.declared(name) is None for name in DIALECT_SWITCHES)
    with pytest.raises(DialectError):
        acme.declared("no_such_switch")


@pytest.mark.parametrize("name", list(DIALECT_SWITCHES))
def test_every_value_of_every_switch_can_be_declared(tmp_path: Path, name: str) -> None:
    for value in DIALECT_SWITCHES[name]:
        path = write(tmp_path, tenant_block() + cloud_table(**{name: value}))
        (tenant,) = load_tenants(path, "production").tenants
        assert tenant.declared(name) == value


def test_an_unknown_switch_names_tenant_key_and_choices(tmp_path: Path) -> None:
    path = write(tmp_path, tenant_block() + cloud_table(unknwon_bill="error"))
    with pytest.raises(TenantsFileError) as err:
        load_tenants(path, "production")
    text = str(err.value)
    assert "'acme'" in text and "cloud" in text and "unknwon_bill" in text
    assert "unknown_bill" in text and "withdraw_refusal" in text  # the choices


def test_an_unknown_value_names_tenant_key_and_choices(tmp_path: Path) -> None:
    path = write(tmp_path, tenant_block() + cloud_table(unknown_bill="empty"))
    with pytest.raises(TenantsFileError) as err:
        load_tenants(path, "production")
    text = str(err.value)
    assert "'acme'" in text and "unknown_bill" in text and "'empty'" in text
    assert re.search(r"error, empty_list, empty_data", text)


def test_the_example_documents_every_switch_and_value() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for name, values in DIALECT_SWITCHES.items():
        line = next(ln for ln in text.splitlines() if ln.startswith(f"# {name} = "))
        assert all(value in line for value in values), line
