"""``fapiao simulator --tenant-path``: a tenant served under another path than its base URL's.

Over real HTTP (``python -m simulator`` in a subprocess): the tenant answers its token call under
the overridden path and no longer under the tenants file's one. The refusals (unknown name, a
bare path with several tenants, a path without ``/``, a name given twice) go through the command
line without starting a server.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from producers.cli import app as fapiao_app
from simulator.cli import TenantPathError, override_tenant_paths
from simulator.cli import simulator as simulator_command
from simulator.tenancy import SimTenant
from simulator.testing import sim_tenant_specs, write_tenants_toml


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _simulator(tenants: Path, port: int, *extra: str) -> Iterator[str]:
    origin = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "simulator",
        "--port",
        str(port),
        "--tenants-file",
        str(tenants),
        "--log-level",
        "warning",
        *extra,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(origin + "/_sim/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "simulator did not start"
            time.sleep(0.05)
        yield origin
    finally:
        process.terminate()
        process.wait(timeout=15)
        if process.stdout is not None:
            process.stdout.close()


def _app_token(origin: str, path: str, spec: Mapping[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{origin}{path}/api/getAppToken.do",
        json={
            "appId": spec["app_id"],
            "appSecret": spec["app_secret"],
            "accountId": spec["account_id"],
        },
        timeout=5,
    )


def _answers(origin: str, path: str, spec: Mapping[str, Any]) -> bool:
    response = _app_token(origin, path, spec)
    return response.status_code == 200 and response.json().get("state") == "success"


def test_bare_tenant_path_moves_the_only_tenant(tmp_path: Path) -> None:
    port = _free_port()
    demo = sim_tenant_specs()[0]
    tenants = write_tenants_toml(tmp_path / "tenants.toml", f"http://127.0.0.1:{port}", [demo])
    with _simulator(tenants, port, "--tenant-path", "/moved/kingdee/") as origin:
        assert _answers(origin, "/moved/kingdee", demo)
        old = _app_token(origin, "/demo", demo)
        assert old.status_code == 404
        listed = httpx.get(origin + "/_sim/tenants", timeout=5).json()
        assert [t["path"] for t in _tenant_rows(listed)] == ["/moved/kingdee"]


def test_named_tenant_path_moves_only_that_tenant(tmp_path: Path) -> None:
    port = _free_port()
    demo, shop = sim_tenant_specs()
    origin = f"http://127.0.0.1:{port}"
    tenants = write_tenants_toml(tmp_path / "tenants.toml", origin, [demo, shop])
    with _simulator(tenants, port, "--tenant-path", "shop=/shop2") as origin:
        assert _answers(origin, "/shop2", shop)
        assert _app_token(origin, "/shop", shop).status_code == 404
        assert _answers(origin, "/demo", demo)  # untouched
        assert not _answers(origin, "/shop2", demo)  # demo is not served at shop's new path


def _tenant_rows(listed: Any) -> list[dict[str, Any]]:
    rows = listed["tenants"] if isinstance(listed, dict) else listed
    assert isinstance(rows, list)
    return rows


def _cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(simulator_command)
    return app


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tenant-path", "/demo2"], "ambiguous"),
        (["--tenant-path", "nobody=/x"], "no tenant named 'nobody'"),
        (["--tenant-path", "demo=x"], "must start with '/'"),
        (["--tenant-path", "demo=/a", "--tenant-path", "demo=/b"], "given a path twice"),
    ],
)
def test_cli_refuses_bad_tenant_paths(tmp_path: Path, options: list[str], message: str) -> None:
    tenants = write_tenants_toml(tmp_path / "tenants.toml", "http://127.0.0.1:8765")
    result = CliRunner().invoke(
        _cli_app(), ["--tenants-file", str(tenants), *options], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, result.output
    assert "--tenant-path" in result.output
    assert message in " ".join(result.output.split())


def test_cli_refuses_two_tenants_with_one_account_on_one_path(tmp_path: Path) -> None:
    demo, shop = sim_tenant_specs()
    shop = {**shop, "account_id": demo["account_id"]}
    tenants = write_tenants_toml(tmp_path / "tenants.toml", "http://127.0.0.1:8765", [demo, shop])
    result = CliRunner().invoke(
        _cli_app(),
        ["--tenants-file", str(tenants), "--tenant-path", "shop=/demo"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    assert "share accountId" in " ".join(result.output.split())


def test_override_keeps_scheme_and_host() -> None:
    tenant = SimTenant(
        name="demo",
        base_url="https://sim.example:8443/demo/",
        app_id="a",
        app_secret="s",
        account_id="1",
        user="u",
        usertype="Mobile",
        business_system_codes=frozenset({"X"}),
        seller_tax_ids=frozenset({"T"}),
        auto_invoice=True,
    )
    (moved,) = override_tenant_paths([tenant], ["/"])
    assert moved.base_url == "https://sim.example:8443" and moved.path == ""
    (same,) = override_tenant_paths([tenant], [])
    assert same is tenant
    with pytest.raises(TenantPathError):
        override_tenant_paths([tenant], ["demo=/a b"])


def test_tenant_path_is_in_the_command_help() -> None:
    result = CliRunner().invoke(fapiao_app, ["simulator", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "--tenant-path" in flat
    assert "NAME=/path" in flat
